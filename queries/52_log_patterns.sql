-- 52_log_patterns: reads nothing; produces `log_patterns` (empty) unless the analyzer already filled it.
-- Why: the log patterns are a CSV users extend (queries/log_patterns.csv, `jitrace analyze --log-patterns FILE`);
-- analyzer/session.py reads and checks them into this table before the steps run. Run from DuckDB alone, the
-- table starts empty (no log evidence). log_pattern_ordinal(body) is the ordinal of the first pattern a body
-- matches; the analyzer defines it with the patterns as constants (compiled once); here it matches nothing.
-- To use the built-in patterns from DuckDB alone, fill the table and define the macro from it (slower: a regex
-- read from a column is compiled per row):
--   INSERT INTO log_patterns SELECT row_number() OVER () - 1, name, pattern, cause, confidence, description,
--          'queries/log_patterns.csv' FROM read_csv('queries/log_patterns.csv', header = true, all_varchar = true);
--   CREATE OR REPLACE MACRO log_pattern_ordinal(body) AS
--          (SELECT min(ordinal) FROM log_patterns WHERE regexp_matches(body, pattern, 'i'));
CREATE TABLE IF NOT EXISTS log_patterns (ordinal INTEGER, name VARCHAR, pattern VARCHAR, cause VARCHAR,
                                         confidence DOUBLE, description VARCHAR, source VARCHAR);
CREATE MACRO IF NOT EXISTS log_pattern_ordinal(body) AS NULL::INTEGER;
