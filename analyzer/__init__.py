"""jitrace analyzer: load spans and logs, pair client and server, estimate clocks, attribute every denial."""
