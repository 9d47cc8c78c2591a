-- 55_denial_logs: reads `denials`, `logs`, `log_patterns`; produces `denial_logs`, every log record of a denied
-- call with its evidence line and the first log pattern it matches (60_attributions picks per denial).
-- Why: a service's own log line ("token expired", "role viewer may not write", an OPA decision) is evidence, and for
-- a service jitrace does not instrument it is the only evidence.
-- Joined two ways:
--   by ids: the record's trace is the denial's, on the server's or the client's span or on no span;
--   by service and time: a record WITHOUT a trace id, from the denial's server (or client) service (resource
--   service.name), stamped within getvariable('jitrace_log_window_s') seconds (default 2 s) of the call's start
--   in that host's clock. A record with a trace id is never joined by time: its ids say which call it belongs to.
-- Patterns (queries/log_patterns.csv and the users' --log-patterns files) are matched case-insensitively; the
-- first by ordinal decides; id-joined lines are preferred to time-joined ones. A time-joined line's confidence
-- is multiplied by 0.8 (it may be another call's). Evidence lines are bounded: the first 5 by time, bodies cut to
-- 200 characters (the loaders already redacted bearer tokens).
CREATE OR REPLACE TABLE denial_logs AS
WITH by_ids AS (
    SELECT d.trace_id AS denial_trace_id, d.span_id AS denial_span_id, 'trace' AS matched_by, l.*
    FROM denials AS d
    JOIN logs AS l ON l.trace_id = d.trace_id
     AND (l.span_id IS NULL OR l.span_id IN (d.server_span_id, d.client_span_id))
),
by_time AS (
    SELECT d.trace_id AS denial_trace_id, d.span_id AS denial_span_id, 'service_time' AS matched_by, l.*
    FROM denials AS d
    JOIN logs AS l ON l.trace_id IS NULL
     AND l.service = coalesce(d.server_service, d.client_service)
     AND coalesce(l.time_ns, l.observed_ns)
         BETWEEN coalesce(d.server_start_ns, d.client_start_ns)
                 - (coalesce(getvariable('jitrace_log_window_s'), 2) * 1e9)::BIGINT
             AND coalesce(d.server_start_ns, d.client_start_ns)
                 + (coalesce(getvariable('jitrace_log_window_s'), 2) * 1e9)::BIGINT
),
joined AS (
    SELECT * FROM by_ids
    UNION ALL
    SELECT * FROM by_time
)
SELECT j.*,
       coalesce(j.time_ns, j.observed_ns) AS at_ns,
       -- one evidence line: time (UTC, the host's clock), service, severity, body cut to 200 characters
       strftime(make_timestamp(coalesce(j.time_ns, j.observed_ns) // 1000), '%Y-%m-%dT%H:%M:%S.%gZ')
           || ' ' || coalesce(j.service, '?')
           || ' ' || coalesce(j.severity_text, CASE WHEN j.severity_number >= 17 THEN 'ERROR'
                                                    WHEN j.severity_number >= 13 THEN 'WARN'
                                                    WHEN j.severity_number >= 9 THEN 'INFO'
                                                    WHEN j.severity_number >= 1 THEN 'DEBUG' END, '-')
           || ' ' || CASE WHEN length(coalesce(j.body, '')) > 200 THEN left(j.body, 199) || '…'
                          ELSE coalesce(j.body, '') END AS line,
       m.name AS pattern_name, m.cause AS pattern_cause, m.ordinal AS pattern_ordinal,
       m.confidence * CASE WHEN j.matched_by = 'trace' THEN 1 ELSE 0.8 END AS pattern_confidence
FROM joined AS j
LEFT JOIN LATERAL (
    SELECT p.name, p.cause, p.ordinal, p.confidence FROM log_patterns AS p
    WHERE regexp_matches(coalesce(j.body, ''), p.pattern, 'i')
    ORDER BY p.ordinal LIMIT 1
) AS m ON true;

