-- cause_summary: one row per cause found: count, share, mean confidence and the fix.
-- Why: the terminal table, report.html and summary.json all read this small table.
SELECT
    cause,
    count(*) AS denials,
    count(*) / sum(count(*)) OVER () AS share,
    avg(confidence) AS mean_confidence,
    mode(fix) AS fix
FROM attributions
GROUP BY cause
ORDER BY denials DESC, cause ASC
