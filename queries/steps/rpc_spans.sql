-- rpc_spans: the gRPC spans (CLIENT, SERVER) and the token issuance spans, with their typed facts.
-- Why: every later step reads the same typed facts of the gRPC spans. Those columns come from queries/span_facts.sql
-- (jit.token.ttl_s -> jit_token_ttl_s, the clock domain, the stream check): `jitrace collect`'s compacted files hold
-- them, so this step reads them without parsing JSON; other inputs get them from the view. Only CLIENT/SERVER
-- spans and the `jit.issue` spans are kept, and none of the JSON: nothing later reads the rest.
-- A view, not a table: each later step reads only the columns it needs from the files (or the loaded rows), and a
-- copy of millions of spans would cost more than those reads. The steps that pick a few spans (denials) hash those
-- few and stream through this view.
SELECT * EXCLUDE (status_code, status_message, resource, attributes, events, links, scope, source)
FROM spans
WHERE kind IN ('CLIENT', 'SERVER') OR name = 'jit.issue'
