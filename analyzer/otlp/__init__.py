"""OTLP -> rows of the normalized schema: the one place spans and logs in OTLP (JSON or protobuf) become rows,
for the receiver (jitrace.collect) and the loaders (jitrace.analyzer.load) alike."""
