-- denied_calls (ClickHouse): reads `rpc_spans`, `pairs`; one row per denied call: its trace, the span ids of its
-- two ends (NULL for an end that was not traced) and whether the client's own span is a denial, as
-- queries/steps/denied_calls.sql: reported by the SERVER span when the server was traced, else by the
-- CLIENT span. The NOT EXISTS of the DuckDB step are NOT IN over (trace, span) here: per trace, shard-local.
CREATE TABLE denied_calls ENGINE = Memory AS
WITH paired AS (
    SELECT trace_id, server_span_id, client_span_id, client_denied FROM pairs WHERE server_denied
),
server_denials AS (
    SELECT trace_id, CAST(server_span_id AS Nullable(String)) AS server_span_id,
           CAST(client_span_id AS Nullable(String)) AS client_span_id,
           CAST(client_denied AS Nullable(Bool)) AS client_denied
    FROM paired
    UNION ALL
    SELECT s.trace_id, CAST(s.span_id AS Nullable(String)), CAST(NULL AS Nullable(String)),
           CAST(NULL AS Nullable(Bool))
    FROM rpc_spans AS s  -- its client was not traced
    WHERE s.kind = 'SERVER' AND s.denied
      AND (s.trace_id, s.span_id) NOT IN (SELECT trace_id, server_span_id FROM paired)
)
SELECT * FROM server_denials
UNION ALL
SELECT c.trace_id, CAST(NULL AS Nullable(String)), CAST(c.span_id AS Nullable(String)), CAST(true AS Nullable(Bool))
FROM rpc_spans AS c
WHERE c.kind = 'CLIENT' AND c.denied
  AND (c.trace_id, c.span_id) NOT IN (SELECT trace_id, assumeNotNull(client_span_id) FROM server_denials
                                      WHERE client_span_id IS NOT NULL);
