-- denials (ClickHouse): reads `denied_calls`, `rpc_spans`, `clock_offsets`; one row per denied call, as
-- queries/steps/denials.sql, whose comments give the rules: both ends' jit.* facts, the token's issuance span,
-- each host's offset and bound at the call's instant (its clock model segment), and the policy versions the same
-- principal was allowed nearby in time ({{jitrace_version_window_s}} s).
-- ClickHouse does not keep a CTE's rows: what two parts read is a table of this step (denial_ends, denials_base),
-- dropped at its end. The cross-trace lookups (issues by token id, allowed calls by principal) read only the tokens
-- and principals of the denied calls: on a cluster they are the GLOBAL IN / GLOBAL JOIN of docs/contract.md.
-- Arrays cannot be NULL here: an absent jit.policy.granted is policy_granted = [] with policy_granted_known false,
-- and a denial with no other allowed version has allowed_versions = [].

-- the spans of both ends of every denied call; a denied span is read with the filter on `denied` (the index that
-- `jitrace clickhouse install-facts` adds skips the granules without one); the client of a denied server that
-- recorded another status (rare) is looked up among all spans only when there is one
CREATE TABLE denial_ends ENGINE = Memory AS
WITH wanted AS (
    SELECT trace_id, assumeNotNull(server_span_id) AS span_id, 'SERVER' AS kind, true AS denied
    FROM denied_calls WHERE server_span_id IS NOT NULL
    UNION ALL
    SELECT trace_id, assumeNotNull(client_span_id), 'CLIENT', coalesce(client_denied, false)
    FROM denied_calls WHERE client_span_id IS NOT NULL
)
SELECT * FROM (
    SELECT trace_id, span_id, kind, name, service, domain, start_ns, rpc_service, rpc_method, grpc_status,
           grpc_status_attribute, jit_token_present, jit_token_id, jit_token_sub, jit_token_iat, jit_token_nbf,
           jit_token_exp, jit_token_age_s, jit_token_ttl_s, jit_token_verdict, jit_token_refreshed, jit_grant_id,
           jit_grant_start, jit_grant_end, jit_policy_decision, jit_policy_engine, jit_policy_id, jit_policy_version,
           jit_policy_rule, jit_policy_required, jit_policy_granted, jit_auth_wait_s, jit_denial_reason,
           check_events, check_verdict, check_ttl_s, check_ns
    FROM rpc_spans
    WHERE denied AND (trace_id, span_id, kind) IN (SELECT trace_id, span_id, kind FROM wanted WHERE denied)
    UNION ALL
    SELECT trace_id, span_id, kind, name, service, domain, start_ns, rpc_service, rpc_method, grpc_status,
           grpc_status_attribute, jit_token_present, jit_token_id, jit_token_sub, jit_token_iat, jit_token_nbf,
           jit_token_exp, jit_token_age_s, jit_token_ttl_s, jit_token_verdict, jit_token_refreshed, jit_grant_id,
           jit_grant_start, jit_grant_end, jit_policy_decision, jit_policy_engine, jit_policy_id, jit_policy_version,
           jit_policy_rule, jit_policy_required, jit_policy_granted, jit_auth_wait_s, jit_denial_reason,
           check_events, check_verdict, check_ttl_s, check_ns
    FROM rpc_spans
    WHERE (SELECT count() FROM wanted WHERE NOT denied) > 0
      AND (trace_id, span_id, kind) IN (SELECT trace_id, span_id, kind FROM wanted WHERE NOT denied)
)
LIMIT 1 BY trace_id, span_id, kind;  -- a span the exporter wrote twice (a retried export) counts once

CREATE TABLE denials_base ENGINE = Memory AS
WITH
issues AS (  -- the first issuance span of each denied call's token
    SELECT jit_token_id, argMin(domain, start_ns) AS issuer_domain, argMin(jit_token_sub, start_ns) AS sub,
           argMin(jit_grant_id, start_ns) AS grant_id, argMin(jit_grant_start, start_ns) AS grant_start,
           argMin(jit_grant_end, start_ns) AS grant_end
    FROM rpc_spans
    WHERE name = 'jit.issue' AND jit_token_id IS NOT NULL
      AND jit_token_id IN (SELECT jit_token_id FROM denial_ends WHERE jit_token_id IS NOT NULL)
    GROUP BY jit_token_id
),
joined AS (
    SELECT
        calls.trace_id AS trace_id,
        coalesce(calls.server_span_id, calls.client_span_id) AS span_id,
        calls.server_span_id AS server_span_id, calls.client_span_id AS client_span_id,
        s.span_id IS NOT NULL AS has_server,
        c.span_id IS NOT NULL AS has_client,
        coalesce(s.rpc_service, c.rpc_service, s.service) AS service,
        coalesce(s.rpc_method, c.rpc_method, s.name, c.name) AS method,
        coalesce(s.jit_token_sub, c.jit_token_sub, i.sub) AS principal,
        coalesce(s.grpc_status, c.grpc_status) AS status_code,
        if(s.grpc_status IS NOT NULL, s.grpc_status_attribute, c.grpc_status_attribute) AS status_attribute,
        fromUnixTimestamp64Micro(intDiv(coalesce(s.start_ns, c.start_ns), 1000)) AS time,
        s.service AS server_service, c.service AS client_service,
        s.domain AS server_domain, c.domain AS client_domain,
        s.start_ns AS server_start_ns, c.start_ns AS client_start_ns,
        coalesce(s.jit_denial_reason, c.jit_denial_reason) AS denial_reason,
        coalesce(s.jit_token_id, c.jit_token_id) AS token_id,
        s.jit_token_present AS server_token_present, c.jit_token_present AS client_token_present,
        s.jit_token_verdict AS verdict,
        coalesce(s.jit_token_iat, c.jit_token_iat) AS token_iat,
        coalesce(s.jit_token_nbf, c.jit_token_nbf) AS token_nbf,
        coalesce(s.jit_token_exp, c.jit_token_exp) AS token_exp,
        s.jit_token_ttl_s AS server_ttl_s, s.jit_token_age_s AS server_age_s,
        c.jit_token_ttl_s AS client_ttl_s, c.jit_token_age_s AS client_age_s,
        c.jit_token_refreshed AS client_refreshed,
        s.jit_auth_wait_s AS wait_s,
        coalesce(s.jit_grant_id, c.jit_grant_id, i.grant_id) AS grant_id,
        coalesce(s.jit_grant_start, c.jit_grant_start, i.grant_start) AS grant_start,
        coalesce(s.jit_grant_end, c.jit_grant_end, i.grant_end) AS grant_end,
        s.jit_policy_decision AS policy_decision, s.jit_policy_engine AS policy_engine,
        s.jit_policy_id AS policy_id, s.jit_policy_version AS policy_version, s.jit_policy_rule AS policy_rule,
        s.jit_policy_required AS policy_required,
        JSONExtract(coalesce(s.jit_policy_granted, ''), 'Array(String)') AS policy_granted,
        s.jit_policy_granted IS NOT NULL AS policy_granted_known,
        i.jit_token_id IS NOT NULL AS has_issue,
        s.check_events AS stream_checks,
        s.check_verdict AS check_verdict,
        s.check_ttl_s AS check_ttl_s,
        s.check_ns AS check_ns,
        -- the server's local clock at the check: exp - ttl is exactly the "now" its verifier used
        coalesce(s.jit_token_exp - s.jit_token_ttl_s, s.jit_token_iat + s.jit_token_age_s,
                 s.start_ns / 1e9 + coalesce(s.jit_auth_wait_s, 0)) AS server_check_local_s
    FROM denied_calls AS calls
    LEFT JOIN (SELECT * FROM denial_ends WHERE kind = 'SERVER') AS s
           ON s.trace_id = calls.trace_id AND s.span_id = calls.server_span_id
    LEFT JOIN (SELECT * FROM denial_ends WHERE kind = 'CLIENT') AS c
           ON c.trace_id = calls.trace_id AND c.span_id = calls.client_span_id
    LEFT JOIN issues AS i ON i.jit_token_id = coalesce(s.jit_token_id, c.jit_token_id)
),
late AS (  -- a stream denied on a later message: that check decided, not the one at the stream's start
    SELECT * REPLACE (
        if(late_check, check_verdict, verdict) AS verdict,
        if(late_check, check_ttl_s, server_ttl_s) AS server_ttl_s,
        if(late_check, NULL, wait_s) AS wait_s,
        if(late_check, coalesce(token_exp - check_ttl_s, check_ns / 1e9), server_check_local_s) AS server_check_local_s)
    FROM (SELECT *, coalesce(check_verdict != 'valid' AND coalesce(verdict, 'valid') = 'valid', false) AS late_check
          FROM joined)
),
-- Each host's offset at the call's instant: the segment holding the call's time on that host's own clock, as
-- queries/steps/denials.sql finds it (each segment from its first reading, lowered to the least of the later ones').
-- The join is on the host alone, then the range test keeps the one segment the reading falls in: the ranges cover
-- the whole line (the first from -inf, the last to +inf), so a host with segments keeps exactly one row per call.
segment_starts AS (
    SELECT domain, reference, window_start, offset_s, rate_ppm * 1e-6 AS rate, offset_s - lower_s AS below_s,
           upper_s - offset_s AS above_s,
           (toUnixTimestamp64Micro(window_start) + toUnixTimestamp64Micro(window_end)) / 2e6 AS mid_s,
           row_number() OVER (PARTITION BY domain ORDER BY window_start) = 1 AS is_first,
           toUnixTimestamp64Micro(window_start) / 1e6 + offset_s
           + rate_ppm * 1e-6 * (toUnixTimestamp64Micro(window_start) - toUnixTimestamp64Micro(window_end)) / 2e6
               AS start_local_s
    FROM clock_offsets
),
segment_froms AS (
    SELECT *, if(is_first, -inf,
                 min(start_local_s) OVER (PARTITION BY domain ORDER BY window_start
                                          ROWS BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING)) AS from_local_s
    FROM segment_starts
),
offset_segments AS (
    SELECT domain, reference, offset_s, rate, below_s, above_s, mid_s, from_local_s,
           leadInFrame(toNullable(from_local_s)) OVER (PARTITION BY domain ORDER BY window_start
                                                      ROWS BETWEEN CURRENT ROW AND 1 FOLLOWING) AS until_local_s
    FROM segment_froms
),
located AS (
    SELECT *, coalesce(server_start_ns / 1e9, -inf) AS server_local_s,
              coalesce(client_start_ns / 1e9, -inf) AS client_local_s
    FROM late
),
with_server AS (
    SELECT j.*,
           so.offset_s + if(isFinite(j.server_local_s), so.rate * (j.server_local_s - so.offset_s - so.mid_s), 0)
               AS server_offset_s,
           so.below_s AS server_below_s, so.above_s AS server_above_s, so.reference AS server_reference
    FROM located AS j
    LEFT JOIN offset_segments AS so ON so.domain = j.server_domain
    WHERE so.domain IS NULL
       OR (j.server_local_s >= so.from_local_s AND (so.until_local_s IS NULL OR j.server_local_s < so.until_local_s))
),
with_segments AS (  -- a call without a time takes the host's first segment, at its middle
    SELECT j.*,
           co.offset_s + if(isFinite(j.client_local_s), co.rate * (j.client_local_s - co.offset_s - co.mid_s), 0)
               AS client_offset_s,
           co.below_s AS client_below_s, co.above_s AS client_above_s, co.reference AS client_reference
    FROM with_server AS j
    LEFT JOIN offset_segments AS co ON co.domain = j.client_domain
    WHERE co.domain IS NULL
       OR (j.client_local_s >= co.from_local_s AND (co.until_local_s IS NULL OR j.client_local_s < co.until_local_s))
)
SELECT * EXCEPT (server_local_s, client_local_s, server_below_s, server_above_s, client_below_s, client_above_s),
       server_offset_s - server_below_s AS server_lower_s, server_offset_s + server_above_s AS server_upper_s,
       greatest(server_below_s, server_above_s) AS server_error_s,
       client_offset_s - client_below_s AS client_lower_s, client_offset_s + client_above_s AS client_upper_s,
       greatest(client_below_s, client_above_s) AS client_error_s
FROM with_segments;

CREATE TABLE denials ENGINE = Memory AS
WITH
allows AS (  -- allowed calls of the denied principals per method, version and time bucket of one version window
    SELECT jit_token_sub AS principal, rpc_service, rpc_method, jit_policy_version AS version,
           min(start_ns) AS first_ns, max(start_ns) AS last_ns
    FROM rpc_spans
    WHERE kind = 'SERVER' AND jit_policy_decision = 'allow' AND jit_policy_version IS NOT NULL
      AND jit_token_sub IS NOT NULL
      AND jit_token_sub IN (SELECT principal FROM denials_base WHERE policy_decision = 'deny' AND principal IS NOT NULL)
    GROUP BY principal, rpc_service, rpc_method, version,
             intDiv(start_ns, toInt64(toFloat64({{jitrace_version_window_s}}) * 1e9))
),
skew AS (
    SELECT d.trace_id AS trace_id, d.span_id AS span_id, arraySort(groupUniqArray(a.version)) AS allowed_versions
    FROM denials_base AS d
    INNER JOIN allows AS a
       ON a.principal = d.principal AND isNotDistinctFrom(a.rpc_service, d.service) AND a.rpc_method = d.method
    WHERE d.policy_decision = 'deny' AND a.version != d.policy_version
      AND a.last_ns >= d.server_start_ns - toFloat64({{jitrace_version_window_s}}) * 1e9
      AND a.first_ns <= d.server_start_ns + toFloat64({{jitrace_version_window_s}}) * 1e9
    GROUP BY d.trace_id, d.span_id
)
SELECT d.*, skew.allowed_versions AS allowed_versions
FROM denials_base AS d
LEFT JOIN skew ON skew.trace_id = d.trace_id AND skew.span_id = d.span_id;

DROP TABLE denial_ends;
DROP TABLE denials_base;
