-- span_facts (ClickHouse): the `spans` of queries/span_facts.sql, read from the OpenTelemetry Collector's ClickHouse
-- exporter table (`otel_traces`, written `{{source}}` below) over the run's time range. The same rule in this
-- engine's dialect: the rows the DuckDB steps read from the normalized schema, with the same typed facts.
-- The exporter's schema: Timestamp DateTime64(9) (the span's start), Duration in ns, SpanKind and StatusCode as text
-- ('Server' and 'Error' today, 'SPAN_KIND_SERVER' and 'STATUS_CODE_ERROR' from older exporters: both spellings
-- read as SERVER and ERROR), ResourceAttributes and SpanAttributes as Map(String, String) holding every value as
-- pdata's AsString (ints and doubles as decimal text, bools as true/false, arrays as JSON), and the span events as
-- the Nested columns Events.Timestamp, Events.Name, Events.Attributes.
-- A Map reads a missing key as '': an attribute is NULL unless the map holds its key (mapContains), as from_json
-- gives NULL for an absent member; numbers parse with the *OrNull functions.
-- The lines below `-- facts` are the stored facts: `jitrace clickhouse install-facts` adds each one to the table as
-- a MATERIALIZED column of that name and type (an expression over the exporter's columns and earlier facts only),
-- and when the table holds all of them the view reads them instead of computing them. Each item is one
-- `expression AS name`, separated by commas (analyzer/engines/otel_traces.py reads them).
-- Streams: a token check on a later message is a span event `jit.token.check`; the first failing one (else the last)
-- is the stream's check: check_verdict, check_ttl_s, check_ns (DuckDB's stream_check struct, flattened), with
-- check_events their count (NULL when the span has none).
SELECT
    TraceId AS trace_id,
    SpanId AS span_id,
    nullIf(ParentSpanId, '') AS parent_span_id,
    SpanName AS name,
    upper(replaceRegexpOne(SpanKind, '^(?i)SPAN_KIND_', '')) AS kind,
    -- 0 is OpenTelemetry's "not set": NULL, never the epoch
    nullIf(toUnixTimestamp64Nano(Timestamp), 0) AS start_ns,
    nullIf(toUnixTimestamp64Nano(Timestamp) + toInt64(Duration), 0) AS end_ns,
    upper(replaceRegexpOne(StatusCode, '^(?i)STATUS_CODE_', '')) AS status_code,
    nullIf(ServiceName, '') AS service,
    -- facts
    CAST(coalesce(
        if(mapContains(ResourceAttributes, 'host.id'), ResourceAttributes['host.id'], NULL),
        if(mapContains(ResourceAttributes, 'host.name'), ResourceAttributes['host.name'], NULL),
        if(mapContains(ResourceAttributes, 'hostname'), ResourceAttributes['hostname'], NULL),
        if(mapContains(ResourceAttributes, 'host.ip'),
           if(startsWith(ResourceAttributes['host.ip'], '['), nullIf(JSONExtractString(ResourceAttributes['host.ip'], 1), ''),
              ResourceAttributes['host.ip']), NULL),
        if(mapContains(ResourceAttributes, 'ip'), ResourceAttributes['ip'], NULL),
        if(mapContains(ResourceAttributes, 'service.instance.id'), ResourceAttributes['service.instance.id'], NULL),
        if(mapContains(ResourceAttributes, 'service.name'), ResourceAttributes['service.name'], NULL),
        nullIf(toString(ServiceName), ''),
        'unknown') AS String) AS domain,
    CAST(if(mapContains(SpanAttributes, 'rpc.system'), SpanAttributes['rpc.system'], NULL) AS Nullable(String)) AS rpc_system,
    CAST(if(mapContains(SpanAttributes, 'rpc.service'), SpanAttributes['rpc.service'], NULL) AS Nullable(String)) AS rpc_service,
    CAST(if(mapContains(SpanAttributes, 'rpc.method'), SpanAttributes['rpc.method'], NULL) AS Nullable(String)) AS rpc_method,
    -- the gRPC status from the first convention present (queries/span_facts.sql lists them): a number, or a status
    -- name in any case, with or without underscores
    CAST(coalesce(
        toInt32OrNull(coalesce(
            if(mapContains(SpanAttributes, 'rpc.grpc.status_code'), SpanAttributes['rpc.grpc.status_code'], NULL),
            if(mapContains(SpanAttributes, 'rpc.response.status_code'), SpanAttributes['rpc.response.status_code'], NULL),
            if(mapContains(SpanAttributes, 'grpc.status_code'), SpanAttributes['grpc.status_code'], NULL),
            if(mapContains(SpanAttributes, 'census.status_code'), SpanAttributes['census.status_code'], NULL),
            if(mapContains(SpanAttributes, 'opencensus.status_code'), SpanAttributes['opencensus.status_code'], NULL),
            if(mapContains(SpanAttributes, 'status.code'), SpanAttributes['status.code'], NULL))),
        toInt32(nullIf(indexOf(['OK', 'CANCELLED', 'UNKNOWN', 'INVALIDARGUMENT', 'DEADLINEEXCEEDED', 'NOTFOUND',
                                'ALREADYEXISTS', 'PERMISSIONDENIED', 'RESOURCEEXHAUSTED', 'FAILEDPRECONDITION',
                                'ABORTED', 'OUTOFRANGE', 'UNIMPLEMENTED', 'INTERNAL', 'UNAVAILABLE', 'DATALOSS',
                                'UNAUTHENTICATED'],
                               replaceAll(upper(trimBoth(coalesce(
            if(mapContains(SpanAttributes, 'rpc.grpc.status_code'), SpanAttributes['rpc.grpc.status_code'], NULL),
            if(mapContains(SpanAttributes, 'rpc.response.status_code'), SpanAttributes['rpc.response.status_code'], NULL),
            if(mapContains(SpanAttributes, 'grpc.status_code'), SpanAttributes['grpc.status_code'], NULL),
            if(mapContains(SpanAttributes, 'census.status_code'), SpanAttributes['census.status_code'], NULL),
            if(mapContains(SpanAttributes, 'opencensus.status_code'), SpanAttributes['opencensus.status_code'], NULL),
            if(mapContains(SpanAttributes, 'status.code'), SpanAttributes['status.code'], NULL), ''))), '_', '')),
                        0)) - 1) AS Nullable(Int32)) AS grpc_status,
    -- a denial: PERMISSION_DENIED (7) or UNAUTHENTICATED (16) in the gRPC status, never the span status
    CAST(coalesce(grpc_status IN (7, 16), false) AS Bool) AS denied,
    CAST(multiIf(mapContains(SpanAttributes, 'rpc.grpc.status_code'), 'rpc.grpc.status_code',
                 mapContains(SpanAttributes, 'rpc.response.status_code'), 'rpc.response.status_code',
                 mapContains(SpanAttributes, 'grpc.status_code'), 'grpc.status_code',
                 mapContains(SpanAttributes, 'census.status_code'), 'census.status_code',
                 mapContains(SpanAttributes, 'opencensus.status_code'), 'opencensus.status_code',
                 mapContains(SpanAttributes, 'status.code'), 'status.code', NULL) AS Nullable(String))
        AS grpc_status_attribute,
    CAST(if(mapContains(SpanAttributes, 'jit.token.present'),
            lower(SpanAttributes['jit.token.present']) IN ('true', '1'), NULL) AS Nullable(Bool)) AS jit_token_present,
    CAST(if(mapContains(SpanAttributes, 'jit.token.id'), SpanAttributes['jit.token.id'], NULL) AS Nullable(String)) AS jit_token_id,
    CAST(if(mapContains(SpanAttributes, 'jit.token.sub'), SpanAttributes['jit.token.sub'], NULL) AS Nullable(String)) AS jit_token_sub,
    CAST(if(mapContains(SpanAttributes, 'jit.token.iss'), SpanAttributes['jit.token.iss'], NULL) AS Nullable(String)) AS jit_token_iss,
    CAST(if(mapContains(SpanAttributes, 'jit.token.aud'), SpanAttributes['jit.token.aud'], NULL) AS Nullable(String)) AS jit_token_aud,
    toFloat64OrNull(SpanAttributes['jit.token.iat']) AS jit_token_iat,
    toFloat64OrNull(SpanAttributes['jit.token.nbf']) AS jit_token_nbf,
    toFloat64OrNull(SpanAttributes['jit.token.exp']) AS jit_token_exp,
    toFloat64OrNull(SpanAttributes['jit.token.age_s']) AS jit_token_age_s,
    toFloat64OrNull(SpanAttributes['jit.token.ttl_s']) AS jit_token_ttl_s,
    CAST(if(mapContains(SpanAttributes, 'jit.token.verdict'), SpanAttributes['jit.token.verdict'], NULL) AS Nullable(String)) AS jit_token_verdict,
    CAST(if(mapContains(SpanAttributes, 'jit.token.refreshed'),
            lower(SpanAttributes['jit.token.refreshed']) IN ('true', '1'), NULL) AS Nullable(Bool)) AS jit_token_refreshed,
    CAST(if(mapContains(SpanAttributes, 'jit.grant.id'), SpanAttributes['jit.grant.id'], NULL) AS Nullable(String)) AS jit_grant_id,
    toFloat64OrNull(SpanAttributes['jit.grant.start']) AS jit_grant_start,
    toFloat64OrNull(SpanAttributes['jit.grant.end']) AS jit_grant_end,
    CAST(if(mapContains(SpanAttributes, 'jit.policy.decision'), SpanAttributes['jit.policy.decision'], NULL) AS Nullable(String)) AS jit_policy_decision,
    CAST(if(mapContains(SpanAttributes, 'jit.policy.engine'), SpanAttributes['jit.policy.engine'], NULL) AS Nullable(String)) AS jit_policy_engine,
    CAST(if(mapContains(SpanAttributes, 'jit.policy.id'), SpanAttributes['jit.policy.id'], NULL) AS Nullable(String)) AS jit_policy_id,
    CAST(if(mapContains(SpanAttributes, 'jit.policy.version'), SpanAttributes['jit.policy.version'], NULL) AS Nullable(String)) AS jit_policy_version,
    CAST(if(mapContains(SpanAttributes, 'jit.policy.rule'), SpanAttributes['jit.policy.rule'], NULL) AS Nullable(String)) AS jit_policy_rule,
    CAST(if(mapContains(SpanAttributes, 'jit.policy.required'), SpanAttributes['jit.policy.required'], NULL) AS Nullable(String)) AS jit_policy_required,
    -- a string array: kept as the exporter's JSON text (a ClickHouse array cannot be NULL, and an absent list is not
    -- an empty one); the denials step parses it for the denied calls only
    CAST(if(mapContains(SpanAttributes, 'jit.policy.granted'), SpanAttributes['jit.policy.granted'], NULL) AS Nullable(String)) AS jit_policy_granted,
    -- the request the policy engine evaluated: a string array, kept as the exporter's JSON text (read by replay)
    CAST(if(mapContains(SpanAttributes, 'jit.policy.request'), SpanAttributes['jit.policy.request'], NULL) AS Nullable(String)) AS jit_policy_request,
    toFloat64OrNull(SpanAttributes['jit.policy.eval_s']) AS jit_policy_eval_s,
    toFloat64OrNull(SpanAttributes['jit.auth.wait_s']) AS jit_auth_wait_s,
    toInt64OrNull(SpanAttributes['jit.clock.sent_ns']) AS jit_clock_sent_ns,
    toInt64OrNull(SpanAttributes['jit.clock.peer_sent_ns']) AS jit_clock_peer_sent_ns,
    toInt64OrNull(SpanAttributes['jit.clock.received_ns']) AS jit_clock_received_ns,
    toFloat64OrNull(SpanAttributes['jit.clock.offset_s']) AS jit_clock_offset_s,
    toFloat64OrNull(SpanAttributes['jit.clock.delay_s']) AS jit_clock_delay_s,
    CAST(if(mapContains(SpanAttributes, 'jit.denial.reason'), SpanAttributes['jit.denial.reason'], NULL) AS Nullable(String)) AS jit_denial_reason,
    CAST(nullIf(countEqual(Events.Name, 'jit.token.check'), 0) AS Nullable(UInt32)) AS check_events,
    -- the stream's check: the index of the first failing jit.token.check event, else of the last one (0: none)
    toUInt32(if(check_events IS NULL, 0,
                arrayFirstIndex((n, a) -> n = 'jit.token.check' AND mapContains(a, 'jit.token.verdict')
                                          AND a['jit.token.verdict'] != 'valid', Events.Name, Events.Attributes)
                + if(arrayExists((n, a) -> n = 'jit.token.check' AND mapContains(a, 'jit.token.verdict')
                                           AND a['jit.token.verdict'] != 'valid', Events.Name, Events.Attributes), 0,
                     arrayLastIndex(n -> n = 'jit.token.check', Events.Name)))) AS check_index,
    CAST(if(check_index > 0 AND mapContains(Events.Attributes[check_index], 'jit.token.verdict'),
            Events.Attributes[check_index]['jit.token.verdict'], NULL) AS Nullable(String)) AS check_verdict,
    if(check_index > 0, toFloat64OrNull(Events.Attributes[check_index]['jit.token.ttl_s']), NULL) AS check_ttl_s,
    if(check_index > 0, toUnixTimestamp64Nano(Events.Timestamp[check_index]), NULL) AS check_ns
FROM {{source}}
