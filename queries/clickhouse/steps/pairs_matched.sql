-- pairs_matched (ClickHouse): reads `rpc_spans`; every CLIENT span matched with its SERVER span, as
-- queries/steps/pairs_matched.sql: a SERVER span belongs to the CLIENT span with the same span id (Zipkin's
-- shared spans), else to the CLIENT span that is its parent (OpenTelemetry); each server probes the clients
-- twice (ARRAY JOIN of two keys), so the clients are hashed once. A parent match loses to a shared-id match of
-- the same server (the pairs step).
-- The join's key is one number, cityHash64 of (trace id, span id): a hash join on two strings costs ClickHouse far
-- more than one on a UInt64. Equal ids give equal hashes, and the filter after the join keeps only the rows whose ids
-- are equal, so a collision adds no match. It is written NOT (... != ...) because ClickHouse would move a plain
-- equality of both sides into the join's key, back to the strings. A NULL parent hashes to NULL and matches nothing.
-- Every join here is within one trace: on a cluster sharded by cityHash64(TraceId) it runs on each shard alone.
CREATE TABLE pairs_matched ENGINE = Memory AS
SELECT
    c.trace_id AS trace_id,
    c.span_id AS client_span_id,
    p.span_id AS server_span_id,
    c.domain AS client_domain,
    p.domain AS server_domain,
    c.start_ns AS t1,
    p.start_ns AS t2,
    p.end_ns AS t3,
    c.end_ns AS t4,
    c.jit_clock_offset_s AS ntp_offset_s,
    c.jit_clock_delay_s AS ntp_delay_s,
    p.denied AS server_denied,
    c.denied AS client_denied,
    p.shared_id AS shared_id
FROM (
    SELECT trace_id, span_id, domain, start_ns, end_ns, denied, shared_id,
           if(shared_id, span_id, parent_span_id) AS client_key, cityHash64(trace_id, client_key) AS id_hash
    FROM rpc_spans
    ARRAY JOIN [true, false] AS shared_id
    WHERE kind = 'SERVER'
) AS p
INNER JOIN (
    SELECT trace_id, span_id, domain, start_ns, end_ns, jit_clock_offset_s, jit_clock_delay_s, denied,
           cityHash64(trace_id, span_id) AS id_hash
    FROM rpc_spans
    WHERE kind = 'CLIENT'
) AS c ON c.id_hash = p.id_hash
WHERE NOT (c.trace_id != p.trace_id OR c.span_id != p.client_key);
