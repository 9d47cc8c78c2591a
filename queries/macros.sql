-- The macros the steps share, created before the first step (TEMP: they belong to the run, not to jitrace.duckdb).
-- log_pattern_ordinal(body) is not here: analyzer/steps/session.py builds it from the log patterns (queries/seeds/).

-- One evidence member, '"name":value', or NULL when the value is (concat_ws skips it: evidence lists what is known).
-- Built as text: cheaper per row than json_merge_patch over a json_object of every member.
CREATE OR REPLACE TEMP MACRO evidence_member(name, value) AS
    CASE WHEN value IS NOT NULL THEN '"' || name || '":' || to_json(value) END;
-- A member in seconds, rounded to the nanosecond, the resolution of span times: -0.06 rather than the
-- -0.05999999999999992 that subtracting two offsets leaves (the rules above decide on the unrounded values).
CREATE OR REPLACE TEMP MACRO evidence_seconds(name, value) AS evidence_member(name, round(value, 9));
