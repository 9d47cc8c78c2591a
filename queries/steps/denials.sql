-- denials: one row per denied call.
-- Why: each row carries both ends' jit.* facts, the token's issuance span (`jit.issue`, tied by jit.token.id), the
-- clock offsets of both hosts at the call's instant with their bounds (the clock model's segment holding it), and
-- the policy versions under which the same principal was allowed the same method nearby in time
-- (getvariable('jitrace_version_window_s'), default 300 s): everything attributions decides with.
-- A stream whose token failed a check on a later message (span event jit.token.check) is judged by that check.
-- The denied call's log records are joined in the next step (denial_logs).
-- Read by two steps: a TEMP table (steps.toml), kept in jitrace.duckdb as a view of this query.
WITH wanted AS (  -- the spans of both ends of every denied call; `denied`: that span is a denial itself
    SELECT trace_id, server_span_id AS span_id, 'SERVER' AS kind, true AS denied
    FROM denied_calls WHERE server_span_id IS NOT NULL
    UNION ALL
    SELECT trace_id, client_span_id, 'CLIENT' AS kind, coalesce(client_denied, false) AS denied
    FROM denied_calls WHERE client_span_id IS NOT NULL
),
facts AS NOT MATERIALIZED (  -- what is read below of a span: the clock stamps and end times are among the widest
    SELECT * EXCLUDE (parent_span_id, end_ns, rpc_system, jit_token_iss, jit_token_aud, jit_policy_eval_s,
                      jit_policy_request, jit_clock_sent_ns, jit_clock_peer_sent_ns, jit_clock_received_ns,
                      jit_clock_offset_s, jit_clock_delay_s)
    FROM rpc_spans
),
ends AS MATERIALIZED (
    -- Semi joins that hash the few calls. A denied span is read with the filter on `denied`, so DuckDB skips the
    -- row groups of a facts file that hold no denial; the client of a denied server that recorded another status
    -- (rare) is looked up among all spans, and when there is none that read is skipped.
    SELECT s.* FROM facts AS s
    SEMI JOIN wanted AS w ON w.trace_id = s.trace_id AND w.span_id = s.span_id AND w.kind = s.kind AND w.denied
    WHERE s.denied
    UNION ALL
    SELECT s.* FROM facts AS s
    SEMI JOIN wanted AS w ON w.trace_id = s.trace_id AND w.span_id = s.span_id AND w.kind = s.kind AND NOT w.denied
),
denied_servers AS (SELECT * FROM ends WHERE kind = 'SERVER'),
denied_clients AS (SELECT * FROM ends WHERE kind = 'CLIENT'),
issues AS (
    SELECT jit_token_id, arg_min(domain, start_ns) AS issuer_domain, arg_min(jit_token_sub, start_ns) AS sub,
           arg_min(jit_grant_id, start_ns) AS grant_id,
           arg_min(jit_grant_start, start_ns) AS grant_start, arg_min(jit_grant_end, start_ns) AS grant_end
    FROM rpc_spans
    WHERE name = 'jit.issue' AND jit_token_id IS NOT NULL
    GROUP BY jit_token_id
),
joined AS (
    SELECT
        calls.trace_id,
        coalesce(calls.server_span_id, calls.client_span_id) AS span_id,
        calls.server_span_id, calls.client_span_id,
        s.span_id IS NOT NULL AS has_server,
        c.span_id IS NOT NULL AS has_client,
        coalesce(s.rpc_service, c.rpc_service, s.service) AS service,
        coalesce(s.rpc_method, c.rpc_method, s.name, c.name) AS method,
        coalesce(s.jit_token_sub, c.jit_token_sub, i.sub) AS principal,
        coalesce(s.grpc_status, c.grpc_status) AS status_code,
        CASE WHEN s.grpc_status IS NOT NULL THEN s.grpc_status_attribute ELSE c.grpc_status_attribute END
            AS status_attribute,  -- the convention the status was read from (span_facts.sql)
        make_timestamp(coalesce(s.start_ns, c.start_ns) // 1000) AS time,
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
        s.jit_policy_required AS policy_required, s.jit_policy_granted AS policy_granted,
        i.jit_token_id IS NOT NULL AS has_issue,
        s.check_events AS stream_checks,
        s.stream_check.attributes."jit.token.verdict" AS check_verdict,
        s.stream_check.attributes."jit.token.ttl_s" AS check_ttl_s,
        s.stream_check.time_ns AS check_ns,
        -- the server's local clock at the check: exp - ttl is exactly the "now" its verifier used
        coalesce(s.jit_token_exp - s.jit_token_ttl_s, s.jit_token_iat + s.jit_token_age_s,
                 s.start_ns / 1e9 + coalesce(s.jit_auth_wait_s, 0)) AS server_check_local_s
    FROM denied_calls AS calls
    LEFT JOIN denied_servers AS s ON s.trace_id = calls.trace_id AND s.span_id = calls.server_span_id
    LEFT JOIN denied_clients AS c ON c.trace_id = calls.trace_id AND c.span_id = calls.client_span_id
    LEFT JOIN issues AS i ON i.jit_token_id = coalesce(s.jit_token_id, c.jit_token_id)
),
late AS (  -- a stream denied on a later message: that check decided, not the one at the stream's start
    SELECT * REPLACE (
        CASE WHEN late_check THEN check_verdict ELSE verdict END AS verdict,
        CASE WHEN late_check THEN check_ttl_s ELSE server_ttl_s END AS server_ttl_s,
        CASE WHEN late_check THEN NULL ELSE wait_s END AS wait_s,
        CASE WHEN late_check THEN coalesce(token_exp - check_ttl_s, check_ns / 1e9)
             ELSE server_check_local_s END AS server_check_local_s)
    FROM (SELECT *, coalesce(check_verdict <> 'valid' AND coalesce(verdict, 'valid') = 'valid', false) AS late_check
          FROM joined) AS checked
),
-- Each host's offset at the call's instant, from its clock model (analyzer/steps/offsets.py): the segment holding the
-- call, found by the call's time on that host's own clock (each end's span start), then the segment's line and bound
-- at that instant. Segments are in the reference's clock; each starts on the host's clock at window_start plus its
-- offset there, and holds the calls from that reading to the next segment's (the first one from the beginning of
-- time, and a call without a time), so a call meets its segment in a hash join on the host with a range test among
-- that host's few segments: no sort of the calls. At a backward step a reading the host's clock showed twice goes to
-- the later segment.
-- The offset at local reading r: the segment's line at reference time r - offset (rate x offset is far below a
-- nanosecond's worth of seconds here), and its bound keeps the segment's distances below and above the line.
offset_segments AS (
    SELECT domain, reference, offset_s, rate, below_s, above_s, mid_s, from_local_s,
           lead(from_local_s) OVER (PARTITION BY domain ORDER BY window_start) AS until_local_s
    FROM (
        -- a segment's first reading, lowered to the least of the later segments' (a suffix minimum): the readings'
        -- ranges never overlap, so a call meets exactly one segment, and a reading shown twice goes to the later
        SELECT *, CASE WHEN first THEN '-infinity'::DOUBLE
                       ELSE min(start_local_s) OVER (PARTITION BY domain ORDER BY window_start
                                                     ROWS BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING) END
                  AS from_local_s
        FROM (
            SELECT domain, reference, window_start, offset_s, rate_ppm * 1e-6 AS rate, offset_s - lower_s AS below_s,
                   upper_s - offset_s AS above_s, (epoch_us(window_start) + epoch_us(window_end)) / 2e6 AS mid_s,
                   row_number() OVER (PARTITION BY domain ORDER BY window_start) = 1 AS first,
                   epoch_us(window_start) / 1e6 + offset_s
                   + rate_ppm * 1e-6 * (epoch_us(window_start) - epoch_us(window_end)) / 2e6 AS start_local_s
            FROM clock_offsets
        ) AS offsets
    ) AS segments
),
located AS (
    SELECT j.*,
           coalesce(j.server_start_ns / 1e9, '-infinity'::DOUBLE) AS server_local_s,
           coalesce(j.client_start_ns / 1e9, '-infinity'::DOUBLE) AS client_local_s
    FROM late AS j
),
with_segments AS (  -- a call without a time takes the host's first segment, at its middle
    SELECT j.* EXCLUDE (server_local_s, client_local_s),
           so.offset_s + CASE WHEN isfinite(j.server_local_s)
                              THEN so.rate * (j.server_local_s - so.offset_s - so.mid_s) ELSE 0 END AS server_offset_s,
           so.below_s AS server_below_s, so.above_s AS server_above_s, so.reference AS server_reference,
           co.offset_s + CASE WHEN isfinite(j.client_local_s)
                              THEN co.rate * (j.client_local_s - co.offset_s - co.mid_s) ELSE 0 END AS client_offset_s,
           co.below_s AS client_below_s, co.above_s AS client_above_s, co.reference AS client_reference
    FROM located AS j
    LEFT JOIN offset_segments AS so
      ON so.domain = j.server_domain AND j.server_local_s >= so.from_local_s
     AND (so.until_local_s IS NULL OR j.server_local_s < so.until_local_s)
    LEFT JOIN offset_segments AS co
      ON co.domain = j.client_domain AND j.client_local_s >= co.from_local_s
     AND (co.until_local_s IS NULL OR j.client_local_s < co.until_local_s)
),
with_offsets AS (  -- the bound at the call: [lower, upper]; error_s the larger distance from the offset to it
    SELECT * EXCLUDE (server_below_s, server_above_s, client_below_s, client_above_s),
           server_offset_s - server_below_s AS server_lower_s, server_offset_s + server_above_s AS server_upper_s,
           greatest(server_below_s, server_above_s) AS server_error_s,
           client_offset_s - client_below_s AS client_lower_s, client_offset_s + client_above_s AS client_upper_s,
           greatest(client_below_s, client_above_s) AS client_error_s
    FROM with_segments
),
allows AS (  -- allowed calls per principal, method, version and time bucket of one version window: a denial
             -- then meets a few buckets, not every allowed call (a bucket overlapping the +-window holds one inside)
    SELECT jit_token_sub AS principal, rpc_service, rpc_method, jit_policy_version AS version,
           min(start_ns) AS first_ns, max(start_ns) AS last_ns
    FROM rpc_spans
    WHERE kind = 'SERVER' AND jit_policy_decision = 'allow' AND jit_policy_version IS NOT NULL
      AND jit_token_sub IS NOT NULL
    GROUP BY principal, rpc_service, rpc_method, version,
             start_ns // (coalesce(getvariable('jitrace_version_window_s'), 300) * 1e9)::BIGINT
),
skew AS (
    SELECT d.trace_id, d.span_id, list(DISTINCT a.version ORDER BY a.version) AS allowed_versions
    FROM with_offsets AS d
    INNER JOIN allows AS a
      ON a.principal = d.principal AND a.rpc_service IS NOT DISTINCT FROM d.service AND a.rpc_method = d.method
     AND a.version <> d.policy_version
     AND a.last_ns >= d.server_start_ns - coalesce(getvariable('jitrace_version_window_s'), 300) * 1e9
     AND a.first_ns <= d.server_start_ns + coalesce(getvariable('jitrace_version_window_s'), 300) * 1e9
    WHERE d.policy_decision = 'deny'
    GROUP BY ALL
)
SELECT d.*, skew.allowed_versions
FROM with_offsets AS d
LEFT JOIN skew ON skew.trace_id = d.trace_id AND skew.span_id = d.span_id
