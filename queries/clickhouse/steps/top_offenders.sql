-- top_offenders (ClickHouse): reads `attributions`; per cause the 5 most frequent services, methods and principals
-- (dimension, value, denials, rank), as queries/steps/top_offenders.sql.
CREATE TABLE top_offenders ENGINE = Memory AS
WITH dims AS (
    SELECT cause, 'service' AS dimension, service AS value FROM attributions
    UNION ALL SELECT cause, 'method', method FROM attributions
    UNION ALL SELECT cause, 'principal', principal FROM attributions
),
counted AS (
    SELECT cause, dimension, coalesce(value, '(unknown)') AS value, count() AS denials
    FROM dims GROUP BY cause, dimension, coalesce(value, '(unknown)')
)
SELECT * FROM (
    SELECT *, row_number() OVER (PARTITION BY cause, dimension ORDER BY denials DESC, value) AS rank
    FROM counted
)
WHERE rank <= 5
ORDER BY cause, dimension, rank;
