-- 52_log_patterns (ClickHouse): reads nothing; produces `log_patterns` (empty) unless the analyzer already filled it.
-- As queries/52_log_patterns.sql: the analyzer reads and checks the pattern files (queries/log_patterns.csv and
-- --log-patterns) and pushes their rows before the steps run; 55_denial_logs matches them as constants,
-- {{log_pattern_ordinal}} standing for a multiIf over the patterns (RE2, case-insensitive, as in DuckDB).
CREATE TABLE IF NOT EXISTS log_patterns (ordinal Int32, name String, pattern String, cause String,
                                         confidence Float64, description String, source String) ENGINE = Memory;
