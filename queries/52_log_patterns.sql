-- 52_log_patterns: reads nothing; produces `log_patterns` (empty) unless the analyzer already filled it.
-- Why: the log patterns are a CSV users extend (queries/log_patterns.csv, `jitrace analyze --log-patterns FILE`);
-- analyzer/session.py reads and checks them into this table before the steps run. Run from DuckDB alone, the
-- table starts empty (no log evidence); to use the built-in patterns there:
--   INSERT INTO log_patterns SELECT row_number() OVER () - 1, name, pattern, cause, confidence, description,
--          'queries/log_patterns.csv' FROM read_csv('queries/log_patterns.csv', header = true, all_varchar = true);
CREATE TABLE IF NOT EXISTS log_patterns (ordinal INTEGER, name VARCHAR, pattern VARCHAR, cause VARCHAR,
                                         confidence DOUBLE, description VARCHAR, source VARCHAR);
