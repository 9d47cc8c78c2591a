-- denial_logs (ClickHouse): reads `denials`, `logs`, `log_patterns`, `rpc_spans`; every log record of a denied call
-- with its evidence line and the first log pattern it matches, as queries/steps/denial_logs.sql, whose comments give
-- the rules: joined by ids (the denial's trace, on its spans, on no
-- span, or on a span that is no other gRPC call's), or by service and time for a record without a trace id (the
-- nearest at or after the call's start and the nearest before it, ASOF joins, within {{jitrace_log_window_s}} s).
-- `logs` is the run's log relation in the normalized schema (analyzer/engines/run.py: empty, or the exporter's
-- otel_logs over the same time range). A record is carried whole through the joins (there is no rowid here).
-- {{log_pattern_ordinal}} is the analyzer's multiIf over the log patterns (`log_patterns`: RE2, case-insensitive, the
-- patterns as constants, as DuckDB's macro log_pattern_ordinal).
CREATE TABLE denial_logs ENGINE = Memory AS
WITH
logged_denials AS (  -- the denied traces that have log lines: few, often none
    SELECT DISTINCT trace_id FROM denials
    WHERE trace_id IN (SELECT assumeNotNull(trace_id) FROM logs WHERE trace_id IS NOT NULL)
),
other_rpc AS (  -- their gRPC spans: a line on one of them belongs to that call, not to the denied one
    SELECT trace_id, span_id FROM rpc_spans
    WHERE trace_id IN (SELECT trace_id FROM logged_denials) AND kind IN ('CLIENT', 'SERVER')
),
by_ids AS (
    SELECT d.trace_id AS denial_trace_id, d.span_id AS denial_span_id, 'trace' AS matched_by,
           l.time_ns AS time_ns, l.observed_ns AS observed_ns, l.trace_id AS trace_id, l.span_id AS span_id,
           l.severity_number AS severity_number, l.severity_text AS severity_text, l.body AS body,
           l.service AS service, l.resource AS resource, l.attributes AS attributes, l.scope AS scope,
           l.source AS source
    FROM denials AS d
    INNER JOIN logs AS l ON l.trace_id = d.trace_id
    WHERE l.span_id IS NULL OR l.span_id = d.server_span_id OR l.span_id = d.client_span_id
       OR (l.trace_id, l.span_id) NOT IN (SELECT trace_id, span_id FROM other_rpc)
),
plain_logs AS (
    SELECT *, assumeNotNull(coalesce(time_ns, observed_ns)) AS at_ns, assumeNotNull(service) AS log_service
    FROM logs WHERE trace_id IS NULL AND service IS NOT NULL AND coalesce(time_ns, observed_ns) IS NOT NULL
),
denial_starts AS (
    SELECT trace_id, span_id, assumeNotNull(coalesce(server_service, client_service)) AS call_service,
           assumeNotNull(coalesce(server_start_ns, client_start_ns)) AS start_ns
    FROM denials
    WHERE coalesce(server_service, client_service) IS NOT NULL AND coalesce(server_start_ns, client_start_ns) IS NOT NULL
),
by_time AS (  -- the nearest line at or after the call's start, and the nearest before it, kept inside the window
    SELECT * EXCEPT (dt) FROM (
        SELECT d.trace_id AS denial_trace_id, d.span_id AS denial_span_id, 'service_time' AS matched_by,
               l.time_ns AS time_ns, l.observed_ns AS observed_ns, l.trace_id AS trace_id, l.span_id AS span_id,
               l.severity_number AS severity_number, l.severity_text AS severity_text, l.body AS body,
               l.service AS service, l.resource AS resource, l.attributes AS attributes, l.scope AS scope,
               l.source AS source, l.at_ns - d.start_ns AS dt
        FROM denial_starts AS d
        ASOF INNER JOIN plain_logs AS l ON l.log_service = d.call_service AND l.at_ns >= d.start_ns
        UNION DISTINCT
        SELECT d.trace_id, d.span_id, 'service_time', l.time_ns, l.observed_ns, l.trace_id, l.span_id,
               l.severity_number, l.severity_text, l.body, l.service, l.resource, l.attributes, l.scope, l.source,
               l.at_ns - d.start_ns
        FROM denial_starts AS d
        ASOF INNER JOIN plain_logs AS l ON l.log_service = d.call_service AND l.at_ns < d.start_ns
    )
    WHERE abs(dt) <= toFloat64({{jitrace_log_window_s}}) * 1e9
),
joined AS (
    SELECT *, {{log_pattern_ordinal}} AS ordinal
    FROM (SELECT * FROM by_ids UNION ALL SELECT * FROM by_time)
)
SELECT j.* EXCEPT (ordinal),
       coalesce(j.time_ns, j.observed_ns) AS at_ns,
       -- one evidence line: time (UTC, the host's clock, to the millisecond), service, severity, body cut to 200
       -- characters
       formatDateTime(fromUnixTimestamp64Micro(intDiv(coalesce(j.time_ns, j.observed_ns), 1000)), '%Y-%m-%dT%H:%i:%S')
           || '.' || leftPad(toString(intDiv(coalesce(j.time_ns, j.observed_ns) % 1000000000, 1000000)), 3, '0')
           || 'Z'
           || ' ' || coalesce(j.service, '?')
           || ' ' || coalesce(j.severity_text, multiIf(j.severity_number >= 17, 'ERROR', j.severity_number >= 13, 'WARN',
                                                       j.severity_number >= 9, 'INFO', j.severity_number >= 1, 'DEBUG',
                                                       NULL), '-')
           || ' ' || if(lengthUTF8(coalesce(j.body, '')) > 200, leftUTF8(assumeNotNull(j.body), 199) || '…',
                        coalesce(j.body, '')) AS line,
       m.name AS pattern_name, m.cause AS pattern_cause, m.ordinal AS pattern_ordinal,
       m.confidence * if(j.matched_by = 'trace', 1, 0.8) AS pattern_confidence
FROM joined AS j
LEFT JOIN log_patterns AS m ON m.ordinal = j.ordinal;
