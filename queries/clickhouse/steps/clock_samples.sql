-- clock_samples (ClickHouse): reads `pairs`; the causality constraints of each call between two distinct clock
-- domains, one row a call, as queries/steps/clock_samples.sql (the rules are written there): lo_s <= offset(b) -
-- offset(a) <= hi_s, a the lesser domain name, times in a's clock (seconds). A view: clock_edges reads it once.
-- greatest/least are spelled out with multiIf: ClickHouse versions differ on whether they skip NULL.
CREATE VIEW clock_samples AS
WITH bounds AS (
    SELECT client_domain, server_domain, t1, t2, t3, t4,
           t4 > t1 AND t3 > t2 AS span_ok,
           ntp_delay_s >= 0 AS stamp_ok,
           (t3 - t4) / 1e9 AS span_lo, (t2 - t1) / 1e9 AS span_hi,
           ntp_offset_s - ntp_delay_s / 2 AS stamp_lo, ntp_offset_s + ntp_delay_s / 2 AS stamp_hi
    FROM pairs
    WHERE client_domain != server_domain AND t1 IS NOT NULL AND t2 IS NOT NULL AND t3 IS NOT NULL
      AND t4 IS NOT NULL
),
constraints AS (
    SELECT client_domain, server_domain, t1, t2, t3, t4,
           multiIf(span_ok AND stamp_ok, greatest(span_lo, stamp_lo), span_ok, span_lo, stamp_ok, stamp_lo,
                   NULL) AS lo_s,
           multiIf(span_ok AND stamp_ok, least(span_hi, stamp_hi), span_ok, span_hi, stamp_ok, stamp_hi,
                   NULL) AS hi_s
    FROM bounds
)
SELECT
    least(client_domain, server_domain) AS domain_a,
    greatest(client_domain, server_domain) AS domain_b,
    if(client_domain < server_domain, lo_s, -hi_s) AS lo_s,
    if(client_domain < server_domain, t4, t2) / 1e9 AS t_lo_s,
    if(client_domain < server_domain, hi_s, -lo_s) AS hi_s,
    if(client_domain < server_domain, t1, t3) / 1e9 AS t_hi_s
FROM constraints
WHERE lo_s IS NOT NULL AND hi_s IS NOT NULL;
