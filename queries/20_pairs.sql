-- 20_pairs: reads `rpc_spans`; produces `pairs`, one row per CLIENT span matched with its SERVER span.
-- Why: both clock samples (t1..t4) and attributions need the two ends of a call side by side.
-- A SERVER span belongs to the CLIENT span that has the same span id (Zipkin's shared spans: client and server
-- report one id, and the server's parent is the client's parent), else to the CLIENT span that is its parent
-- (OpenTelemetry). Two equi-joins (hash joins); the shared-id one is empty on OpenTelemetry data. The two sides are
-- NOT MATERIALIZED: streaming them from rpc_spans twice is faster than storing 2 x millions of rows to read again.
-- t1 = client start, t2 = server start, t3 = server end, t4 = client end, each in its own host's clock (ns).
-- A TEMP table (read by two steps), kept in jitrace.duckdb as a view (session.keep_as_views).
CREATE OR REPLACE TEMP TABLE pairs AS
WITH servers AS NOT MATERIALIZED (
    SELECT trace_id, span_id, parent_span_id, domain, start_ns, end_ns FROM rpc_spans WHERE kind = 'SERVER'
),
clients AS NOT MATERIALIZED (
    SELECT trace_id, span_id, domain, start_ns, end_ns, jit_clock_offset_s, jit_clock_delay_s
    FROM rpc_spans WHERE kind = 'CLIENT'
),
shared AS (
    SELECT s.*, c.span_id AS client_span_id FROM servers AS s
    JOIN clients AS c ON c.trace_id = s.trace_id AND c.span_id = s.span_id
),
matched AS (
    SELECT * FROM shared
    UNION ALL
    SELECT s.*, s.parent_span_id AS client_span_id FROM servers AS s
    ANTI JOIN shared AS sh ON sh.trace_id = s.trace_id AND sh.span_id = s.span_id
)
SELECT
    c.trace_id,
    c.span_id AS client_span_id,
    m.span_id AS server_span_id,
    c.domain AS client_domain,
    m.domain AS server_domain,
    c.start_ns AS t1,
    m.start_ns AS t2,
    m.end_ns AS t3,
    c.end_ns AS t4,
    c.jit_clock_offset_s AS ntp_offset_s,
    c.jit_clock_delay_s AS ntp_delay_s
FROM matched AS m
JOIN clients AS c ON c.trace_id = m.trace_id AND c.span_id = m.client_span_id;
