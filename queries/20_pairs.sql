-- 20_pairs: reads `rpc_spans`; produces `pairs`, one row per CLIENT span matched with its SERVER span.
-- Why: both clock samples (t1..t4) and attributions need the two ends of a call side by side.
-- A SERVER span belongs to the CLIENT span that has the same span id (Zipkin's shared spans: client and server
-- report one id, and the server's parent is the client's parent), else to the CLIENT span that is its parent
-- (OpenTelemetry). `pairs_matched` finds both kinds in one hash join: each server probes the clients twice, by its
-- own id and by its parent's, so the clients (millions of rows) are hashed once. A parent match then loses to a
-- shared-id match of the same server (a nested client under Zipkin): `loses_to_shared_id`, the one place that
-- rule is written. On OpenTelemetry data nothing matches by shared id, and a join against an empty side reads
-- nothing, so that check costs a scan of the matches.
-- t1 = client start, t2 = server start, t3 = server end, t4 = client end, each in its own host's clock (ns).
-- server_denied / client_denied: that end's span is a denial (span_facts.sql's `denied`), for 48_denied_calls;
-- shared_id: matched by Zipkin's shared span id.
CREATE OR REPLACE VIEW pairs_matched AS
WITH servers AS (
    SELECT trace_id, span_id, parent_span_id, domain, start_ns, end_ns, denied AS server_denied
    FROM rpc_spans WHERE kind = 'SERVER'
),
probes AS (  -- two probe rows per server from one read of the server spans: by its own id (a shared span) and by
              -- its parent's (a root server's NULL parent matches nothing). A cross join with two rows is cheaper than
              -- an unnest of a list of structs (0.17-0.19 s against 0.19-0.26 s at 1M spans) or a second read.
    SELECT s.*, k.shared_id, CASE WHEN k.shared_id THEN s.span_id ELSE s.parent_span_id END AS client_key
    FROM servers AS s CROSS JOIN (VALUES (true), (false)) AS k(shared_id)
)
SELECT
    c.trace_id,
    c.span_id AS client_span_id,
    p.span_id AS server_span_id,
    c.domain AS client_domain,
    p.domain AS server_domain,
    c.start_ns AS t1,
    p.start_ns AS t2,
    p.end_ns AS t3,
    c.end_ns AS t4,
    c.jit_clock_offset_s AS ntp_offset_s,
    c.jit_clock_delay_s AS ntp_delay_s,
    p.server_denied,
    c.denied AS client_denied,
    p.shared_id
FROM probes AS p
JOIN rpc_spans AS c ON c.trace_id = p.trace_id AND c.span_id = p.client_key
WHERE c.kind = 'CLIENT';

CREATE OR REPLACE MACRO loses_to_shared_id(matches, trace, server_span, shared) AS
    NOT shared AND EXISTS (SELECT 1 FROM query_table(matches) AS s
                           WHERE s.shared_id AND s.trace_id = trace AND s.server_span_id = server_span);

-- The run's copy, read by two steps: a TEMP table (faster than the database file while it fits in memory).
CREATE OR REPLACE TEMP TABLE pairs AS FROM pairs_matched;
DELETE FROM pairs AS p WHERE loses_to_shared_id('pairs', p.trace_id, p.server_span_id, p.shared_id);

-- What jitrace.duckdb keeps for notebooks once the TEMP table is gone (session.keep_as_views): the same pairs,
-- computed from the spans when read. (When `pairs` was made a plain table, for an input too big for memory, the
-- table is kept and this does nothing.)
CREATE VIEW IF NOT EXISTS main.pairs AS
FROM pairs_matched AS p WHERE NOT loses_to_shared_id('pairs_matched', p.trace_id, p.server_span_id, p.shared_id);
