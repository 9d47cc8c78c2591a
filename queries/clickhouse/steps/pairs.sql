-- pairs (ClickHouse): reads `pairs_matched`; one row per CLIENT span matched with its SERVER span, as
-- queries/steps/pairs.sql: the matches but those a shared-id match of the same server beats. A view over the
-- stored matches, not a second copy of them: on OpenTelemetry data no server matches by shared id, the set below is
-- empty, and the filter costs a scan of one column wherever the view is read.
CREATE VIEW pairs AS
SELECT * FROM pairs_matched
WHERE shared_id
   OR (trace_id, server_span_id) NOT IN (SELECT trace_id, server_span_id FROM pairs_matched WHERE shared_id);
