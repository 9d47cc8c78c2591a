-- 45_clock_offsets: reads `clock_edges`, `rpc_spans`; produces `clock_offsets` only if it does not exist yet.
-- Why: `jitrace analyze` builds clock_offsets between steps 40 and 45 in Python (analyzer/offsets.py: weighted
-- least squares over the whole graph of hosts, windows tied to the issuer through their neighbours). Run from
-- DuckDB alone, this step stands in for it with paths of one or two edges from the issuer's host (the
-- reference) inside each window: enough for services around one issuer. Without issuer spans the reference is
-- the host with the most edges (the Python solver uses the consensus of all clocks instead).
-- Columns (DESIGN.md Outputs): domain, reference, window_start, window_end, offset_s (domain minus reference),
-- error_s, samples.
CREATE TABLE IF NOT EXISTS clock_offsets AS
WITH e AS (  -- each edge in both directions: x[b] - x[a] = offset_s
    SELECT client_domain AS a, server_domain AS b, window_start, window_end, offset_s, error_s, samples
    FROM clock_edges
    UNION ALL
    SELECT server_domain, client_domain, window_start, window_end, -offset_s, error_s, samples FROM clock_edges
),
ref AS (
    SELECT coalesce(
        (SELECT domain FROM rpc_spans WHERE name = 'jit.issue' GROUP BY domain ORDER BY count(*) DESC, domain LIMIT 1),
        (SELECT a FROM e GROUP BY a ORDER BY count(*) DESC, a LIMIT 1)) AS reference
),
hop1 AS (
    SELECT e.b AS domain, e.window_start, e.window_end, e.offset_s, e.error_s, e.samples
    FROM e, ref WHERE e.a = ref.reference
),
hop2 AS (
    SELECT e2.b AS domain, e1.window_start, e1.window_end, e1.offset_s + e2.offset_s AS offset_s,
           e1.error_s + e2.error_s AS error_s, e2.samples
    FROM e AS e1 JOIN e AS e2 ON e2.a = e1.b AND e2.window_start = e1.window_start, ref
    WHERE e1.a = ref.reference AND e2.b <> ref.reference
      AND NOT EXISTS (SELECT 1 FROM hop1 WHERE hop1.domain = e2.b AND hop1.window_start = e1.window_start)
),
paths AS (
    SELECT * FROM hop1
    UNION ALL SELECT * FROM hop2
    UNION ALL SELECT DISTINCT ref.reference, window_start, window_end, 0.0, 0.0, 0 FROM hop1, ref
)
SELECT domain, ref.reference, make_timestamp((window_start * 1e6)::BIGINT) AS window_start,
       make_timestamp((window_end * 1e6)::BIGINT) AS window_end,
       sum(offset_s / (error_s + 1e-6) ^ 2) / sum(1 / (error_s + 1e-6) ^ 2) AS offset_s,
       min(error_s) AS error_s, sum(samples)::BIGINT AS samples
FROM paths, ref
GROUP BY ALL;
