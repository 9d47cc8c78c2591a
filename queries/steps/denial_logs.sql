-- denial_logs: every log record of a denied call with its evidence line and the first log pattern it matches
-- (attributions picks per denial).
-- Why: a service's own log line ("token expired", "role viewer may not write", an OPA decision) is evidence, and for
-- a service jitrace does not instrument it is the only evidence.
-- Joined two ways:
--   by ids: the record's trace is the denial's, on the server's or the client's span, on no span, or on a span
--   that is no other gRPC call's (an internal span, e.g. a traced OPA query, or a span not collected);
--   by service and time: a record WITHOUT a trace id, from the denial's server (or client) service (resource
--   service.name), stamped within getvariable('jitrace_log_window_s') seconds (default 2 s) of the call's start
--   in that host's clock; of those, the nearest at or after the start and the nearest before it (on a busy
--   service the window holds other calls' lines too: the nearest are the likeliest). A record with a trace id is
--   never joined by time: its ids say which call it belongs to.
-- Patterns (queries/seeds/log_patterns.csv and the users' --log-patterns files) are matched case-insensitively; the
-- first by ordinal decides; id-joined lines are preferred to time-joined ones. A time-joined line's confidence
-- is multiplied by 0.8 (it may be another call's). Evidence lines are bounded: the first 5 by time, bodies cut to
-- 200 characters (the loaders already redacted bearer tokens).
WITH logged_denials AS (  -- the denied traces that have log lines: few, often none
    SELECT DISTINCT d.trace_id FROM denials AS d SEMI JOIN logs AS l ON l.trace_id = d.trace_id
),
other_rpc AS (  -- their gRPC spans: a line on one of them belongs to that call, not to the denied one
    SELECT r.trace_id, r.span_id FROM rpc_spans AS r
    SEMI JOIN logged_denials AS ld ON ld.trace_id = r.trace_id
    WHERE r.kind IN ('CLIENT', 'SERVER')
),
by_ids AS (
    SELECT d.trace_id AS denial_trace_id, d.span_id AS denial_span_id, 'trace' AS matched_by, l.*
    FROM denials AS d
    INNER JOIN logs AS l ON l.trace_id = d.trace_id
     AND (l.span_id IS NULL OR l.span_id IN (d.server_span_id, d.client_span_id)
          OR l.span_id NOT IN (SELECT o.span_id FROM other_rpc AS o WHERE o.trace_id = l.trace_id))
),
plain_logs AS (
    SELECT rowid AS log_row, service, coalesce(time_ns, observed_ns) AS at_ns FROM logs WHERE trace_id IS NULL
),
denial_starts AS (
    SELECT trace_id, span_id, coalesce(server_service, client_service) AS service,
           coalesce(server_start_ns, client_start_ns) AS start_ns FROM denials
),
by_time_keys AS (  -- the nearest line at or after the call's start, and the nearest before it (ASOF: no window
                   -- scan, a busy service can put thousands of lines in each window), kept when inside the window
    SELECT denial_trace_id, denial_span_id, log_row
    FROM (
        SELECT d.trace_id AS denial_trace_id, d.span_id AS denial_span_id, l.log_row, l.at_ns - d.start_ns AS dt
        FROM denial_starts AS d ASOF JOIN plain_logs AS l ON l.service = d.service AND l.at_ns >= d.start_ns
        UNION
        SELECT d.trace_id, d.span_id, l.log_row, l.at_ns - d.start_ns AS dt
        FROM denial_starts AS d ASOF JOIN plain_logs AS l ON l.service = d.service AND d.start_ns > l.at_ns
    ) AS nearest
    WHERE abs(dt) <= coalesce(getvariable('jitrace_log_window_s'), 2) * 1e9
),
by_time AS (
    SELECT k.denial_trace_id, k.denial_span_id, 'service_time' AS matched_by, l.*
    FROM by_time_keys AS k
    INNER JOIN logs AS l ON l.rowid = k.log_row
),
joined AS MATERIALIZED (
    SELECT row_number() OVER () AS k, *
    FROM (SELECT * FROM by_ids UNION ALL SELECT * FROM by_time) AS both_ways
),
matched AS (  -- the first pattern (by ordinal) each record matches: log_pattern_ordinal (analyzer/steps/session.py)
    SELECT k, log_pattern_ordinal(coalesce(body, '')) AS ordinal FROM joined
)
SELECT j.* EXCLUDE (k),
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
INNER JOIN matched USING (k)
LEFT JOIN log_patterns AS m ON m.ordinal = matched.ordinal
