-- 45_clock_offsets: reads `clock_edges`, `rpc_spans`; produces `clock_offsets` only if it does not exist yet.
-- Why: `jitrace analyze` builds clock_offsets between steps 40 and 45 in Python (analyzer/offsets.py: weighted
-- least squares over the whole graph of hosts). Run from DuckDB alone, this step stands in for it with the direct
-- edges to the issuer's host (the reference): enough for the common star of services around one issuer.
-- Columns (DESIGN.md Outputs): domain, reference, window_start, window_end, offset_s (domain minus reference),
-- error_s, samples.
CREATE TABLE IF NOT EXISTS clock_offsets AS
WITH ref AS (
    SELECT coalesce(
        (SELECT domain FROM rpc_spans WHERE name = 'jit.issue' GROUP BY domain ORDER BY count(*) DESC LIMIT 1),
        'consensus') AS reference
),
direct AS (
    SELECT server_domain AS domain, window_start, window_end, offset_s, error_s, samples
    FROM clock_edges, ref WHERE client_domain = ref.reference
    UNION ALL
    SELECT client_domain, window_start, window_end, -offset_s, error_s, samples
    FROM clock_edges, ref WHERE server_domain = ref.reference
)
SELECT domain, ref.reference, make_timestamp((window_start * 1e6)::BIGINT) AS window_start,
       make_timestamp((window_end * 1e6)::BIGINT) AS window_end,
       sum(offset_s / (error_s + 1e-6) ^ 2) / sum(1 / (error_s + 1e-6) ^ 2) AS offset_s,
       min(error_s) AS error_s, sum(samples)::BIGINT AS samples
FROM direct, ref
GROUP BY ALL;
