-- clock_samples: the causality constraints (a lower and an upper bound) of each call between two distinct clock
-- domains.
-- Why: a server span lies inside its client's span, so the server-minus-client offset is at least t3 - t4 (at the
-- call's end) and at most t2 - t1 (at its start). The instrumentation's in-band stamps
-- (jit.clock.offset_s / jit.clock.delay_s on the client span) bound the same offset to offset +- delay / 2; a negative
-- delay (the client's clock stepped back during the call) bounds nothing: its offset is off by half that step.
-- Each pair of domains is written in one direction, a = the lesser name, b = the other: the constraint is
-- lo_s <= offset(b) - offset(a) at time t_lo_s, offset(b) - offset(a) <= hi_s at time t_hi_s, both times in a's own
-- clock (seconds): analyzer/steps/offsets.py fits each pair on one time axis. When a is the server the bounds swap and
-- change sign (a - b = -(b - a)).
-- A pair bounds the offset by its span times only when both spans have a start and an end and last longer than 0:
-- a span of unknown or zero duration (Zipkin spans without `duration`, a one-way message) bounds nothing, and as a
-- zero-width constraint it would be the tightest of all.
-- Both kinds of constraint of a call hold at the same instants, so they make one row: its tighter bound each side
-- (half the rows a union of the two would be: clock_edges groups them all).
-- A view: clock_edges reads it once, so storing one row per pair would only cost.
WITH constraints AS (
    SELECT client_domain, server_domain, t1, t2, t3, t4,
           greatest(CASE WHEN t4 > t1 AND t3 > t2 THEN (t3 - t4) / 1e9 END,
                    CASE WHEN ntp_delay_s >= 0 THEN ntp_offset_s - ntp_delay_s / 2 END) AS lo_s,
           least(CASE WHEN t4 > t1 AND t3 > t2 THEN (t2 - t1) / 1e9 END,
                 CASE WHEN ntp_delay_s >= 0 THEN ntp_offset_s + ntp_delay_s / 2 END) AS hi_s
    FROM pairs
    WHERE client_domain <> server_domain AND t1 IS NOT NULL AND t2 IS NOT NULL AND t3 IS NOT NULL
      AND t4 IS NOT NULL
)
SELECT
    least(client_domain, server_domain) AS domain_a,
    greatest(client_domain, server_domain) AS domain_b,
    CASE WHEN client_domain < server_domain THEN lo_s ELSE -hi_s END AS lo_s,
    CASE WHEN client_domain < server_domain THEN t4 ELSE t2 END / 1e9 AS t_lo_s,
    CASE WHEN client_domain < server_domain THEN hi_s ELSE -lo_s END AS hi_s,
    CASE WHEN client_domain < server_domain THEN t1 ELSE t3 END / 1e9 AS t_hi_s
FROM constraints
WHERE lo_s IS NOT NULL AND hi_s IS NOT NULL
