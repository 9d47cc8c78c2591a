"""``jitrace lab`` and ``jitrace demo`` as a user runs them, and the lab's process hygiene."""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from processes import processes_mentioning

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "analyzer"))  # the analyzer tests' span factory
from spanfactory import T0, Token, World  # noqa: E402

from jitrace.analyzer import errors
from jitrace.analyzer.errors import UserError
from jitrace.lab import demo, runner


def _jitrace(*args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jitrace.analyzer.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("args, says", [
    (["lab", "nope", "--out", "x"], "invalid choice: 'nope'"),
    (["lab", "healthy", "--out", "x", "--calls", "0"], "--calls must be between 1 and 1000"),
    (["lab", "healthy", "--out", "x", "--calls", "many"], "--calls must be a whole number"),
    (["lab", "clock_drift", "--out", "x", "--drift", "moon"], "invalid choice: 'moon'"),
    (["lab", "healthy"], "the following arguments are required: --out"),
])
def test_bad_arguments_are_one_line_errors_with_exit_code_2(args, says):
    result = _jitrace(*args, timeout=30)
    assert result.returncode == 2
    assert says in result.stderr and "Traceback" not in result.stderr


def test_a_folder_holding_other_files_is_refused(tmp_path):
    (tmp_path / "spans").mkdir()
    result = _jitrace("lab", "healthy", "--out", str(tmp_path), timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().endswith("choose an empty folder") and len(result.stderr.splitlines()) == 1


@pytest.mark.slow
def test_jitrace_lab_writes_spans_and_ground_truth_and_a_rerun_replaces_them(tmp_path):
    for _ in range(2):
        result = _jitrace("lab", "token_missing", "--out", str(tmp_path), "--calls", "2")
        assert result.returncode == 0, result.stderr
    calls = {json.loads(line)["trace_id"] for line in (tmp_path / "calls.jsonl").read_text().splitlines()}
    spans = pd.concat([pd.read_parquet(f) for f in (tmp_path / "spans").rglob("*.parquet")])
    assert set(spans["trace_id"]) == calls  # every span belongs to a call of the second run, and only those
    assert "jitrace lab: token_missing" in result.stdout and "warning" not in result.stdout
    labels = [json.loads(line) for line in (tmp_path / "labels.jsonl").read_text().splitlines()]
    assert [row["cause"] for row in labels] == ["token_missing", "token_missing"]
    assert list((tmp_path / "spans").rglob("*.parquet"))
    assert json.loads((tmp_path / "params.json").read_text())["scenario"] == "token_missing"
    assert not list(tmp_path.rglob("*.key"))  # the run's signing keys do not outlive it
    assert not processes_mentioning(str(tmp_path))


@pytest.mark.slow
def test_jitrace_demo_runs_the_pipeline_and_says_where_the_report_is(tmp_path):
    out = tmp_path / "demo"
    result = _jitrace("demo", "--out", str(out), "--calls", "1")
    assert result.returncode == 0, result.stderr
    assert f"HTML report: {(out / 'report.html').resolve()}" in result.stdout
    assert "accuracy" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["denials"] == 10, result.stdout[-4000:]  # one per cause
    for name in ("attributions.parquet", "attributions.csv", "clock_offsets.parquet", "jitrace.duckdb"):
        assert (out / name).is_file()
    assert not processes_mentioning(str(out))


@pytest.mark.slow
def test_jitrace_demo_watch_prints_each_denial_live_and_checks_it_against_the_batch_run(tmp_path):
    out = tmp_path / "demo"
    result = _jitrace("demo", "--out", str(out), "--calls", "1", "--watch")
    assert result.returncode == 0, result.stderr
    live = [line for line in result.stdout.splitlines() if re.match(r"\S+Z denial +trace=", line)]
    assert len(live) == 10 and all(" trace=" in line and " cause=" in line for line in live)
    assert "the live answers equal the batch run's" in result.stdout
    assert not processes_mentioning(str(out))


def test_a_service_that_fails_to_start_is_reported_and_nothing_is_left_running(tmp_path):
    mesh = runner.Mesh(tmp_path, otlp_grpc_port=9, log=lambda _: None)
    try:
        with pytest.raises(UserError, match=r"lab service broken did not start; the end of .*broken\.log: .*"
                                            r"error: the following arguments are required"):
            mesh.start("broken", "backend", ["--no-such-flag", str(tmp_path)])
    finally:
        mesh.close()
    assert not processes_mentioning(str(tmp_path))


def test_a_running_service_stops_on_close(tmp_path):
    key, public = runner._write_key(tmp_path / "k", private=True)
    mesh = runner.Mesh(tmp_path, otlp_grpc_port=9, log=lambda _: None)
    try:
        port = mesh.start("r1", "backend", ["--replica", "r1", "--public-key", str(public)], instrumented=False)
        assert port > 0 and processes_mentioning(str(tmp_path))
    finally:
        mesh.close()
    assert not processes_mentioning(str(tmp_path))


def test_a_service_whose_runner_died_before_it_started_watching_exits(tmp_path):
    # the runner can be killed between reading a service's PORT line and the service's first look at its parent: the
    # service then already has another parent, so it goes by the pid the runner gave it, not by its first parent
    _, public = runner._write_key(tmp_path / "k", private=True)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])  # a runner that has exited
    gone.wait()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "JITRACE_"))}
    env["JITRACE_LAB_RUNNER_PID"] = str(gone.pid)
    proc = subprocess.Popen([sys.executable, "-m", "jitrace.lab.backend", "--replica", "r1", "--public-key",
                             str(public)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().startswith("PORT "), "the backend did not start"
        assert proc.wait(timeout=30) is not None  # it exits by itself
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert processes_mentioning(str(tmp_path / "k")) == []


def test_services_stop_by_themselves_when_the_runner_is_killed(tmp_path):
    script = (
        "import sys, select\n"
        "from pathlib import Path\n"
        "from jitrace.lab import runner\n"
        "d = Path(sys.argv[1])\n"
        "_, public = runner._write_key(d / 'k', private=True)\n"
        "mesh = runner.Mesh(d, otlp_grpc_port=9, log=print)\n"
        "mesh.start('r1', 'backend', ['--replica', 'r1', '--public-key', str(public)], instrumented=False)\n"
        "print('READY', flush=True)\n"
        "select.select([], [], [], 60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "READY", "the runner could not start a service"
        assert processes_mentioning(str(tmp_path / "k"))  # the backend, started with the key's path
    finally:
        proc.kill()  # SIGKILL: the runner cannot clean up
        proc.wait()
        proc.stdout.close()
    # the orphaned service notices its parent is gone and exits (it polls every 0.2 s)
    for _ in range(300):
        if not processes_mentioning(str(tmp_path / "k")):
            break
        select.select([], [], [], 0.1)
    assert processes_mentioning(str(tmp_path / "k")) == []


def test_a_lab_run_that_stopped_half_way_is_replaced_by_the_next(tmp_path):
    """The lab marks its folder before anything else: a run killed before params.json leaves a folder the next run
    recognises as its own (it used to refuse it), and only the lab's own entries are removed."""
    (tmp_path / runner.MARKER).write_text("")
    (tmp_path / "spans").mkdir()
    (tmp_path / "spans" / "half.parquet").write_text("")
    (tmp_path / "mine.txt").write_text("keep")
    runner._prepare(tmp_path)
    assert not (tmp_path / "spans").exists() and (tmp_path / "mine.txt").read_text() == "keep"


def test_demo_refuses_a_folder_it_did_not_write_and_touches_nothing(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = _jitrace("demo", "--out", str(tmp_path), timeout=60)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert "holds files jitrace demo did not write" in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def _fake_lab(spans: bool):
    """A stand-in for runner.run: a lab folder with (or without) the spans of one denied call and its label."""
    def fake_run(scenario, out, **kwargs):
        out = Path(out)
        runner._prepare(out)
        trace_id = "a" * 32
        if spans:  # a token that expired before the call: token_expired, labelled otherwise below
            world, token = World(), Token(iat=T0, exp=T0 + 10)
            world.issue(token, T0)
            trace_id = world.call(T0 + 20, token)["trace_id"]
            (out / "spans").mkdir()
            world.write_parquet(out / "spans" / "s.parquet")
        (out / "labels.jsonl").write_text(json.dumps({"trace_id": trace_id, "cause": "token_missing"}) + "\n")
        return {"scenario": scenario, "seconds": 0.1,
                "counts": {"calls": 1, "denied": 1, "labelled": 1, "missed": 0, "unexpected_denials": 0, "errors": 0}}
    return fake_run


@pytest.mark.parametrize("spans, says", [(False, "no spans arrived"), (True, "accuracy 0.000 over 1 labelled")])
def test_demo_fails_with_exit_5_when_no_spans_arrive_or_an_attribution_is_wrong(tmp_path, monkeypatch, spans, says):
    monkeypatch.setattr(runner, "run", _fake_lab(spans))
    with pytest.raises(UserError, match=says) as failed:
        demo.demo(tmp_path / "out", quiet=True)
    assert failed.value.exit_code == errors.DEMO_FAILED == 5


def test_demo_without_pycasbin_names_the_lab_extra(tmp_path, monkeypatch):
    """An install with the analyzer but not the lab: one line naming what is missing and the extra, before any
    service starts (it used to be a traceback from a service that did not start)."""
    real = demo.importlib.util.find_spec
    monkeypatch.setattr(demo.importlib.util, "find_spec", lambda name: None if name == "casbin" else real(name))
    with pytest.raises(UserError, match=r"needs pycasbin: pip install 'jitrace\[lab\]'"):
        demo.demo(tmp_path / "out", quiet=True)
    assert not (tmp_path / "out").exists()
