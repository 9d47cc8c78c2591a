"""`jitrace analyze`: docs/contract.md's outputs, the --fail-on gate and its exit code, progress, one-line errors,
and the Python API over an output folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import otlp_requests
import pandas as pd
import pytest
from fresh_process import analysis_in_fresh_process
from google.protobuf.json_format import MessageToJson
from spanfactory import T0, Token, World

from jitrace.analyzer import cli, errors
from jitrace.analyzer.notebook import open_output
from jitrace.instrumentation import contract

ATTRIBUTION_COLUMNS = ["trace_id", "span_id", "service", "method", "principal", "status_code", "time", "cause",
                       "rule", "confidence", "evidence", "fix"]


@pytest.fixture(scope="module")
def spans_dir(tmp_path_factory) -> Path:
    world = World(offsets={"server-host": 120.0})
    tok = Token(iat=T0, exp=T0 + 3600)
    world.issue(tok, T0)
    for i in range(5):
        world.call(T0 + 1 + i, tok)
    short = Token(iat=T0, exp=T0 + 300)
    world.issue(short, T0)
    world.call(T0 + 250, short)  # clock_drift
    world.call(T0 + 20, None)  # token_missing
    folder = tmp_path_factory.mktemp("spans") / "spans" / "hour=2025-10-09T08"
    folder.mkdir(parents=True)
    world.write_parquet(folder / "a.parquet")
    return folder.parent.parent


def test_writes_every_output(spans_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["analyze", str(spans_dir), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "clock_drift" in captured.out and "token_missing" in captured.out
    assert "attributions (" in captured.err  # progress on stderr
    attributions = pd.read_parquet(out / "attributions.parquet")
    assert list(attributions.columns[: len(ATTRIBUTION_COLUMNS)]) == ATTRIBUTION_COLUMNS
    assert sorted(attributions["cause"]) == ["clock_drift", "token_missing"]
    assert attributions["confidence"].between(0, 1).all()
    assert all(isinstance(json.loads(e), dict) for e in attributions["evidence"])
    assert len(pd.read_csv(out / "attributions.csv")) == 2
    offsets = pd.read_parquet(out / "clock_offsets.parquet")
    assert list(offsets.columns) == ["domain", "reference", "window_start", "window_end", "offset_s", "error_s",
                                     "samples", "lower_s", "upper_s", "rate_ppm"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["denials"] == 2 and list(summary["causes"]) == list(contract.CAUSES)
    assert {k: v for k, v in summary["causes"].items() if v} == {"clock_drift": 1, "token_missing": 1}
    assert summary["spans"] > 0 and summary["logs"] == 0 and summary["bad_records"] == 0
    assert (out / "report.html").stat().st_size > 10_000
    with duckdb.connect(str(out / "jitrace.duckdb"), read_only=True) as con:
        tables = {r[0] for r in con.execute("SHOW TABLES").fetchall()}
        # the per-span steps stay as views over spans, for notebooks
        assert con.execute("SELECT count(*) FROM pairs").fetchone()[0] > 0
        assert con.execute("SELECT count(*) FROM rpc_spans WHERE jit_token_ttl_s IS NOT NULL").fetchone()[0] > 0
    assert {"spans", "logs", "attributions", "clock_offsets", "denials", "rpc_spans", "pairs"} <= tables


def test_fail_on_is_a_ci_gate(spans_dir, tmp_path):
    assert cli.main(["analyze", str(spans_dir), "--out", str(tmp_path / "a"), "--quiet",
                     "--fail-on", "clock_drift,token_expired"]) == errors.FAIL_ON == 3
    assert cli.main(["analyze", str(spans_dir), "--out", str(tmp_path / "b"), "--quiet",
                     "--fail-on", "token_expired"]) == 0
    assert cli.main(["analyze", str(spans_dir), "--out", str(tmp_path / "c"), "--quiet", "--fail-on", "any"]) == 3
    # the outputs are written before the gate closes
    assert (tmp_path / "a" / "attributions.parquet").exists()


def test_unknown_cause_and_missing_input_are_one_line_errors(spans_dir, tmp_path, capsys):
    assert cli.main(["analyze", str(spans_dir), "--out", str(tmp_path / "o"), "--fail-on", "slow"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "unknown cause 'slow'" in err
    assert cli.main(["analyze", str(tmp_path / "missing.json"), "--out", str(tmp_path / "o2"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "missing.json" in err and "Traceback" not in err


def test_console_script_end_to_end(spans_dir, tmp_path):
    exe = Path(sys.executable).with_name("jitrace")
    run = subprocess.run([str(exe), "analyze", str(spans_dir), "--out", str(tmp_path / "o"), "--fail-on",
                          "token_missing"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 3, run.stderr
    assert "--fail-on: found token_missing (1)" in run.stderr


def test_version_is_printed_on_stdout_and_exits_zero():
    import importlib.metadata

    exe = Path(sys.executable).with_name("jitrace")
    run = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stderr == ""
    assert run.stdout == f"jitrace {importlib.metadata.version('jitrace')}\n"


def test_api_opens_an_output_folder(spans_dir, tmp_path, monkeypatch):
    out = tmp_path / "o"
    cli.main(["analyze", str(spans_dir), "--out", str(out), "--quiet"])
    monkeypatch.setenv("JITRACE_OUT", str(out))
    o = open_output()
    assert sorted(o.attributions["cause"]) == ["clock_drift", "token_missing"]
    drift = o.attributions.set_index("cause").loc["clock_drift", "evidence"]
    assert drift["drifting_host"] == "server-host"
    assert set(o.clock_offsets["domain"]) == {"client-host", "server-host", "issuer"}
    assert o.summary["denials"] == 2 and len(o.spans) > 0 and o.logs.empty
    assert o.sql("SELECT count(*) AS n FROM denials")["n"][0] == 2
    with pytest.raises(errors.UserError, match="not a jitrace analyze output folder"):
        open_output(tmp_path)


def test_bad_records_exit_4_after_writing_every_output(spans_dir, tmp_path, capsys):
    good = {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "ok",
            "startTimeUnixNano": "1", "endTimeUnixNano": "2"}
    export = tmp_path / "export.jsonl"
    export.write_text(json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [good]}]}]}) + "\n"
                      + '{"resourceSpans": [{"scopeSpans": [{"spans": [\n')  # a writer killed mid-line
    out = tmp_path / "o"
    assert cli.main(["analyze", str(spans_dir), str(export), "--out", str(out), "--quiet"]) == errors.BAD_RECORDS == 4
    summary = json.loads((out / "summary.json").read_text())
    assert summary["bad_records"] == 1 and summary["denials"] == 2
    assert any("export.jsonl" in p for p in summary["problems"])
    assert (out / "attributions.parquet").exists() and (out / "report.html").exists()
    assert cli.main(["analyze", str(export), "--out", str(tmp_path / "s"), "--quiet", "--strict"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "export.jsonl" in err


NOT_FOR_ANALYZE = ("pandas", "matplotlib")  # libraries a run of `jitrace analyze` must not import


def test_analyze_loads_no_dataframe_or_plotting_library(spans_dir, tmp_path):
    # pandas and matplotlib cost more start-up than analyzing 1M spans. Only notebooks (api, investigate)
    # use pandas, and nothing draws with matplotlib.
    _, imported = analysis_in_fresh_process(spans_dir, tmp_path / "out", NOT_FOR_ANALYZE)
    assert imported == set()
    assert (tmp_path / "out" / "report.html").exists()


@pytest.mark.parametrize("name", ["yelp.json", "jaeger_integration_example_trace.json", "bad-line.jsonl"])
def test_formats_read_in_python_load_no_dataframe_library(name, real_data, tmp_path):
    # the Python readers (Zipkin, Jaeger, the lines the C reader leaves) build Arrow columns from row tuples, and
    # pa.array imports pandas to ask whether its input is a pandas object: a third of a small file's run
    if name == "bad-line.jsonl":
        good = {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "x",
                "startTimeUnixNano": "1", "endTimeUnixNano": "2"}
        zero = {**good, "traceId": "0" * 32}  # a bad record: the Python reader reads its line, the good span too
        path = tmp_path / name
        path.write_text("".join(json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}) + "\n"
                                for spans in ([good], [{**good, "spanId": "eee19b7ec3c1b175"}, zero])))
    else:
        path = real_data / name
    _, imported = analysis_in_fresh_process(path, tmp_path / "out", NOT_FOR_ANALYZE)
    assert imported == set()
    assert (tmp_path / "out" / "report.html").exists()


def test_attributions_are_in_time_order_in_both_files_and_the_table(tmp_path):
    # calls recorded out of time order, some at the same instant (then ordered by trace id)
    world = World()
    token = Token(iat=T0, exp=T0 + 3600)
    world.issue(token, T0)
    for k in (7, 3, 9, 3, 1, 8, 3, 5, 2, 6):
        world.call(T0 + 10 * k, None)  # token_missing: every call is a denial
    folder = tmp_path / "in"
    folder.mkdir()
    world.write_parquet(folder / "spans.parquet")
    out = tmp_path / "out"
    cli.main(["analyze", str(folder), "--out", str(out), "--quiet"])
    from_csv = pd.read_csv(out / "attributions.csv")
    from_parquet = pd.read_parquet(out / "attributions.parquet")
    with duckdb.connect(str(out / "jitrace.duckdb"), read_only=True) as con:
        from_table = con.execute("SELECT time, trace_id FROM attributions").fetchall()
    keys = [(str(t), tid) for t, tid in zip(from_parquet["time"], from_parquet["trace_id"], strict=True)]
    assert len(keys) == 10 and keys == sorted(keys)
    assert list(from_csv["trace_id"]) == list(from_parquet["trace_id"]) == [tid for _, tid in from_table]


def test_metrics_files_beside_the_spans_are_skipped_and_said(spans_dir, tmp_path, capsys):
    """A folder the Collector writes holds metrics too: they are skipped, counted in summary.json and said on the
    terminal, and the run is a success (exit 0)."""
    import json
    import shutil

    folder = tmp_path / "otel"
    shutil.copytree(spans_dir, folder)
    metrics = {"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": "rpc.server.duration"}]}]}]}
    (folder / "metrics.jsonl").write_text(json.dumps(metrics) + "\n" + json.dumps(metrics) + "\n")
    assert cli.main(["analyze", str(folder), "--out", str(tmp_path / "o")]) == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["skipped_requests"] == 2 and summary["bad_records"] == 0 and summary["denials"] == 2
    assert "skipped 2 OTLP export request(s) of metrics or profiles" in capsys.readouterr().err


def test_an_output_folder_inside_the_input_folder_is_not_read_back(spans_dir, tmp_path):
    """`jitrace analyze traces/ --out traces/report`: the run's own staging folder (its DuckDB file is being written
    while the inputs load) and, on later runs, the files any output folder's manifest lists are not inputs."""
    import json
    import shutil

    folder = tmp_path / "traces"
    shutil.copytree(spans_dir, folder)
    counts = []
    for out in ("report", "report", "again"):  # the second run finds the first one's output in its input folder
        assert cli.main(["analyze", str(folder), "--out", str(folder / out), "--quiet"]) == 0
        summary = json.loads((folder / out / "summary.json").read_text())
        counts.append((summary["spans"], summary["denials"], summary["bad_records"]))
    assert counts == [counts[0]] * 3 and counts[0][0] > 0
    # named on its own, an output file is still what it is: not spans
    assert cli.main(["analyze", str(folder / "report" / "attributions.parquet"), "--out", str(tmp_path / "x"),
                     "--quiet"]) == 2


def test_attribution_files_are_in_time_order(tmp_path):
    """attributions.parquet and .csv list the denials by time, then trace id (60_attributions.sql stores them so,
    and the files keep the stored order), however the spans arrived."""
    import random

    world = World()
    tok = Token(iat=T0, exp=T0 + 3600)
    world.issue(tok, T0)
    seconds = list(range(1, 301))
    random.Random(7).shuffle(seconds)
    for s in seconds:
        world.call(T0 + s, None)  # token_missing, in shuffled order
    world.write_parquet(tmp_path / "spans.parquet")
    out = tmp_path / "out"
    assert cli.main(["analyze", str(tmp_path / "spans.parquet"), "--out", str(out), "--quiet"]) == 0
    for frame in (pd.read_parquet(out / "attributions.parquet"),
                  pd.read_csv(out / "attributions.csv", parse_dates=["time"])):
        keys = list(zip(pd.to_datetime(frame["time"]), frame["trace_id"], strict=True))
        assert len(keys) == 300 and keys == sorted(keys)


def test_the_database_file_is_checkpointed_beside_the_outputs(spans_dir, tmp_path, monkeypatch):
    """The checkpoint runs on a cursor while the outputs are written; DuckDB refuses it ("other write transactions
    active") if anything commits after a reader started, and the close then does it on the critical path. So every
    table and view must be final before it starts: this run's checkpoint must succeed."""
    from jitrace.analyzer import analyze
    from jitrace.analyzer.steps import session

    outcomes = []

    def checkpoint(con):
        try:
            con.execute("CHECKPOINT")
            outcomes.append("done")
            return True
        except duckdb.TransactionException as exc:
            outcomes.append(str(exc))
            return False

    monkeypatch.setattr(session, "checkpoint", checkpoint)
    analyze.analyze([str(spans_dir)], tmp_path / "out", quiet=True)
    assert outcomes == ["done"]


@pytest.mark.parametrize("checkpointed", [True, False])
def test_another_process_opens_the_database_as_soon_as_analyze_returns(spans_dir, tmp_path, monkeypatch,
                                                                        checkpointed):
    """The close (freeing the run's memory) runs beside the publishing of the folder when the checkpoint wrote the
    file whole, else before it (the close then checkpoints); either way analyze returns with the file closed and no
    WAL beside it: a notebook in another process opens it read-write (DuckDB refuses a file another process holds)."""
    from jitrace.analyzer import analyze
    from jitrace.analyzer.steps import session

    if not checkpointed:
        monkeypatch.setattr(session, "checkpoint", lambda con: False)
    out = tmp_path / "out"
    analyze.analyze([str(spans_dir)], out, quiet=True)
    assert not (out / "jitrace.duckdb.wal").exists()
    opened = subprocess.run(
        [sys.executable, "-c", "import duckdb, sys; con = duckdb.connect(sys.argv[1]); "
                               "print(con.execute('SELECT count(*) FROM attributions').fetchone()[0])",
         str(out / "jitrace.duckdb")], capture_output=True, text=True, timeout=120)
    assert opened.returncode == 0, opened.stderr
    assert int(opened.stdout) > 0


def test_a_long_load_says_how_far_it_is_on_stderr(tmp_path, monkeypatch, capsys):
    """Past PROGRESS_EVERY_S a load reports files, spans and rate, at most that often; a shorter one is silent."""
    import jitrace.analyzer.load as load
    from jitrace.analyzer.analyze import analyze

    said: list[str] = []
    report = load.LoadReport(files=1, spans=5, progress=said.append)
    report.tick()
    assert said == []  # not yet PROGRESS_EVERY_S into the load
    report.started -= load.PROGRESS_EVERY_S
    report.tick()
    report.tick()
    assert len(said) == 1 and said[0].startswith("loading: 5 spans and 0 logs so far from 1 file(s) (")

    request, _ = otlp_requests.traces(3)  # a text input: its rows are inserted, and each insert ticks
    (tmp_path / "spans.json").write_text(MessageToJson(request))
    monkeypatch.setattr(load, "PROGRESS_EVERY_S", 0.0)
    analyze([str(tmp_path / "spans.json")], tmp_path / "out")
    assert "loading: 3 spans and 0 logs so far from 1 file(s)" in capsys.readouterr().err
