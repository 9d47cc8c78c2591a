-- cause_summary (ClickHouse): reads `attributions`; one row per cause found: count, share, mean confidence and the
-- fix (the most frequent one), as queries/steps/cause_summary.sql.
CREATE TABLE cause_summary ENGINE = Memory AS
SELECT
    cause,
    count() AS denials,
    count() / sum(count()) OVER () AS share,
    avg(confidence) AS mean_confidence,
    argMax(fix, fix_count) AS fix
FROM (SELECT cause, confidence, fix, count() OVER (PARTITION BY cause, fix) AS fix_count FROM attributions)
GROUP BY cause
ORDER BY denials DESC, cause;
