-- clock_edges (ClickHouse): reads `clock_samples`, `pairs`; the tightest constraints of each pair of clock domains
-- per time bucket, as queries/steps/clock_edges.sql: about 1,000 buckets a run, between
-- 0.1 s and {{jitrace_window_s}} (the analyzer's --window, default 300 s). The analyzer pulls this small table and
-- fits the clock model in Python (analyzer/steps/offsets.py), then pushes `clock_offsets` back.
-- Of equal bounds the earliest instant, as arg_max over (bound, -time) in DuckDB. A tuple as argMax's key is compared
-- value by value as generic fields, slowly: the key here is one UInt128 ordered as that tuple, each double mapped to
-- a UInt64 of the same order (`ordered`: its bits with the sign bit set when positive, all flipped when negative;
-- + 0. makes -0 the same as 0, as they compare equal), the bound in the high half, the time (or its complement) in
-- the low half.
CREATE TABLE clock_edges ENGINE = Memory AS
WITH
    x -> if(bitTest(reinterpretAsUInt64(x + 0.), 63), bitNot(reinterpretAsUInt64(x + 0.)),
            bitOr(reinterpretAsUInt64(x + 0.), bitShiftLeft(toUInt64(1), 63))) AS ordered,
    (high, low) -> bitOr(bitShiftLeft(toUInt128(ordered(high)), 64), toUInt128(low)) AS ordered_pair,
(
    SELECT least(toFloat64({{jitrace_window_s}}),
                 greatest(0.1, (max(t1) - min(t1)) / 1e9 * uniqExact(client_domain, server_domain) / 1000))
    FROM pairs
    WHERE client_domain != server_domain
) AS bucket_s
SELECT
    domain_a, domain_b,
    toInt64(floor(t_hi_s / bucket_s)) AS bucket,
    max(lo_s) AS lo_s,
    argMax(t_lo_s, ordered_pair(assumeNotNull(lo_s), bitNot(ordered(assumeNotNull(t_lo_s))))) AS t_lo_s,
    min(hi_s) AS hi_s,
    argMin(t_hi_s, ordered_pair(assumeNotNull(hi_s), ordered(assumeNotNull(t_hi_s)))) AS t_hi_s,
    count() AS samples
FROM clock_samples
GROUP BY domain_a, domain_b, bucket;
