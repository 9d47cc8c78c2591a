"""Running the pipeline declared in queries/steps.toml: the DuckDB session and database file, the spans view the
steps read, and the clock solver (the one step in Python)."""
