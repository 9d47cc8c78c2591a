-- 70_summary: reads `attributions`; produces `cause_summary` (one row per cause found: count, share, mean
-- confidence, the fix) and `top_offenders` (per cause, the 5 most frequent services, methods and principals).
-- Why: the terminal table, report.html and summary.json all read these two small tables.
CREATE OR REPLACE TABLE cause_summary AS
SELECT
    cause,
    count(*) AS denials,
    count(*) / sum(count(*)) OVER () AS share,
    avg(confidence) AS mean_confidence,
    mode(fix) AS fix
FROM attributions
GROUP BY cause
ORDER BY denials DESC, cause;

CREATE OR REPLACE TABLE top_offenders AS
WITH dims AS (
    SELECT cause, 'service' AS dimension, service AS value FROM attributions
    UNION ALL SELECT cause, 'method', method FROM attributions
    UNION ALL SELECT cause, 'principal', principal FROM attributions
),
counted AS (
    SELECT cause, dimension, coalesce(value, '(unknown)') AS value, count(*) AS denials
    FROM dims GROUP BY ALL
)
SELECT * FROM (
    SELECT *, row_number() OVER (PARTITION BY cause, dimension ORDER BY denials DESC, value) AS rank
    FROM counted
)
WHERE rank <= 5
ORDER BY cause, dimension, rank;
