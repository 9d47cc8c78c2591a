-- 40_clock_edges: reads `clock_samples`; produces `clock_edges`, one offset estimate per pair of clock domains
-- and time window: the edges of the graph that analyzer/offsets.py solves into `clock_offsets`.
-- Why: NTP's clock filter trusts the lowest-delay sample (least room for asymmetric queueing), and causality bounds
-- from many pairs intersect into a tighter interval [max(lo), min(hi)]. When that interval is consistent
-- (lo <= hi) the estimate is its midpoint and the error its half-width (a hard bound); when it is empty (the
-- offset drifted inside the window, or a span's times are wrong) the lowest-delay sample stands, with delay / 2.
CREATE OR REPLACE TABLE clock_edges AS
WITH g AS (
    SELECT
        client_domain, server_domain, window_start, window_end,
        first(offset_s ORDER BY delay_s, offset_s) AS best_offset_s,  -- ties broken by value: re-runs agree
        min(delay_s) AS min_delay_s,
        max(lo_s) AS lo_s,
        min(hi_s) AS hi_s,
        count(*) AS samples
    FROM clock_samples
    GROUP BY ALL
)
SELECT
    client_domain, server_domain, window_start, window_end,
    CASE WHEN lo_s <= hi_s THEN (lo_s + hi_s) / 2 ELSE best_offset_s END AS offset_s,
    CASE WHEN lo_s <= hi_s THEN (hi_s - lo_s) / 2 ELSE min_delay_s / 2 END AS error_s,
    lo_s <= hi_s AS consistent,
    lo_s, hi_s, min_delay_s, samples
FROM g;
