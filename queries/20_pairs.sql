-- 20_pairs: reads `rpc_spans`; produces `pairs`, one row per CLIENT span matched with its SERVER span.
-- Why: both clock samples (t1..t4) and attributions need the two ends of a call side by side.
-- A SERVER span belongs to the CLIENT span that is its parent (OpenTelemetry), or that has the same span id
-- (Zipkin's shared spans, where client and server report one id). One equi-join: each server span offers both
-- keys, so the join stays a hash join. t1 = client start, t2 = server start, t3 = server end, t4 = client end,
-- each in its own host's clock (nanoseconds).
CREATE OR REPLACE TABLE pairs AS
WITH servers AS (
    SELECT trace_id, span_id, domain, start_ns, end_ns, unnest([parent_span_id, span_id]) AS client_key
    FROM rpc_spans
    WHERE kind = 'SERVER'
)
SELECT
    c.trace_id,
    c.span_id AS client_span_id,
    s.span_id AS server_span_id,
    c.domain AS client_domain,
    s.domain AS server_domain,
    c.start_ns AS t1,
    s.start_ns AS t2,
    s.end_ns AS t3,
    c.end_ns AS t4,
    c.jit_clock_offset_s AS ntp_offset_s,
    c.jit_clock_delay_s AS ntp_delay_s
FROM servers AS s
JOIN rpc_spans AS c
  ON c.trace_id = s.trace_id AND c.span_id = s.client_key AND c.kind = 'CLIENT';
