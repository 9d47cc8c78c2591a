-- clock_edges (ClickHouse): reads `clock_samples`, `pairs`; the tightest constraints of each pair of clock domains
-- per time bucket, as queries/steps/clock_edges.sql: about 1,000 buckets a run, between
-- 0.1 s and {{jitrace_window_s}} (the analyzer's --window, default 300 s). The analyzer pulls this small table and
-- fits the clock model in Python (analyzer/steps/offsets.py), then pushes `clock_offsets` back.
-- Of equal bounds the earliest instant: argMax over (bound, -time), as arg_max over a struct in DuckDB.
CREATE TABLE clock_edges ENGINE = Memory AS
WITH (
    SELECT least(toFloat64({{jitrace_window_s}}),
                 greatest(0.1, (max(t1) - min(t1)) / 1e9 * uniqExact(client_domain, server_domain) / 1000))
    FROM pairs
    WHERE client_domain != server_domain
) AS bucket_s
SELECT
    domain_a, domain_b,
    toInt64(floor(t_hi_s / bucket_s)) AS bucket,
    max(lo_s) AS lo_s,
    argMax(t_lo_s, (lo_s, -t_lo_s)) AS t_lo_s,
    min(hi_s) AS hi_s,
    argMin(t_hi_s, (hi_s, t_hi_s)) AS t_hi_s,
    count() AS samples
FROM clock_samples
GROUP BY domain_a, domain_b, bucket;
