-- attributions (ClickHouse): reads `denials`, `denial_logs`, `clock_offsets`, `rules`, `fixes`; one cause per denied
-- call. The rules, their order and evidence are queries/steps/attributions.sql's (whose comments explain each), the
-- confidences and fixes the seeds' (queries/seeds/rules.csv, fixes.csv); what differs is this dialect:
-- - DuckDB's round() is half away from zero, ClickHouse's round() of a Float64 is banker's: `round_away` below, and
--   `round_to`, a rounding to n digits as DuckDB does it (of the exact decimal value; the input when not finite);
-- - DuckDB's median interpolates between the two middle values: quantileExactInclusive(0.5) does the same (the
--   plain median() of ClickHouse is approximate);
-- - an array cannot be NULL: an empty list stands for DuckDB's NULL one (allowed_versions, log_lines, missing), and
--   a member of the evidence that DuckDB leaves out for NULL is left out here for []; jit.policy.granted keeps its
--   presence in policy_granted_known;
-- - the evidence is JSON text built member by member (toJSONString of each value, NULL members left out), as
--   concat_ws does in DuckDB: the same members in the same order; numbers in ClickHouse's shortest form.
CREATE TABLE attributions ENGINE = Memory AS
WITH
    y -> trunc(y) + if(abs(y - trunc(y)) >= 0.5, sign(y), 0) AS round_away,
    -- round(value, n) as DuckDB does it: the exact value of value * 10^n rounded half away from zero, then / 10^n. The
    -- product in doubles can land on a half the exact one is not (-15.7221223745 * 1e9 = -15722122374.5): its error,
    -- exact by Dekker's splitting of both factors, decides those ties.
    a -> (134217729.0 * a) - ((134217729.0 * a) - a) AS split_high,
    (a, b, p) -> ((split_high(a) * split_high(b) - p) + split_high(a) * (b - split_high(b))
                  + (a - split_high(a)) * split_high(b)) + (a - split_high(a)) * (b - split_high(b)) AS product_error,
    (y, err) -> trunc(y) + if(abs(y - trunc(y)) > 0.5
                              OR (abs(y - trunc(y)) = 0.5 AND (err = 0 OR sign(err) = sign(y))), sign(y), 0)
        AS round_half,
    (value, scale) -> if(isFinite(round_half(value * scale, product_error(value, scale, value * scale)) / scale),
                         round_half(value * scale, product_error(value, scale, value * scale)) / scale, value)
        AS round_to,
    (name, value) -> concat('"', name, '":', toJSONString(value)) AS evidence_member,
log_evidence AS (  -- per denial: its first lines, and the decisive pattern (id-joined first, then by ordinal)
    SELECT denial_trace_id AS log_trace_id, denial_span_id AS log_span_id, count() AS log_count,
           arraySlice(arrayMap(x -> x.2, arraySort(groupArray((at_ns, line)))), 1, 5) AS log_lines,
           countIf(pattern_name IS NOT NULL) > 0 AS has_pattern,
           if(has_pattern, argMinIf(pattern_name, (matched_by != 'trace', pattern_ordinal, at_ns),
                                    pattern_name IS NOT NULL), NULL) AS pattern_name,
           if(has_pattern, argMinIf(pattern_cause, (matched_by != 'trace', pattern_ordinal, at_ns),
                                    pattern_name IS NOT NULL), NULL) AS pattern_cause,
           if(has_pattern, argMinIf(pattern_confidence, (matched_by != 'trace', pattern_ordinal, at_ns),
                                    pattern_name IS NOT NULL), NULL) AS pattern_confidence,
           if(has_pattern, argMinIf(line, (matched_by != 'trace', pattern_ordinal, at_ns),
                                    pattern_name IS NOT NULL), NULL) AS pattern_line
    FROM denial_logs
    GROUP BY denial_trace_id, denial_span_id
),
params AS (
    SELECT toFloat64({{jitrace_leeway_s}}) AS leeway_s,
           -- where most clocks agree: the median over hosts of each host's median offset (0 without offsets)
           (SELECT if(count() > 0, quantileExactInclusive(0.5)(o), 0)
            FROM (SELECT quantileExactInclusive(0.5)(offset_s) AS o FROM clock_offsets GROUP BY domain)) AS consensus_s
),
f AS (
    SELECT
        d.*,
        params.leeway_s AS leeway_s, params.consensus_s AS consensus_s,
        coalesce(d.server_offset_s, 0) AS o_s,
        coalesce(d.client_offset_s, 0) AS o_c,
        coalesce(d.server_lower_s, d.server_offset_s, 0) AS lo_s,
        coalesce(d.server_upper_s, d.server_offset_s, 0) AS up_s,
        coalesce(d.client_lower_s, d.client_offset_s, 0) AS lo_c,
        coalesce(d.client_upper_s, d.client_offset_s, 0) AS up_c,
        -- the verdict: the server's own, else what the denial's ErrorInfo reason implies, else the client's view
        coalesce(d.verdict,
                 multiIf(d.denial_reason = 'TOKEN_MISSING', 'missing', d.denial_reason = 'TOKEN_INVALID', 'malformed',
                         d.denial_reason = 'TOKEN_EXPIRED', 'expired',
                         d.denial_reason = 'TOKEN_NOT_YET_VALID', 'not_yet_valid', NULL),
                 if(d.client_token_present = false, 'missing', NULL)) AS v,
        multiIf(d.verdict IS NOT NULL, 'server', d.denial_reason IS NOT NULL, 'denial_reason',
                d.client_token_present = false, 'client', NULL) AS verdict_source,
        d.client_ttl_s + coalesce(d.client_offset_s, 0) AS ttl_send_true_s,
        d.server_ttl_s + coalesce(d.server_offset_s, 0) AS ttl_check_true_s,
        d.server_ttl_s + coalesce(d.wait_s, 0) + coalesce(d.server_offset_s, 0) AS ttl_arrival_true_s,
        coalesce(d.server_check_local_s, d.client_start_ns / 1e9) AS check_local_s,
        if(d.has_server, d.server_check_local_s - coalesce(d.server_offset_s, 0),
           d.client_start_ns / 1e9 - coalesce(d.client_offset_s, 0)) AS check_true_s,
        CAST(arrayFilter(m -> m IS NOT NULL, [
            if(NOT d.has_server, 'server span (server not traced)', NULL),
            if(d.has_server AND d.verdict IS NULL AND d.policy_decision IS NULL,
               'jit attributes on the server span (server not instrumented)', NULL),
            if(NOT d.has_client, 'client span (client not traced)', NULL),
            if(d.has_client AND d.client_ttl_s IS NULL AND d.client_token_present IS NULL,
               'jit attributes on the client span (client not instrumented)', NULL),
            if(d.server_reference = 'consensus' OR d.client_reference = 'consensus',
               'issuer spans (offsets are relative to the consensus of all clocks)', NULL),
            if(d.has_server AND d.has_client AND d.server_domain != d.client_domain
               AND (d.server_offset_s IS NULL OR d.client_offset_s IS NULL), 'clock offsets of the two hosts', NULL)
        ]) AS Array(String)) AS missing,
        e.log_count AS log_count, e.log_lines AS log_lines, e.pattern_name AS pattern_name,
        e.pattern_cause AS pattern_cause, e.pattern_confidence AS pattern_confidence, e.pattern_line AS pattern_line
    FROM denials AS d
    CROSS JOIN params
    LEFT JOIN log_evidence AS e ON e.log_trace_id = d.trace_id AND e.log_span_id = d.span_id
),
g AS (
    SELECT
        f.*,
        grant_start IS NOT NULL AND grant_end IS NOT NULL AS grant_known,
        check_true_s BETWEEN grant_start AND grant_end AS grant_active_true,
        v IS NULL OR v = 'valid' AS token_ok
    FROM f
),
bounded AS (  -- the decisions that depend on an offset, taken over its whole bound (sure) and by its estimate alone
    SELECT
        g.*,
        server_offset_s IS NOT NULL AND (lo_s > leeway_s OR up_s < -leeway_s) AS server_off_sure,
        server_offset_s IS NOT NULL AND abs(o_s) > leeway_s AS server_off_est,
        client_offset_s IS NOT NULL AND (lo_c > leeway_s OR up_c < -leeway_s) AS client_off_sure,
        client_offset_s IS NOT NULL AND abs(o_c) > leeway_s AS client_off_est,
        check_true_s - (up_s - o_s) AS check_true_min_s, check_true_s + (o_s - lo_s) AS check_true_max_s,
        (policy_decision = 'deny' OR denial_reason = 'GRANT_NOT_ACTIVE')
            AND (check_local_s < grant_start - leeway_s OR check_local_s > grant_end + leeway_s) AS grant_denied_locally
    FROM g
),
judged AS (
    SELECT
        bounded.*,
        v = 'expired' AND server_off_est AND ttl_check_true_s >= -leeway_s AS expired_flip_est,
        v = 'not_yet_valid' AND server_off_est AND check_true_s + leeway_s >= token_nbf AS nyv_flip_est,
        token_ok AND grant_known AND server_off_est AND grant_denied_locally
            AND check_true_s >= grant_start AND check_true_s <= grant_end AS grant_flip_est,
        v = 'expired' AND client_off_est AND client_ttl_s > 0 AND ttl_send_true_s < 0 AS client_flip_est,
        v = 'expired' AND server_off_sure AND server_ttl_s + lo_s >= -leeway_s AS expired_flip,
        v = 'not_yet_valid' AND server_off_sure AND check_true_min_s + leeway_s >= token_nbf AS nyv_flip,
        token_ok AND grant_known AND server_off_sure AND grant_denied_locally
            AND check_true_min_s >= grant_start AND check_true_max_s <= grant_end AS grant_flip,
        v = 'expired' AND client_off_sure AND client_ttl_s > 0 AND client_ttl_s + up_c < 0 AS client_flip
    FROM bounded
),
ruled AS (
    SELECT
        judged.*,
        multiIf(
            v = 'missing' AND verdict_source != 'client', 'verdict_missing',
            v = 'missing', 'client_sent_no_token',
            v IN ('malformed', 'bad_signature', 'bad_audience', 'bad_issuer'), 'verdict_invalid',
            expired_flip, 'server_clock_expired_flip',
            nyv_flip, 'server_clock_not_yet_valid_flip',
            grant_flip, 'server_clock_grant_flip',
            client_flip, 'client_clock_hid_expiry',
            v = 'expired' AND ttl_send_true_s < 0, 'expired_before_send',
            v = 'expired' AND wait_s > 0 AND ttl_arrival_true_s >= 0 AND ttl_check_true_s < 0, 'expired_during_wait',
            v = 'expired' AND ttl_send_true_s >= 0 AND (ttl_arrival_true_s < 0 OR server_ttl_s IS NULL),
                'expired_in_flight',
            v = 'expired' AND client_ttl_s IS NULL AND (ttl_arrival_true_s < 0 OR server_ttl_s IS NULL),
                'expired_without_client_evidence',
            token_ok AND grant_known AND NOT grant_active_true, 'check_outside_grant',
            token_ok AND NOT grant_known AND denial_reason = 'GRANT_NOT_ACTIVE', 'grant_reason_only',
            token_ok AND policy_decision = 'deny' AND notEmpty(allowed_versions), 'allowed_under_other_version',
            token_ok AND (policy_decision = 'deny' OR denial_reason = 'PERMISSION_MISSING')
                AND policy_required IS NOT NULL AND NOT has(policy_granted, assumeNotNull(policy_required)),
                'permission_not_granted',
            token_ok AND policy_required IS NULL AND denial_reason = 'PERMISSION_MISSING', 'permission_reason_only',
            'undecided') AS span_rule
    FROM judged
),
doubted AS (  -- what the offsets' bounds leave open (evidence.offset_uncertain)
    SELECT ruled.*, CAST(arrayFilter(m -> m IS NOT NULL, [
        if(span_rule NOT LIKE '%clock%' AND (expired_flip_est OR nyv_flip_est OR grant_flip_est OR client_flip_est),
           'clock_drift by the offset estimate, not over its whole bound', NULL),
        if(span_rule IN ('expired_before_send', 'expired_in_flight') AND client_offset_s IS NOT NULL
           AND client_ttl_s + lo_c < 0 AND client_ttl_s + up_c >= 0,
           'true ttl at send either side of 0 within the client offset''s bound', NULL),
        if(span_rule IN ('expired_during_wait', 'expired_in_flight') AND server_offset_s IS NOT NULL
           AND server_ttl_s + coalesce(wait_s, 0) + lo_s < 0 AND server_ttl_s + coalesce(wait_s, 0) + up_s >= 0,
           'true ttl at arrival either side of 0 within the server offset''s bound', NULL),
        if(span_rule = 'check_outside_grant' AND server_offset_s IS NOT NULL
           AND check_true_min_s <= grant_end AND check_true_max_s >= grant_start,
           'true check time inside the grant within the server offset''s bound', NULL)
    ]) AS Array(String)) AS uncertain
    FROM ruled
),
logged AS (  -- no span rule decided: a log pattern may
    SELECT *, span_rule = 'undecided' AND pattern_name IS NOT NULL AS by_log,
           if(span_rule = 'undecided' AND pattern_name IS NOT NULL, 'log_pattern:' || pattern_name, span_rule) AS rule
    FROM doubted
),
named AS (  -- which clock drifted: the one farther from where most clocks agree
    SELECT logged.*,
        multiIf(rule LIKE 'server_clock%',
                if(server_reference != 'consensus' AND abs(consensus_s) > abs(o_s - consensus_s),
                   server_reference, server_domain),
                rule LIKE 'client_clock%',
                if(client_reference != 'consensus' AND abs(consensus_s) > abs(o_c - consensus_s),
                   client_reference, client_domain),
                NULL) AS drifting_host,
        -- every member in seconds rounded at once: round_to written out once, over the array, not at each member
        arrayMap(v -> round_to(v, 1e9), [
            if(drifting_host IS NOT NULL, consensus_s, NULL),
            server_offset_s,
            server_error_s,
            server_lower_s,
            server_upper_s,
            client_offset_s,
            client_error_s,
            client_lower_s,
            client_upper_s,
            leeway_s,
            client_ttl_s,
            ttl_send_true_s,
            server_ttl_s,
            ttl_check_true_s,
            if(server_ttl_s IS NOT NULL, ttl_arrival_true_s, NULL),
            wait_s,
            token_iat,
            token_nbf,
            token_exp,
            check_local_s,
            check_true_s,
            grant_start,
            grant_end]) AS rounded_seconds
    FROM logged
)
SELECT
    r.trace_id AS trace_id, r.span_id AS span_id, r.service AS service, r.method AS method,
    r.principal AS principal, r.status_code AS status_code,
    -- when it happened in the reference clock: the reporting span's start minus its host's offset
    fromUnixTimestamp64Micro(toUnixTimestamp64Micro(r.time)
        - toInt64(round_away(coalesce(if(r.has_server, r.server_offset_s, r.client_offset_s), 0) * 1e6))) AS time,
    if(r.by_log, r.pattern_cause, rules.cause) AS cause, r.rule AS rule,
    round_to(if(r.by_log, r.pattern_confidence, rules.base_confidence)
             * pow(0.8, length(r.missing) + if(notEmpty(r.uncertain), 1, 0)), 1e3) AS confidence,
    '{' || arrayStringConcat(arrayFilter(m -> m IS NOT NULL, [
        evidence_member('status_attribute', r.status_attribute),
        evidence_member('verdict', r.v), evidence_member('verdict_source', r.verdict_source),
        evidence_member('denial_reason', r.denial_reason), evidence_member('drifting_host', r.drifting_host),
        evidence_member('consensus_offset_s', r.rounded_seconds[1]),
        evidence_member('server_host', r.server_domain), evidence_member('client_host', r.client_domain),
        evidence_member('server_offset_s', r.rounded_seconds[2]),
        evidence_member('server_offset_error_s', r.rounded_seconds[3]),
        evidence_member('server_offset_lower_s', r.rounded_seconds[4]),
        evidence_member('server_offset_upper_s', r.rounded_seconds[5]),
        evidence_member('client_offset_s', r.rounded_seconds[6]),
        evidence_member('client_offset_error_s', r.rounded_seconds[7]),
        evidence_member('client_offset_lower_s', r.rounded_seconds[8]),
        evidence_member('client_offset_upper_s', r.rounded_seconds[9]),
        evidence_member('offset_reference', coalesce(r.server_reference, r.client_reference)),
        evidence_member('leeway_s', r.rounded_seconds[10]), evidence_member('ttl_at_send_s', r.rounded_seconds[11]),
        evidence_member('ttl_at_send_true_s', r.rounded_seconds[12]),
        evidence_member('ttl_at_check_s', r.rounded_seconds[13]),
        evidence_member('ttl_at_check_true_s', r.rounded_seconds[14]),
        evidence_member('ttl_at_arrival_true_s', r.rounded_seconds[15]),
        evidence_member('wait_s', r.rounded_seconds[16]),
        evidence_member('late_stream_check', if(r.late_check, true, NULL)),
        evidence_member('stream_checks', r.stream_checks), evidence_member('token_id', r.token_id),
        evidence_member('token_iat', r.rounded_seconds[17]), evidence_member('token_nbf', r.rounded_seconds[18]),
        evidence_member('token_exp', r.rounded_seconds[19]), evidence_member('client_refreshed', r.client_refreshed),
        evidence_member('check_time_s', r.rounded_seconds[20]),
        evidence_member('check_true_time_s', r.rounded_seconds[21]),
        evidence_member('grant_id', r.grant_id), evidence_member('grant_start', r.rounded_seconds[22]),
        evidence_member('grant_end', r.rounded_seconds[23]), evidence_member('policy_decision', r.policy_decision),
        evidence_member('policy_engine', r.policy_engine), evidence_member('policy_id', r.policy_id),
        evidence_member('policy_version', r.policy_version), evidence_member('policy_rule', r.policy_rule),
        if(notEmpty(r.allowed_versions), evidence_member('allowed_versions', r.allowed_versions), NULL),
        evidence_member('required', r.policy_required),
        if(r.policy_granted_known, evidence_member('granted', r.policy_granted), NULL),
        if(notEmpty(r.log_lines), evidence_member('logs', r.log_lines), NULL),
        evidence_member('log_count', r.log_count),
        evidence_member('log_pattern', if(r.by_log, r.pattern_name, NULL)),
        evidence_member('log_line', if(r.by_log, r.pattern_line, NULL)),
        if(notEmpty(r.uncertain), evidence_member('offset_uncertain', r.uncertain), NULL),
        if(notEmpty(r.missing), evidence_member('missing', r.missing), NULL)
    ]), ',') || '}' AS evidence,
    multiIf(r.by_log, fixes.fix || ' (decided from logs only: instrument the service for certainty)',
            rules.cause = 'clock_drift',
            'run NTP/chrony on host ' || coalesce(r.drifting_host, '?') || '; consider a verifier leeway',
            rules.cause = 'unexplained' AND notEmpty(r.missing),
            'instrument the missing side: ' || arrayStringConcat(r.missing, '; '),
            fixes.fix) AS fix,
    r.server_service AS server_service, r.client_service AS client_service, r.server_domain AS server_domain,
    r.client_domain AS client_domain, r.client_span_id AS client_span_id, r.server_span_id AS server_span_id,
    r.time AS host_time
FROM named AS r
INNER JOIN rules ON rules.rule = r.span_rule
INNER JOIN fixes ON fixes.cause = if(r.by_log, r.pattern_cause, rules.cause)
ORDER BY time, trace_id;
