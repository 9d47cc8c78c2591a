-- clock_samples (ClickHouse): reads `pairs`; two causality constraints per pair of distinct clock domains, as
-- queries/steps/clock_samples.sql (the rules are written there): lo_s <= offset(b) -
-- offset(a) <= hi_s, a the lesser domain name, times in a's clock (seconds). A view: clock_edges reads it once.
CREATE VIEW clock_samples AS
WITH constraints AS (
    SELECT client_domain, server_domain, t1, t2, t3, t4,
           (t3 - t4) / 1e9 AS lo_s, (t2 - t1) / 1e9 AS hi_s
    FROM pairs
    WHERE client_domain != server_domain AND t4 > t1 AND t3 > t2
    UNION ALL
    SELECT client_domain, server_domain, t1, t2, t3, t4,
           ntp_offset_s - greatest(ntp_delay_s, 0) / 2, ntp_offset_s + greatest(ntp_delay_s, 0) / 2
    FROM pairs
    WHERE client_domain != server_domain AND ntp_offset_s IS NOT NULL AND ntp_delay_s IS NOT NULL
      AND t1 IS NOT NULL
)
SELECT
    least(client_domain, server_domain) AS domain_a,
    greatest(client_domain, server_domain) AS domain_b,
    if(client_domain < server_domain, lo_s, -hi_s) AS lo_s,
    if(client_domain < server_domain, t4, t2) / 1e9 AS t_lo_s,
    if(client_domain < server_domain, hi_s, -lo_s) AS hi_s,
    if(client_domain < server_domain, t1, t3) / 1e9 AS t_hi_s
FROM constraints
WHERE lo_s IS NOT NULL AND hi_s IS NOT NULL AND t1 IS NOT NULL AND t2 IS NOT NULL AND t3 IS NOT NULL
  AND t4 IS NOT NULL;
