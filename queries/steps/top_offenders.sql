-- top_offenders: per cause the 5 most frequent services, methods and principals (dimension, value, denials, rank).
-- Why: "who is hit, and by what" is the first question after "why"; the terminal table and the report show it.
WITH dims AS (
    SELECT cause, 'service' AS dimension, service AS value FROM attributions
    UNION ALL SELECT cause, 'method' AS dimension, method AS value FROM attributions
    UNION ALL SELECT cause, 'principal' AS dimension, principal AS value FROM attributions
),
counted AS (
    SELECT cause, dimension, coalesce(value, '(unknown)') AS value, count(*) AS denials
    FROM dims GROUP BY ALL
)
SELECT * FROM (
    SELECT *, row_number() OVER (PARTITION BY cause, dimension ORDER BY denials DESC, value ASC) AS rank
    FROM counted
) AS ranked
WHERE rank <= 5
ORDER BY cause, dimension, rank
