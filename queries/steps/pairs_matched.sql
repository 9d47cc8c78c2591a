-- pairs_matched: every CLIENT span with each SERVER span that may be its other end, by parent or by shared id.
-- Why: `pairs` keeps one match per server; this is the join both ways of matching share (see pairs.sql).
WITH servers AS (
    SELECT trace_id, span_id, parent_span_id, domain, start_ns, end_ns, denied AS server_denied
    FROM rpc_spans WHERE kind = 'SERVER'
),
probes AS (  -- two probe rows per server from one read of the server spans: by its own id (a shared span) and by
              -- its parent's (a root server's NULL parent matches nothing). A cross join with two rows is cheaper than
              -- an unnest of a list of structs or a second read.
    SELECT s.*, k.shared_id, CASE WHEN k.shared_id THEN s.span_id ELSE s.parent_span_id END AS client_key
    FROM servers AS s CROSS JOIN (VALUES (true), (false)) AS k (shared_id)
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
INNER JOIN rpc_spans AS c ON c.trace_id = p.trace_id AND c.span_id = p.client_key
WHERE c.kind = 'CLIENT'
