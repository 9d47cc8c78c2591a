-- span_fact_inputs: reads a relation in the spans schema (analyzer/schema.py), written `{spans}` below; produces the
-- same rows with the values span_facts.sql reads parsed out of the JSON: `r` (resource attributes), `a` (span
-- attributes), typed by from_json's schema, and `checks` (the jit.token.check events).
-- Why a file of its own: it is the one step that parses JSON. span_facts.sql reads its output, `{inputs}`; the C
-- reader of OTLP JSON lines (analyzer/load/_otlp_native.c) gives these same columns typed as it reads, for the
-- spans whose values it reads exactly as from_json does (analyzer/steps/spans_view.py: fact_inputs), so those never
-- go through JSON text again. from_json gets an explicit schema: DuckDB's auto-detection is unsafe on mixed inputs.
SELECT
    *,
    from_json(resource, '{"host.id": "VARCHAR", "host.name": "VARCHAR", "hostname": "VARCHAR", "host.ip": "VARCHAR",
                          "ip": "VARCHAR", "service.instance.id": "VARCHAR", "service.name": "VARCHAR"}') AS r,
    from_json(attributes, '{
        "rpc.system": "VARCHAR", "rpc.service": "VARCHAR", "rpc.method": "VARCHAR",
        "rpc.grpc.status_code": "VARCHAR", "rpc.response.status_code": "VARCHAR", "grpc.status_code": "VARCHAR",
        "census.status_code": "VARCHAR", "opencensus.status_code": "VARCHAR", "status.code": "VARCHAR",
        "jit.token.present": "VARCHAR", "jit.token.id": "VARCHAR", "jit.token.sub": "VARCHAR",
        "jit.token.iss": "VARCHAR", "jit.token.aud": "VARCHAR", "jit.token.iat": "DOUBLE",
        "jit.token.nbf": "DOUBLE", "jit.token.exp": "DOUBLE", "jit.token.age_s": "DOUBLE",
        "jit.token.ttl_s": "DOUBLE", "jit.token.verdict": "VARCHAR", "jit.token.refreshed": "VARCHAR",
        "jit.grant.id": "VARCHAR", "jit.grant.start": "DOUBLE", "jit.grant.end": "DOUBLE",
        "jit.policy.decision": "VARCHAR", "jit.policy.engine": "VARCHAR", "jit.policy.id": "VARCHAR",
        "jit.policy.version": "VARCHAR", "jit.policy.rule": "VARCHAR", "jit.policy.required": "VARCHAR",
        "jit.policy.granted": "VARCHAR[]", "jit.policy.eval_s": "DOUBLE",
        "jit.policy.request": "VARCHAR[]",
        "jit.auth.wait_s": "DOUBLE",
        "jit.clock.sent_ns": "BIGINT", "jit.clock.peer_sent_ns": "BIGINT", "jit.clock.received_ns": "BIGINT",
        "jit.clock.offset_s": "DOUBLE", "jit.clock.delay_s": "DOUBLE",
        "jit.denial.reason": "VARCHAR"
    }') AS a,
    CASE WHEN contains(events, 'jit.token.check') THEN list_filter(
        from_json(events, '[{"name": "VARCHAR", "time_ns": "BIGINT",
                             "attributes": {"jit.token.verdict": "VARCHAR", "jit.token.ttl_s": "DOUBLE"}}]'),
        LAMBDA e: e.name = 'jit.token.check') END AS checks
FROM {spans}
