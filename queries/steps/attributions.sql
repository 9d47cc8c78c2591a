-- attributions: one cause per denied call (DESIGN.md).
-- Why: the rules are tried in DESIGN.md's order and the first that holds decides; each row names the rule, a
-- confidence, the evidence (JSON: the numbers the rules looked at, in seconds; "true" = corrected to the reference
-- clock, the issuer's) and the fix. A clock's offset is its reading minus the reference's, so in true time a ttl
-- measured on a host becomes ttl + offset and a local instant becomes instant - offset.
-- Leeway: the verifier's tolerance is not on the spans, so getvariable('jitrace_leeway_s') supplies it; default 0 s
-- (PyJWT's default leeway). Offsets are the clock model's at the call's instant, with their bound [lower, upper]
-- (denials). clock_drift needs the whole bound beyond the leeway and the decision to flip for every offset in
-- it, so an exact clock and a token expiring on the dot never read as drift. When the estimate alone would decide
-- otherwise than the whole bound (drift by the estimate but not by the bound, or a true ttl or check time that is
-- either side of its limit within the bound), the rule the bound allows decides, evidence.offset_uncertain says
-- why, and the confidence is multiplied by 0.8.
-- Evidence a row lacks is listed in evidence.missing; each missing item multiplies the confidence by 0.8.
-- Logs (denial_logs) are weaker evidence: only a denial no span rule decides (rule `undecided`) takes the cause
-- of the log pattern its lines matched, with rule `log_pattern:<name>` and the pattern's confidence (<= 0.6 in
-- the built-in file, times 0.8 for a line joined by time); the matched line is evidence.log_line. Every denial
-- shows its first log lines in evidence.logs.
-- Stored in jitrace.duckdb in (time, trace_id) order, which the output files keep (outputs.tables_written). Its text
-- is compressed with zstd (steps.toml: compression): DuckDB otherwise tries every method on the evidence (JSON text,
-- 150 MB at 200k denials) before it picks one. Numeric columns keep DuckDB's choice (zstd is for text only).
WITH log_evidence AS (  -- per denial: its first lines, and the decisive pattern (id-joined first, then by ordinal)
    SELECT denial_trace_id AS trace_id, denial_span_id AS span_id, count(*) AS log_count,
           list(line ORDER BY at_ns, line)[1:5] AS log_lines,
           arg_min(pattern_name, (matched_by <> 'trace', pattern_ordinal, at_ns))
               FILTER (WHERE pattern_name IS NOT NULL) AS pattern_name,
           arg_min(pattern_cause, (matched_by <> 'trace', pattern_ordinal, at_ns))
               FILTER (WHERE pattern_name IS NOT NULL) AS pattern_cause,
           arg_min(pattern_confidence, (matched_by <> 'trace', pattern_ordinal, at_ns))
               FILTER (WHERE pattern_name IS NOT NULL) AS pattern_confidence,
           arg_min(line, (matched_by <> 'trace', pattern_ordinal, at_ns))
               FILTER (WHERE pattern_name IS NOT NULL) AS pattern_line
    FROM denial_logs
    GROUP BY ALL
),
params AS (
    SELECT coalesce(getvariable('jitrace_leeway_s'), 0)::DOUBLE AS leeway_s,
           -- where most clocks agree: the median over hosts of each host's median offset (0 without offsets)
           coalesce((SELECT median(o)
                     FROM (SELECT median(offset_s) AS o FROM clock_offsets GROUP BY domain) AS per_domain), 0)
               AS consensus_s
),
f AS (
    SELECT
        d.*,
        params.leeway_s, params.consensus_s,
        coalesce(d.server_offset_s, 0) AS o_s,
        coalesce(d.client_offset_s, 0) AS o_c,
        coalesce(d.server_lower_s, d.server_offset_s, 0) AS lo_s,
        coalesce(d.server_upper_s, d.server_offset_s, 0) AS up_s,
        coalesce(d.client_lower_s, d.client_offset_s, 0) AS lo_c,
        coalesce(d.client_upper_s, d.client_offset_s, 0) AS up_c,
        -- the verdict: the server's own, else what the denial's ErrorInfo reason implies, else the client's view
        coalesce(d.verdict,
                 CASE d.denial_reason WHEN 'TOKEN_MISSING' THEN 'missing' WHEN 'TOKEN_INVALID' THEN 'malformed'
                      WHEN 'TOKEN_EXPIRED' THEN 'expired' WHEN 'TOKEN_NOT_YET_VALID' THEN 'not_yet_valid' END,
                 CASE WHEN d.client_token_present = false THEN 'missing' END) AS v,
        CASE WHEN d.verdict IS NOT NULL THEN 'server' WHEN d.denial_reason IS NOT NULL THEN 'denial_reason'
             WHEN d.client_token_present = false THEN 'client' END AS verdict_source,
        d.client_ttl_s + coalesce(d.client_offset_s, 0) AS ttl_send_true_s,
        d.server_ttl_s + coalesce(d.server_offset_s, 0) AS ttl_check_true_s,
        d.server_ttl_s + coalesce(d.wait_s, 0) + coalesce(d.server_offset_s, 0) AS ttl_arrival_true_s,
        coalesce(d.server_check_local_s, d.client_start_ns / 1e9) AS check_local_s,
        CASE WHEN d.has_server THEN d.server_check_local_s - coalesce(d.server_offset_s, 0)
             ELSE d.client_start_ns / 1e9 - coalesce(d.client_offset_s, 0) END AS check_true_s,
        list_filter([
            CASE WHEN NOT d.has_server THEN 'server span (server not traced)' END,
            CASE WHEN d.has_server AND d.verdict IS NULL AND d.policy_decision IS NULL
                 THEN 'jit attributes on the server span (server not instrumented)' END,
            CASE WHEN NOT d.has_client THEN 'client span (client not traced)' END,
            CASE WHEN d.has_client AND d.client_ttl_s IS NULL AND d.client_token_present IS NULL
                 THEN 'jit attributes on the client span (client not instrumented)' END,
            CASE WHEN d.server_reference = 'consensus' OR d.client_reference = 'consensus'
                 THEN 'issuer spans (offsets are relative to the consensus of all clocks)' END,
            CASE WHEN d.has_server AND d.has_client AND d.server_domain <> d.client_domain
                  AND (d.server_offset_s IS NULL OR d.client_offset_s IS NULL)
                 THEN 'clock offsets of the two hosts' END
        ], LAMBDA m: m IS NOT NULL) AS missing,
        e.log_count, e.log_lines, e.pattern_name, e.pattern_cause, e.pattern_confidence, e.pattern_line
    -- two halves: a table of fewer than 122,880 rows is one row group, scanned by one thread; each half is a
    -- scan of its own, so both cores build the rows
    FROM (FROM denials WHERE rowid % 2 = 0 UNION ALL FROM denials WHERE rowid % 2 = 1) AS d
    CROSS JOIN params
    LEFT JOIN log_evidence AS e ON e.trace_id = d.trace_id AND e.span_id = d.span_id
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
        -- the check's true time over the bound: check_true_s was taken with the estimate
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
        CASE
            WHEN v = 'missing' AND verdict_source <> 'client' THEN 'verdict_missing'
            WHEN v = 'missing' THEN 'client_sent_no_token'
            WHEN v IN ('malformed', 'bad_signature', 'bad_audience', 'bad_issuer') THEN 'verdict_invalid'
            WHEN expired_flip THEN 'server_clock_expired_flip'
            WHEN nyv_flip THEN 'server_clock_not_yet_valid_flip'
            WHEN grant_flip THEN 'server_clock_grant_flip'
            WHEN client_flip THEN 'client_clock_hid_expiry'
            WHEN v = 'expired' AND ttl_send_true_s < 0 THEN 'expired_before_send'
            WHEN v = 'expired' AND wait_s > 0 AND ttl_arrival_true_s >= 0 AND ttl_check_true_s < 0
                 THEN 'expired_during_wait'
            WHEN v = 'expired' AND ttl_send_true_s >= 0 AND (ttl_arrival_true_s < 0 OR server_ttl_s IS NULL)
                 THEN 'expired_in_flight'
            WHEN v = 'expired' AND client_ttl_s IS NULL AND (ttl_arrival_true_s < 0 OR server_ttl_s IS NULL)
                 THEN 'expired_without_client_evidence'
            WHEN token_ok AND grant_known AND NOT grant_active_true THEN 'check_outside_grant'
            WHEN token_ok AND NOT grant_known AND denial_reason = 'GRANT_NOT_ACTIVE' THEN 'grant_reason_only'
            WHEN token_ok AND policy_decision = 'deny' AND len(allowed_versions) > 0
                 THEN 'allowed_under_other_version'
            WHEN token_ok AND (policy_decision = 'deny' OR denial_reason = 'PERMISSION_MISSING')
                 AND policy_required IS NOT NULL AND NOT coalesce(list_contains(policy_granted, policy_required), false)
                 THEN 'permission_not_granted'
            WHEN token_ok AND policy_required IS NULL AND denial_reason = 'PERMISSION_MISSING'
                 THEN 'permission_reason_only'
            ELSE 'undecided'
        END AS span_rule
    FROM judged
),
doubted AS (  -- what the offsets' bounds leave open (evidence.offset_uncertain)
    SELECT ruled.*, list_filter([
        CASE WHEN span_rule NOT LIKE '%clock%'
                  AND (expired_flip_est OR nyv_flip_est OR grant_flip_est OR client_flip_est)
             THEN 'clock_drift by the offset estimate, not over its whole bound' END,
        CASE WHEN span_rule IN ('expired_before_send', 'expired_in_flight') AND client_offset_s IS NOT NULL
                  AND client_ttl_s + lo_c < 0 AND client_ttl_s + up_c >= 0
             THEN 'true ttl at send either side of 0 within the client offset''s bound' END,
        CASE WHEN span_rule IN ('expired_during_wait', 'expired_in_flight') AND server_offset_s IS NOT NULL
                  AND server_ttl_s + coalesce(wait_s, 0) + lo_s < 0 AND server_ttl_s + coalesce(wait_s, 0) + up_s >= 0
             THEN 'true ttl at arrival either side of 0 within the server offset''s bound' END,
        CASE WHEN span_rule = 'check_outside_grant' AND server_offset_s IS NOT NULL
                  AND check_true_min_s <= grant_end AND check_true_max_s >= grant_start
             THEN 'true check time inside the grant within the server offset''s bound' END
    ], LAMBDA m: m IS NOT NULL) AS uncertain
    FROM ruled
),
logged AS (  -- no span rule decided: a log pattern may
    SELECT *, span_rule = 'undecided' AND pattern_name IS NOT NULL AS by_log,
           CASE WHEN span_rule = 'undecided' AND pattern_name IS NOT NULL THEN 'log_pattern:' || pattern_name
                ELSE span_rule END AS rule
    FROM doubted
),
named AS (
    -- which clock drifted: a flip shows the checking host and the issuer disagree; the one farther from where most
    -- clocks agree is named (the issuer when it alone is off: everyone else then looks skewed relative to it)
    SELECT logged.*,
        CASE WHEN rule LIKE 'server_clock%' THEN
                  CASE WHEN server_reference <> 'consensus' AND abs(consensus_s) > abs(o_s - consensus_s)
                       THEN server_reference ELSE server_domain END
             WHEN rule LIKE 'client_clock%' THEN
                  CASE WHEN client_reference <> 'consensus' AND abs(consensus_s) > abs(o_c - consensus_s)
                       THEN client_reference ELSE client_domain END
        END AS drifting_host
    FROM logged
)
SELECT
    r.trace_id, r.span_id, r.service, r.method, r.principal, r.status_code,
    -- when it happened in the reference clock: the reporting span's start minus its host's offset (UTC as far as
    -- the issuer's clock is; host_time keeps the host's own reading, which its logs share)
    r.time - to_microseconds(round(coalesce(CASE WHEN r.has_server THEN r.server_offset_s ELSE r.client_offset_s END,
                                            0) * 1e6)::BIGINT) AS time,
    CASE WHEN r.by_log THEN r.pattern_cause ELSE rules.cause END AS cause, r.rule,
    round(CASE WHEN r.by_log THEN r.pattern_confidence ELSE rules.base_confidence END
          * power(0.8, len(r.missing) + CASE WHEN len(r.uncertain) > 0 THEN 1 ELSE 0 END), 3) AS confidence,
    '{' || concat_ws(',',
        evidence_member('status_attribute', r.status_attribute),
        evidence_member('verdict', r.v), evidence_member('verdict_source', r.verdict_source),
        evidence_member('denial_reason', r.denial_reason), evidence_member('drifting_host', r.drifting_host),
        evidence_seconds('consensus_offset_s', CASE WHEN r.drifting_host IS NOT NULL THEN r.consensus_s END),
        evidence_member('server_host', r.server_domain), evidence_member('client_host', r.client_domain),
        evidence_seconds('server_offset_s', r.server_offset_s),
        evidence_seconds('server_offset_error_s', r.server_error_s),
        evidence_seconds('server_offset_lower_s', r.server_lower_s),
        evidence_seconds('server_offset_upper_s', r.server_upper_s),
        evidence_seconds('client_offset_s', r.client_offset_s),
        evidence_seconds('client_offset_error_s', r.client_error_s),
        evidence_seconds('client_offset_lower_s', r.client_lower_s),
        evidence_seconds('client_offset_upper_s', r.client_upper_s),
        evidence_member('offset_reference', coalesce(r.server_reference, r.client_reference)),
        evidence_seconds('leeway_s', r.leeway_s), evidence_seconds('ttl_at_send_s', r.client_ttl_s),
        evidence_seconds('ttl_at_send_true_s', r.ttl_send_true_s), evidence_seconds('ttl_at_check_s', r.server_ttl_s),
        evidence_seconds('ttl_at_check_true_s', r.ttl_check_true_s),
        evidence_seconds('ttl_at_arrival_true_s', CASE WHEN r.server_ttl_s IS NOT NULL THEN r.ttl_arrival_true_s END),
        evidence_seconds('wait_s', r.wait_s),
        evidence_member('late_stream_check', CASE WHEN r.late_check THEN true END),
        evidence_member('stream_checks', r.stream_checks), evidence_member('token_id', r.token_id),
        evidence_seconds('token_iat', r.token_iat), evidence_seconds('token_nbf', r.token_nbf),
        evidence_seconds('token_exp', r.token_exp), evidence_member('client_refreshed', r.client_refreshed),
        evidence_seconds('check_time_s', r.check_local_s), evidence_seconds('check_true_time_s', r.check_true_s),
        evidence_member('grant_id', r.grant_id), evidence_seconds('grant_start', r.grant_start),
        evidence_seconds('grant_end', r.grant_end), evidence_member('policy_decision', r.policy_decision),
        evidence_member('policy_engine', r.policy_engine), evidence_member('policy_id', r.policy_id),
        evidence_member('policy_version', r.policy_version), evidence_member('policy_rule', r.policy_rule),
        evidence_member('allowed_versions', r.allowed_versions), evidence_member('required', r.policy_required),
        evidence_member('granted', r.policy_granted), evidence_member('logs', r.log_lines),
        evidence_member('log_count', r.log_count),
        evidence_member('log_pattern', CASE WHEN r.by_log THEN r.pattern_name END),
        evidence_member('log_line', CASE WHEN r.by_log THEN r.pattern_line END),
        evidence_member('offset_uncertain', CASE WHEN len(r.uncertain) > 0 THEN r.uncertain END),
        evidence_member('missing', CASE WHEN len(r.missing) > 0 THEN r.missing END)
    ) || '}' AS evidence,
    CASE WHEN r.by_log THEN fixes.fix || ' (decided from logs only: instrument the service for certainty)'
         WHEN rules.cause = 'clock_drift'
         THEN 'run NTP/chrony on host ' || coalesce(r.drifting_host, '?') || '; consider a verifier leeway'
         WHEN rules.cause = 'unexplained' AND len(r.missing) > 0
         THEN 'instrument the missing side: ' || array_to_string(r.missing, '; ')
         ELSE fixes.fix END AS fix,
    r.server_service, r.client_service, r.server_domain, r.client_domain, r.client_span_id, r.server_span_id,
    r.time AS host_time
FROM named AS r
INNER JOIN rules ON rules.rule = r.span_rule
INNER JOIN fixes ON fixes.cause = CASE WHEN r.by_log THEN r.pattern_cause ELSE rules.cause END
ORDER BY time, trace_id
