-- clock_edges: the tightest constraints of each pair of clock domains per time bucket: what
-- analyzer/steps/offsets.py fits its clock model to.
-- Why: only the extreme constraints matter to a fit that must satisfy them all (the convex hulls of the lower and
-- upper bounds): per bucket the highest lower bound and the lowest upper bound, each at its own instant, so drift
-- inside a bucket costs no accuracy. Buckets adapt to the data: about 1,000 per run over every pair (the solver's
-- work stays small at any size), never shorter than 0.1 s nor longer than getvariable('jitrace_window_s')
-- (default 300 s). Times are seconds in domain_a's clock; lo_s/hi_s bound offset(domain_b) - offset(domain_a).
WITH extent AS (
    SELECT least(coalesce(getvariable('jitrace_window_s'), 300)::DOUBLE,
                 greatest(0.1, (max(t1) - min(t1)) / 1e9
                               * count(DISTINCT row(client_domain, server_domain)) / 1000)) AS bucket_s
    FROM pairs
    WHERE client_domain <> server_domain
)
SELECT
    domain_a, domain_b,
    floor(t_hi_s / bucket_s)::BIGINT AS bucket,
    max(lo_s) AS lo_s,
    arg_max(t_lo_s, (lo_s, -t_lo_s)) AS t_lo_s,  -- of equal bounds the earliest: the same whatever the rows' order
    min(hi_s) AS hi_s,
    arg_min(t_hi_s, (hi_s, t_hi_s)) AS t_hi_s,
    count(*) AS samples
FROM clock_samples, extent
GROUP BY ALL
