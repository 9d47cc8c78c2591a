-- span_facts: reads a relation in the spans schema with the parsed values of span_fact_inputs.sql (`r`, `a`,
-- `checks`), written `{inputs}` below; produces the spans' rows with the typed columns every step needs added (the
-- "facts"). Not a numbered step: it is the one rule that turns a span's attributes into columns, and it runs where
-- the spans are read once. `jitrace collect` compacts its files
-- through it (collect/compact.py), so the analyzer reads those columns straight from the files; for any
-- other input (OTLP JSON, Jaeger, Zipkin, Parquet without them) the `spans` view applies it when read
-- (analyzer/steps/spans_view.py).
-- Each attribute becomes the column named by instrumentation/contract.py's column(): jit.token.ttl_s ->
-- jit_token_ttl_s.
-- The clock domain is the host the span's clock belongs to: host.id > host.name (Jaeger's process tag `hostname`) >
-- the host's address (host.ip, which the Zipkin loader fills from localEndpoint ipv4/ipv6, or Jaeger's tag `ip`; of
-- an address list, the first) > service.instance.id > service.name.
-- The gRPC status is read from the conventions instrumentations write, the first present in this order:
-- rpc.grpc.status_code (OpenTelemetry, a number), rpc.response.status_code (current RPC semantic conventions, the
-- status name), grpc.status_code (Brave: the name; Envoy/Istio and older OpenTelemetry .NET: the number),
-- census.status_code and opencensus.status_code (OpenCensus exporters to Zipkin/Jaeger), status.code (OpenCensus
-- spans translated by the Collector). A name counts in any case, with or without underscores (PermissionDenied);
-- grpc_status_attribute names the attribute read, for the evidence.
-- Times: 0 is OpenTelemetry's "not set"; a span without a start or an end has NULL there (never the epoch).
-- Files of facts are written with the denied spans first (spans_view.facts_file_sql): the steps that look up
-- denials filter on `denied`, and DuckDB skips the row groups whose statistics hold none.
-- Streams: a token check on a later message is a span event `jit.token.check`; the first failing one (else the
-- last) becomes stream_check {name, time_ns, attributes}, with check_events their count. Events are parsed only on
-- spans that have such an event.
SELECT
    * EXCLUDE (r, a, checks, service, status_raw, status_attribute)
      REPLACE (nullif(start_ns, 0) AS start_ns, nullif(end_ns, 0) AS end_ns),
    coalesce(service, r."service.name") AS service,
    coalesce(r."host.id", r."host.name", r.hostname,
             CASE WHEN starts_with(r."host.ip", '[') THEN r."host.ip" ->> '$[0]' ELSE r."host.ip" END, r.ip,
             r."service.instance.id", r."service.name", service, 'unknown') AS domain,
    a."rpc.system" AS rpc_system,
    a."rpc.service" AS rpc_service,
    a."rpc.method" AS rpc_method,
    coalesce(try_cast(status_raw AS INTEGER),
             list_position(['OK', 'CANCELLED', 'UNKNOWN', 'INVALIDARGUMENT', 'DEADLINEEXCEEDED', 'NOTFOUND',
                            'ALREADYEXISTS', 'PERMISSIONDENIED', 'RESOURCEEXHAUSTED', 'FAILEDPRECONDITION', 'ABORTED',
                            'OUTOFRANGE', 'UNIMPLEMENTED', 'INTERNAL', 'UNAVAILABLE', 'DATALOSS', 'UNAUTHENTICATED'],
                           replace(upper(trim(status_raw)), '_', '')) - 1) AS grpc_status,
    -- a denial: PERMISSION_DENIED (7) or UNAUTHENTICATED (16) in the gRPC status, never the span status
    -- (OpenTelemetry leaves it UNSET for these codes)
    coalesce(grpc_status IN (7, 16), false) AS denied,
    status_attribute AS grpc_status_attribute,
    lower(a."jit.token.present") IN ('true', '1') AS jit_token_present,
    a."jit.token.id" AS jit_token_id,
    a."jit.token.sub" AS jit_token_sub,
    a."jit.token.iss" AS jit_token_iss,
    a."jit.token.aud" AS jit_token_aud,
    a."jit.token.iat" AS jit_token_iat,
    a."jit.token.nbf" AS jit_token_nbf,
    a."jit.token.exp" AS jit_token_exp,
    a."jit.token.age_s" AS jit_token_age_s,
    a."jit.token.ttl_s" AS jit_token_ttl_s,
    a."jit.token.verdict" AS jit_token_verdict,
    lower(a."jit.token.refreshed") IN ('true', '1') AS jit_token_refreshed,
    a."jit.grant.id" AS jit_grant_id,
    a."jit.grant.start" AS jit_grant_start,
    a."jit.grant.end" AS jit_grant_end,
    a."jit.policy.decision" AS jit_policy_decision,
    a."jit.policy.engine" AS jit_policy_engine,
    a."jit.policy.id" AS jit_policy_id,
    a."jit.policy.version" AS jit_policy_version,
    a."jit.policy.rule" AS jit_policy_rule,
    a."jit.policy.required" AS jit_policy_required,
    a."jit.policy.granted" AS jit_policy_granted,
    a."jit.policy.eval_s" AS jit_policy_eval_s,
    a."jit.policy.request" AS jit_policy_request,
    a."jit.auth.wait_s" AS jit_auth_wait_s,
    a."jit.clock.sent_ns" AS jit_clock_sent_ns,
    a."jit.clock.peer_sent_ns" AS jit_clock_peer_sent_ns,
    a."jit.clock.received_ns" AS jit_clock_received_ns,
    a."jit.clock.offset_s" AS jit_clock_offset_s,
    a."jit.clock.delay_s" AS jit_clock_delay_s,
    a."jit.denial.reason" AS jit_denial_reason,
    len(checks) AS check_events,
    coalesce(list_filter(checks, LAMBDA e: e.attributes."jit.token.verdict" <> 'valid')[1], checks[-1]) AS stream_check
FROM (SELECT
    *,
    coalesce(a."rpc.grpc.status_code", a."rpc.response.status_code", a."grpc.status_code", a."census.status_code",
             a."opencensus.status_code", a."status.code") AS status_raw,
    CASE WHEN a."rpc.grpc.status_code" IS NOT NULL THEN 'rpc.grpc.status_code'
         WHEN a."rpc.response.status_code" IS NOT NULL THEN 'rpc.response.status_code'
         WHEN a."grpc.status_code" IS NOT NULL THEN 'grpc.status_code'
         WHEN a."census.status_code" IS NOT NULL THEN 'census.status_code'
         WHEN a."opencensus.status_code" IS NOT NULL THEN 'opencensus.status_code'
         WHEN a."status.code" IS NOT NULL THEN 'status.code' END AS status_attribute
FROM {inputs}
) AS with_status
