"""The watch (collect/watch.py) on generated worlds: whatever the order and batching in which the spans arrive, once
they have all arrived its attributions are analyze's, and a span that changes an answer prints a correction. Also its
lines, its options, and the OTLP metrics the receiver now takes."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric, NumberDataPoint, Sum
from spanfactory import T0, Token, World

from jitrace.analyzer import analyze
from jitrace.analyzer.outputs.report import printable
from jitrace.analyzer.schema import SPANS
from jitrace.collect import Receiver
from jitrace.collect.metrics import Metrics
from jitrace.collect.watch import ANSWER, Line, Watcher, format_line

JITRACE = Path(sys.executable).parent / "jitrace"
COLUMNS = "trace_id, span_id, time, cause, rule, confidence, evidence, fix, principal, service, method"


def _world() -> World:
    """Healthy calls and one denial of several causes, two hosts with skewed clocks."""
    world = World(offsets={"server-host": 4.0, "client-host": -0.5})
    good = Token(exp=T0 + 600)
    world.issue(good, T0)
    for i in range(6):
        world.call(T0 + 1 + i, good)
    expired = Token(iat=T0 - 600, exp=T0 - 300)
    world.issue(expired, T0 - 600)
    world.call(T0 + 10, expired)  # token_expired
    world.call(T0 + 11, None)  # token_missing
    short = Token(exp=T0 + 12.5)
    world.issue(short, T0 + 2)
    world.call(T0 + 12, short)  # the server's skewed clock finds it expired: clock_drift
    world.call(T0 + 13, good, required="orders.delete", granted=["orders.read"])  # policy_mismatch
    return world


def _batch(world: World, tmp_path: Path, settings: dict[str, float] | None = None) -> list[tuple]:
    folder = tmp_path / "batch"
    folder.mkdir(exist_ok=True)
    world.write_parquet(folder / "spans.parquet")
    report = tmp_path / f"report-{len(settings or {})}"
    analyze.analyze([str(folder)], report, quiet=True, settings=settings)
    import duckdb

    with duckdb.connect(str(report / "jitrace.duckdb"), read_only=True) as con:
        return sorted(con.execute(f"SELECT {COLUMNS} FROM attributions").fetchall())


def _feed(watcher: Watcher, out: Path, batches: list[list[tuple]]) -> None:
    """Each batch through the receiver's writer, announced to the watch, a tick after each."""
    receiver = Receiver(out, grpc_addr=None, http_addr=None)
    receiver.writer.on_commit = watcher.announce
    for rows in batches:
        receiver.writer.write("spans", rows)
        watcher._take(timeout=0)  # noqa: SLF001 - the thread's step, run here in order
        watcher.clock_model()
        watcher.tick()


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_arrival_order_ends_equal_to_the_batch_run(tmp_path_factory, data):
    tmp_path = tmp_path_factory.mktemp("watch")
    world = _world()
    expected = _batch(world, tmp_path)
    rows = data.draw(st.permutations(world.tuples()))
    cuts = sorted(data.draw(st.sets(st.integers(1, len(rows) - 1), max_size=5)))
    batches = [rows[a:b] for a, b in zip([0, *cuts], [*cuts, len(rows)], strict=True)]
    out = io.StringIO()
    watcher = Watcher(out=out, full_interval_s=0)  # every clock model applied at once: equal after each batch
    try:
        _feed(watcher, tmp_path / "collected", batches)
        assert sorted(watcher.attributions(COLUMNS)) == expected
        # the last line of each denial is its batch answer
        last = {}
        for line in out.getvalue().splitlines():
            last[re.search(r"trace=(\S+)", line).group(1)] = line
        assert len(last) == len(expected)
        for trace_id, _, _, cause, _, confidence, _, _, _, _, _ in expected:
            assert f"cause={cause} " in last[trace_id] and f"confidence={confidence:.2f} " in last[trace_id]
    finally:
        watcher.close()


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_copies_in_one_load_or_across_loads_are_held_once(tmp_path_factory, data):
    """Exporters retry, and one load takes every file announced meanwhile: copies of a span in one load's files or
    in an earlier load's are held once, and the answers are the batch run's."""
    tmp_path = tmp_path_factory.mktemp("watch")
    world = _world()
    expected = _batch(world, tmp_path)
    rows = world.tuples()
    picks = st.lists(st.sampled_from(range(len(rows))), min_size=1, max_size=len(rows))
    files = data.draw(st.lists(picks, max_size=5))
    files.insert(data.draw(st.integers(0, len(files))), list(range(len(rows))))  # every span at least once
    per_load = data.draw(st.lists(st.integers(1, 3), min_size=len(files), max_size=len(files)))
    watcher = Watcher(out=io.StringIO(), full_interval_s=0)
    try:
        receiver = Receiver(tmp_path / "collected", grpc_addr=None, http_addr=None)
        receiver.writer.on_commit = watcher.announce
        written = 0
        for picked, files_in_load in zip(files, per_load, strict=True):
            receiver.writer.write("spans", [rows[i] for i in picked])
            written += 1
            if written >= files_in_load:  # several files taken by one load
                watcher._take(timeout=0)  # noqa: SLF001
                written = 0
        watcher._take(timeout=0)  # noqa: SLF001
        watcher.clock_model()
        watcher.tick(everything=True)
        kind, name = SPANS.names.index("kind"), SPANS.names.index("name")
        held = {(r[0], r[1], r[kind]) for r in rows if r[kind] in ("CLIENT", "SERVER") or r[name] == "jit.issue"}
        assert watcher.con.execute("SELECT count(*) FROM span_fact_rows").fetchone()[0] == len(held)
        assert sorted(watcher.attributions(COLUMNS)) == expected
    finally:
        watcher.close()


def _skewed_world() -> World:
    world = _world()
    token = Token(exp=T0 + 600)
    world.issue(token, T0 + 3)
    world.call(T0 + 14, token, policy_version="v2", policy_decision="deny")  # v1 allowed meanwhile: version skew
    return world


def _partial_ticks_agree(tmp_path: Path, batches: list[list[tuple]]) -> str:
    """Feed ``batches`` with the clock model run after the first only, a tick after each; a tick over every denial
    then gives the same rows and prints nothing. Returns what the ticks printed."""
    out = io.StringIO()
    watcher = Watcher(out=out, full_interval_s=0)
    try:
        receiver = Receiver(tmp_path / "collected", grpc_addr=None, http_addr=None)
        receiver.writer.on_commit = watcher.announce
        for i, batch in enumerate(batches):
            receiver.writer.write("spans", batch)
            watcher._take(timeout=0)  # noqa: SLF001 - the thread's step, run here in order
            if i == 0:
                watcher.clock_model()  # a model from the first batch only: the later ticks are partial
            watcher.tick()
        partial = sorted(watcher.attributions(COLUMNS))
        printed = out.getvalue()
        watcher.tick(everything=True)
        assert sorted(watcher.attributions(COLUMNS)) == partial
        assert out.getvalue() == printed
        assert len(partial) == 5 and "policy_version_skew" in {row[3] for row in partial}
        return printed
    finally:
        watcher.close()


def test_on_its_threads_the_watch_applies_the_last_clock_model_to_every_denial_once_quiet(tmp_path):
    """Ticks over every denial for a new clock model come at most every full_interval_s; the last one still comes
    when nothing more arrives, so the answers end equal to the batch run without a stop."""
    world = _world()
    expected = _batch(world, tmp_path)
    # the denied calls first, answered without a clock model; the healthy calls' pairs after, soon enough that the
    # clock model they give comes within full_interval_s of the first tick: only the wait for it corrects the answers
    trace, attributes = SPANS.names.index("trace_id"), SPANS.names.index("attributes")
    denied = {r[trace] for r in world.tuples()
              if any(f'"rpc.grpc.status_code": {code}' in (r[attributes] or "") for code in (7, 16))}
    rows = sorted(world.tuples(), key=lambda r: r[trace] not in denied)
    out = io.StringIO()
    watcher = Watcher(out=out, interval_s=0.05, full_interval_s=4.0)

    def answered() -> bool:  # the last line of each denial is its batch answer
        last = {re.search(r"trace=(\S+)", line).group(1): line for line in out.getvalue().splitlines()}
        return len(last) == len(expected) and all(
            f"cause={cause} " in last[trace_id] and f"confidence={confidence:.2f} " in last[trace_id]
            for trace_id, _, _, cause, _, confidence, *_ in expected)
    try:
        receiver = Receiver(tmp_path / "collected", grpc_addr=None, http_addr=None)
        receiver.writer.on_commit = watcher.announce
        watcher.start()
        first = len([r for r in rows if r[trace] in denied])
        receiver.writer.write("spans", rows[:first])
        time.sleep(0.5)
        for i in range(first, len(rows), 4):
            receiver.writer.write("spans", rows[i:i + 4])
        deadline = time.monotonic() + 30
        while not answered() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert answered()
    finally:
        watcher.stop()
        watcher.close()


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_tick_between_clock_models_attributes_only_what_changed_and_agrees(tmp_path_factory, data):
    """Between two runs of the clock model a tick attributes only the denied traces a new span, issuance span or
    allowed decision may change: whatever the order and batching, its rows are the rows a tick over every denial
    gives."""
    rows = data.draw(st.permutations(_skewed_world().tuples()))
    cuts = sorted(data.draw(st.sets(st.integers(1, len(rows) - 1), min_size=1, max_size=6)))
    _partial_ticks_agree(tmp_path_factory.mktemp("watch"),
                         [rows[a:b] for a, b in zip([0, *cuts], [*cuts, len(rows)], strict=True)])


def test_issuance_spans_and_allowed_decisions_after_their_denials_change_them(tmp_path):
    """The denials first; the issuance spans of their tokens and the allowed decisions of their principal later:
    those denials are attributed again (corrections), though no span of their own trace arrived."""
    names = SPANS.names
    rows = _skewed_world().tuples()
    allowed = '"jit.policy.decision": "allow"'
    later = [r for r in rows if r[names.index("name")] == "jit.issue" or (
        r[names.index("kind")] == "SERVER" and allowed in (r[names.index("attributes")] or ""))]
    first = [r for r in rows if r not in later]
    printed = _partial_ticks_agree(tmp_path, [first, later])
    assert " correction " in printed and "cause=policy_version_skew" in printed.split(" correction ", 1)[1]


def test_the_watch_takes_analyzes_settings(tmp_path):
    """With a leeway (as `jitrace collect --watch --leeway` passes it) the watch answers as `analyze --leeway` does,
    and the setting changes the answer (else this would show nothing)."""
    world = _world()
    plain, lenient = _batch(world, tmp_path), _batch(world, tmp_path, {"jitrace_leeway_s": 60.0})
    assert plain != lenient
    watcher = Watcher(out=io.StringIO(), settings={"jitrace_leeway_s": 60.0})
    try:
        _feed(watcher, tmp_path / "collected", [world.tuples()])
        assert sorted(watcher.attributions(COLUMNS)) == lenient
    finally:
        watcher.close()


def test_rule_options_reach_the_watch_process_and_need_watch(tmp_path):
    import argparse

    from jitrace import collect
    from jitrace.analyzer import rule_options

    parser = argparse.ArgumentParser()
    collect.configure(parser)
    given = parser.parse_args(["--out", "x", "--watch", "--leeway", "2.5", "--window", "60",
                               "--log-patterns", "a b.csv", "--log-patterns", "c.csv"])
    again = parser.parse_args(["--out", "x", *rule_options.command_line(given)])  # as the watch process reads them
    assert rule_options.settings(again) == {"jitrace_leeway_s": 2.5, "jitrace_window_s": 60.0}
    assert again.log_patterns == ["a b.csv", "c.csv"]
    bad = tmp_path / "bad.csv"
    bad.write_text("not,a,pattern,file\n")
    common = [str(JITRACE), "collect", "--out", str(tmp_path / "out"), "--grpc", "127.0.0.1:0", "--http", "off"]
    alone = subprocess.run([*common, "--leeway", "5"], capture_output=True, text=True, timeout=60)
    assert alone.returncode == 2 and "add --watch" in alone.stderr and "Traceback" not in alone.stderr
    refused = subprocess.run([*common, "--watch", "--log-patterns", str(bad)], capture_output=True, text=True,
                             timeout=120)
    assert refused.returncode == 2 and "bad.csv" in refused.stderr and "Traceback" not in refused.stderr


def test_a_client_span_after_its_server_span_prints_a_correction(tmp_path):
    world = _world()
    expected = _batch(world, tmp_path)
    rows = world.tuples()
    clients = [r for r in rows if r[4] == "CLIENT"]
    out = io.StringIO()
    watcher = Watcher(out=out)
    try:
        _feed(watcher, tmp_path / "collected", [[r for r in rows if r[4] != "CLIENT"], clients])
        first, later = out.getvalue().split("\n", 1)[0], out.getvalue()
        assert " denial " in first
        assert " correction " in later  # the client's side changed an answer (at least its confidence)
        assert sorted(watcher.attributions(COLUMNS)) == expected
        assert watcher.corrections >= 1 and "corrections" in watcher.summary()
    finally:
        watcher.close()


def test_log_records_after_their_denials_correct_them_as_analyze_reads_them(tmp_path):
    """Two denials only OpenTelemetry traced (no jit facts): unexplained, until log records come, one with the
    denial's trace id and one without (joined by service and time); then the watch answers as analyze does on the
    collected spans and logs."""
    world = World()
    token = Token(iat=T0, exp=T0 + 3600)
    calls = [world.call(at, token, required="orders.write", server_instrumented=False, client_instrumented=False,
                        reason=False) for at in (T0 + 10, T0 + 20)]
    logs = [(round((T0 + 10) * 1e9), round((T0 + 10) * 1e9), calls[0]["trace_id"], None, 13, None,
             "Signature has expired", "orders", None, None, None, None),
            (round((T0 + 20) * 1e9), round((T0 + 20) * 1e9), None, None, 13, None,
             "role support lacks orders.refund", "orders", None, None, None, None)]
    out = io.StringIO()
    watcher = Watcher(out=out, full_interval_s=0)
    try:
        receiver = Receiver(tmp_path / "collected", grpc_addr=None, http_addr=None)
        receiver.writer.on_commit = watcher.announce
        receiver.writer.write("spans", world.tuples())
        watcher._take(timeout=0)  # noqa: SLF001 - the thread's step, run here in order
        watcher.clock_model()
        watcher.tick()
        assert {row[0] for row in watcher.attributions("cause")} == {"unexplained"}
        receiver.writer.write("logs", logs)
        watcher._take(timeout=0)  # noqa: SLF001
        watcher.tick()
        analyze.analyze([str(tmp_path / "collected")], tmp_path / "report", quiet=True)
        import duckdb

        with duckdb.connect(str(tmp_path / "report" / "jitrace.duckdb"), read_only=True) as con:
            expected = sorted(con.execute(f"SELECT {COLUMNS} FROM attributions").fetchall())
        assert sorted(watcher.attributions(COLUMNS)) == expected
        assert {row[3] for row in expected} == {"token_expired", "policy_mismatch"}
        assert out.getvalue().count(" correction ") == 2
    finally:
        watcher.close()


def test_a_span_seen_twice_is_one_row(tmp_path):
    world = _world()
    watcher = Watcher(out=io.StringIO())
    try:
        _feed(watcher, tmp_path / "collected", [world.tuples(), world.tuples()[:5]])
        held = watcher.con.execute("SELECT count(*) FROM span_fact_rows").fetchone()[0]
        assert held == sum(1 for r in world.tuples() if r[4] in ("CLIENT", "SERVER") or r[3] == "jit.issue")
    finally:
        watcher.close()


def test_the_state_is_bounded_and_says_so(tmp_path):
    world = _world()
    rows = world.tuples()
    watcher = Watcher(out=io.StringIO(), max_spans=10)
    try:
        _feed(watcher, tmp_path / "collected", [rows[i:i + 4] for i in range(0, len(rows), 4)])
        held = watcher.con.execute("SELECT count(*) FROM span_fact_rows").fetchone()[0]
        assert held <= 10 + 4 and watcher.evicted_spans > 0
        assert "dropped from the state" in watcher.summary()
        assert watcher.unseen_spans == 0  # a tick saw every span before it went
    finally:
        watcher.close()


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_the_spans_dropped_are_those_of_the_files_dropped(tmp_path_factory, data):
    """Files go in arrival order, several files of one load or a load's files in part: the state holds exactly the
    spans of the files it has not dropped, and says how many it dropped."""
    tmp_path = tmp_path_factory.mktemp("watch")
    rows = _world().tuples()
    held_rows = [r for r in rows if r[SPANS.names.index("kind")] in ("CLIENT", "SERVER")]
    bound = data.draw(st.integers(1, len(held_rows)))
    watcher = Watcher(out=io.StringIO(), max_spans=bound)
    try:
        receiver = Receiver(tmp_path / "collected", grpc_addr=None, http_addr=None)
        receiver.writer.on_commit = watcher.announce
        at = 0
        while at < len(held_rows):
            for _ in range(data.draw(st.integers(1, 3))):  # files taken by one load
                size = data.draw(st.integers(1, 5))
                receiver.writer.write("spans", held_rows[at:at + size])
                at += size
            watcher._take(timeout=0)  # noqa: SLF001
            watcher.tick()
        kept = {path for _, path, kind, *_ in watcher._arrivals if kind == "spans"}  # noqa: SLF001
        state = watcher.con.execute("SELECT source, count(*) FROM span_fact_rows GROUP BY source").fetchall()
        assert {source for source, _ in state} == kept
        held = sum(n for _, n in state)
        assert held == watcher._held and held + watcher.evicted_spans == len(held_rows)  # noqa: SLF001
        assert held <= bound + 5  # a file at most past the bound
    finally:
        watcher.close()


def test_spans_no_tick_saw_are_kept_up_to_twice_the_bound_then_counted(tmp_path):
    world = _world()
    rows = world.tuples()
    watcher = Watcher(out=io.StringIO(), max_spans=10)
    try:
        receiver = Receiver(tmp_path / "collected", grpc_addr=None, http_addr=None)
        receiver.writer.on_commit = watcher.announce
        for i in range(0, len(rows), 4):  # loaded, never ticked: a watch far behind
            receiver.writer.write("spans", rows[i:i + 4])
            watcher._take(timeout=0)  # noqa: SLF001
        held = watcher.con.execute("SELECT count(*) FROM span_fact_rows").fetchone()[0]
        assert 10 < held <= 2 * 10 + 4
        assert watcher.unseen_spans > 0 and "before a tick saw them" in watcher.summary()
    finally:
        watcher.close()


@given(st.text(max_size=40), st.text(max_size=40))
def test_a_line_is_one_line_and_gives_back_what_the_wire_said(service, principal):
    line = Line("ab" * 16, "cd" * 8, None, (service, "Get", principal, "token_expired", "rule", 0.9, "refresh"), 0.0)
    text = format_line("denial", line)
    assert "\n" not in text and printable(text) == text  # nothing acts on the terminal
    fields = dict(re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)', text.split(" trace=", 1)[1]))
    for name, value in (("service", service), ("principal", principal)):
        raw = fields[name]
        assert (json.loads(raw) if raw.startswith('"') else raw) == value
    assert ANSWER[0] == "service"


def _collect(*options: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(JITRACE), "collect", "--grpc", "127.0.0.1:0", "--http", "off", *options],
                          capture_output=True, text=True, timeout=60)


def test_metric_options_need_the_watch_and_a_valid_endpoint(tmp_path):
    for options, says in ((["--metrics", "127.0.0.1:0"], "add --watch"),
                          (["--watch", "--metrics-otlp", "ftp://x:1"], "--metrics-otlp"),
                          (["--watch", "--metrics-otlp", "http://x:1/v1/traces"], "/v1/metrics"),
                          (["--watch", "--watch-max-spans", "0"], "--watch-max-spans"),
                          (["--watch", "--metrics", "nowhere"], "HOST:PORT")):
        run = _collect("--out", str(tmp_path / "o"), *options)
        assert run.returncode == 2, (options, run.stderr)
        assert len(run.stderr.strip().splitlines()) == 1 and says in run.stderr and "Traceback" not in run.stderr


def test_a_metrics_address_in_use_is_one_line(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        run = _collect("--out", str(tmp_path / "o"), "--watch", "--metrics", f"127.0.0.1:{taken.getsockname()[1]}")
    assert run.returncode == 2, run.stderr
    assert "--metrics" in run.stderr and "cannot listen" in run.stderr and "Traceback" not in run.stderr


def _metrics_request(value: int) -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    sm = req.resource_metrics.add().scope_metrics.add()
    sm.metrics.append(Metric(name="orders", sum=Sum(data_points=[NumberDataPoint(as_int=value)], is_monotonic=True,
                                                     aggregation_temporality=2)))
    return req


def test_otlp_metrics_are_stored_as_they_came_and_analyze_skips_them(tmp_path):
    out = tmp_path / "collected"
    receiver = Receiver(out, grpc_addr="127.0.0.1:0", http_addr="127.0.0.1:0")
    grpc_port, http_port = receiver.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            export = channel.unary_unary("/opentelemetry.proto.collector.metrics.v1.MetricsService/Export")
            assert export(_metrics_request(3).SerializeToString(), timeout=10) == b""
        http = urllib.request.Request(f"http://127.0.0.1:{http_port}/v1/metrics",
                                      data=_metrics_request(5).SerializeToString(),
                                      headers={"Content-Type": "application/x-protobuf"})
        assert urllib.request.urlopen(http, timeout=10).status == 200
        assert receiver.stats["metric_points"] == 2
    finally:
        receiver.stop()
    stored = sorted(json.loads(p.read_text())["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["sum"]
                    ["dataPoints"][0]["asInt"] for p in (out / "metrics").rglob("*.json"))
    assert stored == ["3", "5"]
    world = _world()
    world.write_parquet(tmp_path / "spans.parquet")
    summary = analyze.analyze([str(out), str(tmp_path / "spans.parquet")], tmp_path / "report", quiet=True)
    assert summary["skipped_requests"] == 2 and summary["bad_records"] == 0


def test_the_prometheus_endpoint_serves_the_counts(tmp_path):
    metrics = Metrics("127.0.0.1:0")
    port = metrics.start()
    try:
        metrics.denial(("clock_drift", "shop.Orders", "Get"))
        metrics.denial(("token_expired", "shop.Orders", "Get"))
        metrics.denial(("clock_drift", "shop.Orders", "Get"), was=("token_expired", "shop.Orders", "Get"))
        metrics.set_offsets([("server-host", 4.0, 3.9, 4.1)])
        metrics.spans(7)
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        metrics.shutdown()
    assert re.search(r'jitrace_denials_total\{[^}]*cause="clock_drift"[^}]*\} 2\.0', text)
    assert re.search(r'jitrace_denials_total\{[^}]*cause="token_expired"[^}]*\} 0\.0', text)
    assert re.search(r'jitrace_clock_offset_seconds\{[^}]*domain="server-host"[^}]*\} 4\.0', text)
    assert re.search(r"jitrace_spans_received_total\{[^}]*\} 7\.0", text)
    assert re.search(r"jitrace_denial_corrections_total\{[^}]*\} 1\.0", text)


def test_a_file_compacted_before_the_watch_read_it_is_said(tmp_path):
    watcher = Watcher(out=io.StringIO())
    try:
        watcher.announce("spans", tmp_path / "gone.parquet", 10, 0.0)
        watcher._take(timeout=0)  # noqa: SLF001
        assert "1 files were compacted before the watch read them" in watcher.summary()
    finally:
        watcher.close()
