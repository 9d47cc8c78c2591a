-- 30_clock_samples: reads `pairs`; produces `clock_samples`, one offset sample per pair of distinct clock domains.
-- Why: every client/server pair bounds the server-minus-client offset by causality to [t3 - t4, t2 - t1] and gives
-- the NTP estimate ((t2 - t1) + (t3 - t4)) / 2 with round-trip delay (t4 - t1) - (t3 - t2). The instrumentation's
-- in-band stamps (jit.clock.offset_s / jit.clock.delay_s on the client span) are a second, tighter sample of the
-- same pair (taken inside the gRPC call, not around the spans); its causality bound is +- delay / 2.
-- Samples fall into time windows (getvariable('jitrace_window_s'), default 300 s) of the client's clock, because
-- offsets drift. Offsets here are in seconds, server clock minus client clock.
-- A pair gives a sample from its span times only when both spans have a start and an end and last longer than 0:
-- a span of unknown or zero duration (Zipkin spans without `duration`, a one-way message) bounds nothing, and as a
-- delay-0 sample it would be the most trusted of all. The in-band sample needs the client's start (its window).
-- A view: 40_clock_edges reads it once, so storing one row per pair and side would only cost.
CREATE OR REPLACE VIEW clock_samples AS
WITH w AS (SELECT coalesce(getvariable('jitrace_window_s'), 300)::DOUBLE AS window_s),
spans_pairs AS (
    SELECT
        client_domain, server_domain, t1,
        (((t2 - t1) + (t3 - t4)) / 2) / 1e9 AS offset_s,
        greatest(((t4 - t1) - (t3 - t2)) / 1e9, 0) AS delay_s,
        (t3 - t4) / 1e9 AS lo_s,
        (t2 - t1) / 1e9 AS hi_s,
        'spans' AS source
    FROM pairs
    WHERE client_domain <> server_domain AND t4 > t1 AND t3 > t2
),
in_band AS (
    SELECT
        client_domain, server_domain, t1,
        ntp_offset_s AS offset_s,
        greatest(ntp_delay_s, 0) AS delay_s,
        ntp_offset_s - greatest(ntp_delay_s, 0) / 2 AS lo_s,
        ntp_offset_s + greatest(ntp_delay_s, 0) / 2 AS hi_s,
        'in_band' AS source
    FROM pairs
    WHERE client_domain <> server_domain AND ntp_offset_s IS NOT NULL AND ntp_delay_s IS NOT NULL
      AND t1 IS NOT NULL
)
SELECT
    client_domain, server_domain,
    floor(t1 / 1e9 / w.window_s) * w.window_s AS window_start,
    floor(t1 / 1e9 / w.window_s) * w.window_s + w.window_s AS window_end,
    offset_s, delay_s, lo_s, hi_s, source
FROM (SELECT * FROM spans_pairs UNION ALL SELECT * FROM in_band), w;
