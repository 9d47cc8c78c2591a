-- rpc_spans (ClickHouse): reads `spans` (the otel_traces view of span_facts.sql); the CLIENT/SERVER spans and the
-- `jit.issue` spans, as queries/steps/rpc_spans.sql: with their typed facts and none of the maps. A view: each
-- later step reads only the columns it needs (stored facts, or the map lookups).
CREATE VIEW rpc_spans AS
SELECT * EXCEPT (status_code)
FROM spans
WHERE kind IN ('CLIENT', 'SERVER') OR name = 'jit.issue';
