-- pairs: one row per CLIENT span matched with its SERVER span.
-- Why: both clock samples (t1..t4) and attributions need the two ends of a call side by side.
-- A SERVER span belongs to the CLIENT span that has the same span id (Zipkin's shared spans: client and server
-- report one id, and the server's parent is the client's parent), else to the CLIENT span that is its parent
-- (OpenTelemetry). `pairs_matched` finds both kinds in one hash join: each server probes the clients twice, by its
-- own id and by its parent's, so the clients (millions of rows) are hashed once. A parent match then loses to a
-- shared-id match of the same server (a nested client under Zipkin). On OpenTelemetry data nothing matches by
-- shared id, and an anti join against an empty side reads nothing, so that check costs a scan of the matches.
-- This query defines pairs (the view jitrace.duckdb keeps); the run makes the table without reading the matches
-- twice (analyzer/steps/pairs.py, steps.toml: python).
-- t1 = client start, t2 = server start, t3 = server end, t4 = client end, each in its own host's clock (ns).
-- server_denied / client_denied: that end's span is a denial (span_facts.sql's `denied`), for denied_calls;
-- shared_id: matched by Zipkin's shared span id.
WITH matched AS MATERIALIZED (FROM pairs_matched)
FROM matched AS m
ANTI JOIN (SELECT trace_id, server_span_id FROM matched WHERE shared_id) AS s
    ON NOT m.shared_id AND s.trace_id = m.trace_id AND s.server_span_id = m.server_span_id
