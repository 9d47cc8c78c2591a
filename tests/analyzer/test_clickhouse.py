"""The ClickHouse path without ClickHouse: its URLs, its bad input (one line, exit 2, no password, no traceback), the
SQL script splitter, and queries/clickhouse/ mirroring queries/ step by step (the parity tests, which need chdb,
hold their rows equal)."""

from __future__ import annotations

import re
import sys

import pytest
from otel_exporter import go_float, go_json

from jitrace.analyzer import cli
from jitrace.analyzer.engines import expand, is_url, otel_traces, split_statements
from jitrace.analyzer.engines.clickhouse import PASSWORD_ENV, literal, parse_url, quote
from jitrace.analyzer.engines.run import parse_time, step_sql
from jitrace.analyzer.errors import UserError
from jitrace.analyzer.steps import pipeline
from jitrace.instrumentation import contract as c


def test_urls_name_a_server_or_a_chdb_folder(tmp_path, monkeypatch):
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    s = parse_url("clickhouse://reader@ch.example:8123/otel?table=otel_traces&logs=otel_logs")
    assert (s.kind, s.user, s.host, s.port, s.database, s.table, s.logs_table, s.secure) == (
        "clickhouse", "reader", "ch.example", 8123, "otel", "otel_traces", "otel_logs", False)
    s = parse_url("clickhouse://ch.example/otel?secure=true")
    assert (s.port, s.secure, s.table, s.user) == (8443, True, "otel_traces", None)
    monkeypatch.setenv(PASSWORD_ENV, "from-env")
    s = parse_url("clickhouse://reader:in-url@ch.example:8123/otel")
    assert s.password == "from-env" and "from-env" not in s.display() and "in-url" not in s.display()
    s = parse_url(f"chdb://{tmp_path}?table=otel.otel_traces")
    assert (s.kind, s.path, s.database, s.table) == ("chdb", str(tmp_path), "otel", "otel_traces")
    assert s.display() == f"chdb://{tmp_path}?table=otel.otel_traces"
    assert is_url("chdb:///x") and is_url("clickhouse://h") and not is_url("/data/spans")


@pytest.mark.parametrize(("url", "says"), [
    ("clickhouse://", "no host"),
    ("clickhouse://h:99999/db", "Port out of range"),
    ("clickhouse://h/a/b", "one database name"),
    ("clickhouse://h/db?tabel=x", "unknown parameter 'tabel'"),
    ("clickhouse://h/db?secure=maybe", "secure must be true or false"),
    ("chdb://relative?table=t", "three slashes"),
    ("chdb:///no/such/folder?table=t", "no chdb folder at /no/such/folder"),
    ("chdb:///tmp?table=a%01b", "table must be a table name"),
])
def test_a_bad_url_is_one_line_naming_what_is_wrong(url, says):
    with pytest.raises(UserError) as err:
        parse_url(url)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_a_password_in_a_bad_url_is_never_shown():
    with pytest.raises(UserError) as err:
        parse_url("clickhouse://u:hunter2@h:99999/db")
    assert "hunter2" not in str(err.value) and "u:***@" in str(err.value)


@pytest.mark.parametrize(("args", "says"), [
    (["chdb:///tmp?table=t", "--until", "2025-10-10"], "--since is required with a ClickHouse input"),
    (["chdb:///tmp?table=t", "--since", "yesterday", "--until", "1"], "--since 'yesterday': expected a time"),
    (["chdb:///tmp?table=t", "--since", "2025-10-10", "--until", "2025-10-09"], "--until must be later"),
    (["chdb:///tmp?table=t", "/data/spans", "--since", "1", "--until", "2"], "the run's only input"),
    (["/data/spans", "--since", "1", "--until", "2"], "choose the spans of a ClickHouse input"),
    (["clickhouse://h:70000/db", "--since", "1", "--until", "2"], "Port out of range"),
])
def test_bad_analyze_arguments_are_one_line_and_exit_2(tmp_path, capsys, args, says):
    assert cli.main(["analyze", *args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_times_are_iso_8601_in_utc_or_unix_seconds():
    assert parse_time("2025-10-09T08:00:00Z", "--since") == 1759996800 * 10**9
    assert parse_time("2025-10-09 08:00:00", "--since") == 1759996800 * 10**9  # no zone: UTC
    assert parse_time("2025-10-09T10:00:00+02:00", "--since") == 1759996800 * 10**9
    assert parse_time("2025-10-09T08:00:00.000001Z", "--since") == 1759996800 * 10**9 + 1000
    assert parse_time("1759996800.5", "--since") == 1759996800_500_000_000


def test_statements_split_at_semicolons_outside_strings_and_comments():
    script = """-- a comment; not a statement
    SELECT 'a;b', "c;d", `e;f` /* g; h */ ;
    SELECT 'it\\'s; fine', 'it''s; fine'
    ; -- only a comment;
    """
    assert split_statements(script) == [
        """SELECT 'a;b', "c;d", `e;f` /* g; h */""", "SELECT 'it\\'s; fine', 'it''s; fine'"]


def test_placeholders_are_filled_or_named():
    assert expand("SELECT {{a}} + {{a}}", {"a": "1.0"}) == "SELECT 1.0 + 1.0"
    with pytest.raises(KeyError, match="b"):
        expand("SELECT {{b}}", {"a": "1"})


def test_names_and_literals_are_quoted_whatever_they_hold():
    assert quote("we`ird\\") == "`we\\`ird\\\\`"
    assert literal("it's \\d") == "'it\\'s \\\\d'"


def test_every_duckdb_step_has_its_clickhouse_twin_making_the_same_object():
    """Each SQL step of queries/steps.toml has queries/clickhouse/steps/NAME.sql, which names its DuckDB twin, reads
    what the manifest says it reads, and creates the step's object (helpers it makes are named after the step, as
    denials' denial_ends and denials_base, and dropped)."""
    for step in pipeline.steps():
        if step.sql is None:
            continue
        text = step_sql(step).read_text()
        assert text.startswith(f"-- {step.name} (ClickHouse): reads "), step.name
        assert f"queries/{step.sql}" in text, f"{step.name} names its DuckDB twin"
        header = text[:text.index(" (ClickHouse): reads ") + 200]
        assert all(f"`{name}`" in header for name in step.reads), (step.name, step.reads)
        made = re.findall(r"CREATE (?:TABLE|VIEW) (?:IF NOT EXISTS )?(\w+)", text)
        assert step.name in made, (step.name, made)
        for helper in set(made) - {step.name}:
            assert step.name.rstrip("s") in helper and f"DROP TABLE {helper}" in text, (step.name, helper)


def test_the_clickhouse_facts_read_every_contract_attribute():
    text = otel_traces._text()
    for name in c.all_attributes():
        assert f"'{name}'" in text, f"{name} is not read by queries/clickhouse/span_facts.sql"
    base, facts = otel_traces.items()
    assert [i.name for i in base] == ["trace_id", "span_id", "parent_span_id", "name", "kind", "start_ns", "end_ns",
                                      "status_code", "service"]
    names = {i.name for i in facts}
    assert {c.column(a) for a in c.all_attributes()} <= names
    assert {"domain", "grpc_status", "denied", "check_events", "check_verdict", "check_ttl_s", "check_ns"} <= names


@pytest.mark.parametrize(("value", "text"), [
    (1760000000.0, "1760000000"), (0.1, "0.1"), (-0.06, "-0.06"), (1e-7, "1e-7"), (1.5e-7, "1.5e-7"),
    (1e21, "1e+21"), (123456789012345680.0, "123456789012345680"), (0.000001, "0.000001"), (-0.0, "-0"),
    (299.99999999999994, "299.99999999999994"),
])
def test_doubles_are_written_as_the_exporter_writes_them(value, text):
    """Go's strconv.FormatFloat(x, 'f' or 'e', -1, 64) as pdata's AsString uses it: what otel_traces holds."""
    assert go_float(value) == text and float(text) == value


def test_arrays_are_written_as_gos_json():
    assert go_json(["a<b", 1, 2.5, True, None, {"k": 1e-7}]) == '["a\\u003cb",1,2.5,true,null,{"k":1e-7}]'


@pytest.mark.parametrize(("module", "url"), [("chdb", "chdb://{tmp}?table=t"),
                                             ("clickhouse_connect", "clickhouse://default@127.0.0.1:9/otel")])
def test_a_missing_extra_is_named(monkeypatch, tmp_path, capsys, module, url):
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    args = ["analyze", url.format(tmp=tmp_path), "--since", "1", "--until", "2", "--out", str(tmp_path / "out")]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "pip install 'jitrace[clickhouse]'" in err and "Traceback" not in err
