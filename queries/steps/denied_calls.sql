-- denied_calls: one row per denied call: its trace, the span ids of its two ends (NULL for an end that was not traced)
-- and whether the client's own span is a denial.
-- Why: a denial is a gRPC status PERMISSION_DENIED (7) or UNAUTHENTICATED (16) in rpc.grpc.status_code, never the
-- span status (span_facts.sql's `denied`). A call is reported once: by its SERVER span when the server was traced,
-- else by its CLIENT span. A table of its own, so the next step's planner knows how few calls there are and hashes
-- them, not the millions of spans it looks them up in.
-- The paired denials come from pairs' server_denied flag; every join below hashes only denied spans or calls, and
-- the filters on `denied` let DuckDB skip the row groups of a facts file that hold no denial.
WITH paired AS (
    SELECT trace_id, server_span_id, client_span_id, client_denied FROM pairs WHERE server_denied
),
server_denials AS (
    SELECT * FROM paired
    UNION ALL
    SELECT s.trace_id, s.span_id, NULL::VARCHAR, NULL::BOOLEAN FROM rpc_spans AS s  -- its client was not traced
    WHERE s.kind = 'SERVER' AND s.denied
      AND NOT EXISTS (SELECT 1 FROM paired AS p WHERE p.trace_id = s.trace_id AND p.server_span_id = s.span_id)
),
client_denials AS (
    SELECT c.trace_id, NULL::VARCHAR AS server_span_id, c.span_id AS client_span_id, true AS client_denied
    FROM rpc_spans AS c
    WHERE c.kind = 'CLIENT' AND c.denied
      AND NOT EXISTS (SELECT 1 FROM server_denials AS d
                      WHERE d.trace_id = c.trace_id AND d.client_span_id = c.span_id)
)
SELECT * FROM server_denials
UNION ALL
SELECT * FROM client_denials
