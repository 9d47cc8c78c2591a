-- 10_rpc_spans: reads `spans` (the view of analyzer/spans_view.py); produces `rpc_spans`.
-- Why: every later step reads the same typed facts of the gRPC spans. Those columns come from queries/span_facts.sql
-- (jit.token.ttl_s -> jit_token_ttl_s, the clock domain, the stream check): `jitrace collect` writes them into its
-- Parquet, so this step reads them without parsing JSON; other inputs get them from the view. Only CLIENT/SERVER
-- spans and the `jit.issue` spans are kept, and none of the JSON: nothing later reads the rest.
-- A TEMP table: the analysis reads it at memory speed; `jitrace analyze` leaves a view of the same name in
-- jitrace.duckdb (session.keep_as_views), so notebooks still see rpc_spans.
CREATE OR REPLACE TEMP TABLE rpc_spans AS
SELECT * EXCLUDE (status_code, status_message, resource, attributes, events, links, scope, source)
FROM spans
WHERE kind IN ('CLIENT', 'SERVER') OR name = 'jit.issue';
