"""`jitrace analyze chdb:///PATH?table=... --since --until --out DIR` and `jitrace clickhouse install-facts` end to
end: the output folder is the one a run on files writes (report, API, notebooks' tables), the scratch database is
gone after the run whatever happened, and a missing table or database is one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from otel_exporter import load_otel
from test_clickhouse_parity import every_cause, logs_of

from jitrace.analyzer import cli
from jitrace.analyzer import notebook as investigate
from jitrace.analyzer.engines import otel_traces
from jitrace.analyzer.notebook import open_output

pytestmark = pytest.mark.usefixtures("chdb_installed")

SINCE, UNTIL = "2025-10-09T00:00:00Z", "2025-10-10T00:00:00Z"  # the span factory's T0 is 2025-10-09 08:53 UTC


@pytest.fixture(scope="module")
def folder(chdb_installed, tmp_path_factory) -> Path:
    """A chdb folder holding otel.otel_traces and otel.otel_logs of the every-cause world (closed again: the runs
    below open it themselves)."""
    from jitrace.analyzer.engines.clickhouse import ChdbEngine

    path = tmp_path_factory.mktemp("chdb")
    engine = ChdbEngine(str(path))
    try:
        world = every_cause()
        load_otel(engine, "otel", world.rows, logs_of(world))
    finally:
        engine.close()
    return path


def _scratch_databases(folder: Path) -> list[str]:
    from jitrace.analyzer.engines.clickhouse import ChdbEngine

    engine = ChdbEngine(str(folder))
    try:
        return engine.arrow("SELECT name FROM system.databases WHERE name LIKE 'jitrace_run_%'").column(0).to_pylist()
    finally:
        engine.close()


def test_analyze_writes_the_output_folder_of_a_run_on_files(folder, tmp_path, capsys):
    out = tmp_path / "out"
    url = f"chdb://{folder}?table=otel.otel_traces&logs=otel_logs"
    assert cli.main(["analyze", url, "--since", SINCE, "--until", UNTIL, "--out", str(out)]) == 0
    assert "clock_drift" in capsys.readouterr().out  # the terminal table
    assert {p.name for p in out.iterdir()} >= {"attributions.parquet", "attributions.csv", "clock_offsets.parquet",
                                               "summary.json", "report.html", "jitrace.duckdb"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["spans"] == 104 and summary["logs"] > 0 and summary["denials"] == 19
    assert summary["source"] == {"url": url, "since": SINCE, "until": UNTIL, "facts_stored": False}
    assert all(summary["causes"][cause] for cause in summary["causes"])
    output = open_output(out)
    assert len(output.attributions) == 19 and len(output.denials) == 19 and not output.clock_offsets.empty
    assert output.spans.empty and set(output.cause_summary["cause"]) == set(summary["causes"])
    assert output.sql("SELECT count(*) AS n FROM denial_logs")["n"][0] > 0
    assert output.sql("SELECT count(*) AS n FROM rpc_spans")["n"][0] == 0  # span-level tables stay in ClickHouse
    assert len(investigate.flipped_by_correction(output)) == 4 and investigate.ttl_at_send_and_check(output).empty
    assert "Why were these calls denied?" in (out / "report.html").read_text()
    assert _scratch_databases(folder) == []


def test_fail_on_gates_a_clickhouse_run_as_a_run_on_files(folder, tmp_path):
    args = ["analyze", f"chdb://{folder}?table=otel.otel_traces", "--since", SINCE, "--until", UNTIL, "--quiet"]
    assert cli.main([*args, "--out", str(tmp_path / "a"), "--fail-on", "clock_drift"]) == 3
    assert cli.main([*args, "--out", str(tmp_path / "b"), "--leeway", "1000"]) == 0


def test_install_facts_stores_them_and_the_analysis_reads_them(folder, tmp_path, capsys):
    before = tmp_path / "before"
    args = ["--since", SINCE, "--until", UNTIL, "--quiet"]
    url = f"chdb://{folder}?table=otel.otel_traces"
    assert cli.main(["analyze", url, *args, "--out", str(before)]) == 0
    assert cli.main(["clickhouse", "install-facts", url]) == 0
    facts = len(otel_traces.fact_names())
    assert f"added {facts} fact column(s) and the index jitrace_denied" in capsys.readouterr().err
    assert cli.main(["clickhouse", "install-facts", url]) == 0
    assert "already holds every fact" in capsys.readouterr().err
    after = tmp_path / "after"
    assert cli.main(["analyze", url, *args, "--out", str(after)]) == 0
    assert json.loads((after / "summary.json").read_text())["source"]["facts_stored"] is True
    a, b = open_output(before).attributions, open_output(after).attributions
    assert a.drop(columns="evidence").equals(b.drop(columns="evidence")) and list(a.evidence) == list(b.evidence)


@pytest.mark.parametrize(("table", "says"), [
    ("otel.nope", "no table otel.nope"), ("nodb.otel_traces", "no database nodb"),
    ("otel.otel_logs", "not an OpenTelemetry Collector traces table")])
def test_a_missing_table_is_one_line(folder, tmp_path, capsys, table, says):
    for args in (["analyze", f"chdb://{folder}?table={table}", "--since", SINCE, "--until", UNTIL, "--out",
                  str(tmp_path / "out")], ["clickhouse", "install-facts", f"chdb://{folder}?table={table}"]):
        assert cli.main(args) == 2
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()
    assert _scratch_databases(folder) == []


def test_an_empty_range_is_an_error_unless_allowed(folder, tmp_path, capsys):
    args = ["analyze", f"chdb://{folder}?table=otel.otel_traces", "--since", "2020-01-01", "--until", "2020-01-02",
            "--quiet"]
    assert cli.main([*args, "--out", str(tmp_path / "a")]) == 2
    assert "no spans in" in capsys.readouterr().err
    assert cli.main([*args, "--out", str(tmp_path / "b"), "--allow-empty"]) == 0
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["denials"] == 0


def test_a_failing_step_is_one_line_and_drops_the_runs_database(folder, tmp_path, capsys, monkeypatch):
    from jitrace.analyzer.engines import run

    broken = tmp_path / "rpc_spans.sql"
    broken.write_text("CREATE TABLE rpc_spans ENGINE = Memory AS SELECT * FROM no_such_table")
    real = run.step_sql
    monkeypatch.setattr(run, "step_sql", lambda step: broken if step.name == "rpc_spans" else real(step))
    args = ["analyze", f"chdb://{folder}?table=otel.otel_traces", "--since", SINCE, "--until", UNTIL, "--quiet"]
    assert cli.main([*args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "step rpc_spans failed" in err and "no_such_table" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
    assert _scratch_databases(folder) == []
