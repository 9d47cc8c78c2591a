"""Trust on real-world traces (issue 18): one span counted once, every status convention, no clock sample from a
span without a duration or a time, empty and odd inputs, cut files, and the response shapes of trace stores.

The same spans (``spanfactory.World``) are written as the files users have: OTLP JSON (as the Collector or an API
returns them), Jaeger downloads and Zipkin lists, and analyzed as ``jitrace analyze`` would.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from spanfactory import T0, Token, World, jaeger, jaeger_tag, otlp, otlp_value

from jitrace.analyzer import analyze, cli
from jitrace.analyzer.errors import UserError
from jitrace.analyzer.load import load_into
from jitrace.analyzer.steps import session

TMP = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def zipkin_span(trace_id: str, span_id: str, kind: str | None, service: str, ipv4: str, tags: dict,
                timestamp: int | None, duration: int | None, parent: str | None = None) -> dict:
    span = {"traceId": trace_id, "id": span_id, "name": "get", "localEndpoint": {"serviceName": service,
                                                                                 "ipv4": ipv4}, "tags": tags}
    for key, value in (("kind", kind), ("timestamp", timestamp), ("duration", duration), ("parentId", parent)):
        if value is not None:
            span[key] = value
    return span


def denied_world(healthy: int) -> World:
    """Hosts that talk enough for their clocks, and one call denied for an expired token."""
    world = World(offsets={"server-host": 0.002})
    token = Token(iat=T0, exp=T0 + 30)
    world.issue(token, T0)
    for i in range(healthy):
        assert world.call(T0 + 1 + i, token)["status"] == 0
    assert world.call(T0 + 40, token)["status"] == 16
    return world


def _analyzed(inputs: list[Path]) -> duckdb.DuckDBPyConnection:
    con = session.connect()
    load_into(con, [str(p) for p in inputs])
    session.run_queries(con)
    return con


# --- one span, one row ------------------------------------------------------------------------------------------


@TMP
@given(healthy=st.integers(1, 4), order=st.permutations(["otlp", "otlp_copy", "jaeger"]), data=st.data())
def test_one_denied_call_in_three_inputs_and_two_formats_is_one_attribution(tmp_path_factory, healthy, order, data):
    world = denied_world(healthy)
    folder = tmp_path_factory.mktemp("copies")
    files = {"otlp": folder / "export.json", "otlp_copy": folder / "again" / "export.json",
             "jaeger": folder / "jaeger-download.json"}
    files["otlp_copy"].parent.mkdir()
    files["otlp"].write_text(json.dumps(otlp(world.rows)))
    files["otlp_copy"].write_text(json.dumps(otlp(world.rows)))
    files["jaeger"].write_text(json.dumps(jaeger(world.rows)))
    alone = _analyzed([files["otlp"]])
    expected = alone.execute("SELECT trace_id, cause, rule FROM attributions").fetchall()
    assert len(expected) == 1 and expected[0][1] == "token_expired"
    con = session.connect()
    report = load_into(con, [str(files[name]) for name in order])
    assert report.spans == len(world.rows) and report.duplicate_spans == 2 * len(world.rows)
    session.run_queries(con)
    assert con.execute("SELECT trace_id, cause, rule FROM attributions").fetchall() == expected
    samples = con.execute("SELECT * FROM clock_samples ORDER BY ALL").fetchall()  # every constraint, once
    assert samples == alone.execute("SELECT * FROM clock_samples ORDER BY ALL").fetchall() and samples


def test_the_copy_with_the_most_facts_is_kept(tmp_path):
    world = denied_world(1)
    full = tmp_path / "full.json"
    full.write_text(json.dumps(otlp(world.rows)))
    bare = [dict(r, attributes="{}") for r in world.rows]  # the same spans, as an uninstrumented exporter saw them
    (tmp_path / "bare.json").write_text(json.dumps(otlp(bare)))
    for order in ([tmp_path / "bare.json", full], [full, tmp_path / "bare.json"]):
        con = _analyzed(order)
        assert con.execute("SELECT cause FROM attributions").fetchall() == [("token_expired",)]


# --- every status convention ------------------------------------------------------------------------------------

CONVENTIONS = [
    ("rpc.grpc.status_code", 7, 7), ("rpc.grpc.status_code", 16, 16),
    ("rpc.response.status_code", "PERMISSION_DENIED", 7), ("rpc.response.status_code", "UNAUTHENTICATED", 16),
    ("grpc.status_code", "PERMISSION_DENIED", 7),  # Brave
    ("grpc.status_code", "16", 16),  # Envoy, Istio
    ("grpc.status_code", 7, 7),  # OpenTelemetry .NET before the semantic conventions
    ("census.status_code", "7", 7), ("opencensus.status_code", 16, 16), ("status.code", 7, 7),
]


def _spell(name: object, style: int) -> object:
    """A status name as instrumentations write it: PERMISSION_DENIED, permission_denied, PermissionDenied."""
    if not isinstance(name, str) or name.isdigit():
        return name
    if style == 1:
        return name.lower()
    if style == 2:
        return "".join(w.capitalize() for w in name.split("_"))
    return name


@settings(max_examples=30, deadline=None)
@given(convention=st.sampled_from(CONVENTIONS), style=st.integers(0, 2), side=st.sampled_from(["SERVER", "CLIENT"]))
def test_each_status_convention_gives_its_denial(convention, style, side):
    key, value, code = convention
    world = World()
    call = world.call(T0, Token(exp=T0 - 10))  # expired: UNAUTHENTICATED
    for row in world.rows:  # the status only in this convention, on one side
        attrs = json.loads(row["attributes"])
        attrs.pop("rpc.grpc.status_code", None)
        if row is call[side.lower()]:
            attrs[key] = _spell(value, style)
        row["attributes"] = json.dumps(attrs)
    con = session.connect()
    world.load(con)
    session.run_queries(con)
    rows = con.execute("SELECT status_code, evidence FROM attributions").fetchall()
    if code in (7, 16):
        assert len(rows) == 1 and rows[0][0] == code
        assert json.loads(rows[0][1])["status_attribute"] == key
    else:
        assert rows == []


def test_brave_zipkin_tag_is_a_denial_end_to_end(tmp_path, capsys):
    spans = [zipkin_span("a" * 16, "b" * 16, "CLIENT", "gateway", "10.0.0.1", {}, 1_700_000_000_000_000, 3000),
             zipkin_span("a" * 16, "b" * 16, "SERVER", "orders", "10.0.0.2",
                         {"grpc.status_code": "PERMISSION_DENIED"}, 1_700_000_000_001_000, 1000)]
    spans[1]["shared"] = True
    (tmp_path / "zipkin.json").write_text(json.dumps(spans))
    assert cli.main(["analyze", str(tmp_path / "zipkin.json"), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["denials"] == 1


# --- spans without a time or a duration --------------------------------------------------------------------------


@TMP
@given(missing=st.lists(st.sampled_from(["duration", "timestamp", "zero"]), min_size=1, max_size=4),
       bogus_us=st.integers(-10**7, 10**7))
def test_spans_without_a_duration_or_timestamp_give_no_clock_sample_and_change_no_offset(tmp_path_factory, missing,
                                                                                         bogus_us):
    """Real Zipkin pairs between two hosts, then pairs whose client or server span has no duration, no timestamp or a
    zero duration (starting anywhere): no clock sample from them, the same offsets, and never the epoch."""
    base_us = 1_700_000_000_000_000
    good = []
    for i in range(3):  # server clock 5 ms ahead, 1 ms each way
        sid = f"{i + 1:016x}"
        good += [zipkin_span("c" * 16, sid, "CLIENT", "a", "10.0.0.1", {}, base_us + i * 10_000, 4000),
                 zipkin_span("c" * 16, sid, "SERVER", "b", "10.0.0.2", {}, base_us + i * 10_000 + 6000, 2000)]
    folder = tmp_path_factory.mktemp("times")
    (folder / "good.json").write_text(json.dumps(good))
    before = _analyzed([folder / "good.json"])
    offsets = before.execute("SELECT domain, offset_s FROM clock_offsets ORDER BY domain").fetchall()
    samples = before.execute("SELECT count(*) FROM clock_samples").fetchone()[0]
    assert samples == 3 and offsets[1][1] - offsets[0][1] == pytest.approx(0.005, abs=1e-6)
    odd = []
    for i, what in enumerate(missing):
        sid = f"{i + 100:016x}"
        client = zipkin_span("d" * 16, sid, "CLIENT", "a", "10.0.0.1", {}, base_us + bogus_us, 4000)
        server = zipkin_span("d" * 16, sid, "SERVER", "b", "10.0.0.2", {}, base_us + bogus_us + 1, 0)
        side = client if i % 2 else server
        if what == "timestamp":
            side.pop("timestamp")
        elif what == "duration":
            side.pop("duration")
        else:
            side["duration"] = 0
            server["duration"] = 0
        odd += [client, server]
    (folder / "odd.json").write_text(json.dumps(odd))
    con = session.connect()
    report = load_into(con, [str(folder / "good.json"), str(folder / "odd.json")])
    untimed = sum(1 for s in odd if "timestamp" not in s or "duration" not in s)
    assert report.spans_without_time == untimed and report.bad_records == 0
    assert con.execute("SELECT count(*) FROM spans WHERE start_ns = 0 OR end_ns = 0").fetchone()[0] == 0
    session.run_queries(con)
    assert con.execute("SELECT count(*) FROM clock_samples").fetchone()[0] == samples
    after = con.execute("SELECT domain, offset_s FROM clock_offsets ORDER BY domain").fetchall()
    assert [(d, pytest.approx(o, abs=1e-9)) for d, o in offsets] == after


def test_otlp_spans_with_an_unset_time_are_not_at_the_epoch(tmp_path):
    world = World()
    world.call(T0, Token(exp=T0 + 60))
    request = otlp(world.rows)
    span = request["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    del span["startTimeUnixNano"]
    (tmp_path / "export.json").write_text(json.dumps(request))
    con = session.connect()
    report = load_into(con, [str(tmp_path / "export.json")])
    assert report.spans_without_time == 1
    assert con.execute("SELECT count(*) FROM spans WHERE start_ns IS NULL").fetchone()[0] == 1


# --- empty and odd inputs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("content", [None, "[]", '{"resourceSpans": []}', '{"data": []}'])
def test_empty_input_exits_2_unless_allowed(tmp_path, capsys, content):
    inputs = tmp_path / "in"
    inputs.mkdir()
    if content is not None:
        (inputs / "spans.json").write_text(content)
    assert cli.main(["analyze", str(inputs), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"no spans in {inputs}" in err and "--allow-empty" in err
    assert not (tmp_path / "out").exists()
    assert cli.main(["analyze", str(inputs), "--out", str(tmp_path / "out"), "--quiet", "--allow-empty"]) == 0
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["spans"] == 0


@TMP
@given(stray=st.sampled_from([b"host,offset\na,1\n", b"\x89PNG\r\n\x1a\n" + bytes(range(64)),
                              b'{"kind": "not a trace"}', b"INFO started\n"]))
def test_a_folder_with_a_stray_file_loads_the_rest(tmp_path_factory, stray):
    folder = tmp_path_factory.mktemp("stray")
    world = denied_world(1)
    (folder / "export.json").write_text(json.dumps(otlp(world.rows)))
    (folder / "notes.csv").write_bytes(stray)
    con = duckdb.connect()
    report = load_into(con, [str(folder)])
    assert (report.spans, report.skipped_files, report.bad_records) == (len(world.rows), 1, 0)
    with pytest.raises(UserError, match=r"notes\.csv: .*expected one of"):  # named itself: an error
        load_into(duckdb.connect(), [str(folder / "notes.csv")])
    summary = analyze.analyze([str(folder)], folder.parent / f"{folder.name}-out", quiet=True)
    assert (summary["skipped_files"], summary["denials"], summary["exit_code"]) == (1, 1, 0)


# --- cut files ---------------------------------------------------------------------------------------------------


def _zipkin_spans(n: int) -> list[dict]:
    return [zipkin_span(f"{t + 1:016x}", f"{i + 1:016x}", "CLIENT" if i % 2 else "SERVER", f"svc{i % 3}",
                        f"10.0.0.{i % 5}", {"k": "v" * (i % 7)}, 1_700_000_000_000_000 + i, 10 + i)
            for t in range(3) for i in range(n)]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(2, 8), traces=st.booleans(), cut=st.floats(0.0, 1.0), gz=st.booleans())
def test_a_cut_zipkin_file_loads_its_whole_spans(tmp_path_factory, n, traces, cut, gz):
    import gzip

    spans = _zipkin_spans(n)
    doc = [spans[i:i + n] for i in range(0, len(spans), n)] if traces else spans
    text = json.dumps(doc).encode()
    first_end = text.index(b"}") + 1  # past the first span's first object: the format shows
    at = first_end + int(cut * (len(text) - 1 - first_end))  # never the whole file
    whole = sum(1 for s in spans if text.find(json.dumps(s).encode()) + len(json.dumps(s)) <= at)
    path = tmp_path_factory.mktemp("cut") / "zipkin.json"
    path.write_bytes(gzip.compress(text[:at]) if gz else text[:at])
    con = duckdb.connect()
    report = load_into(con, [str(path)])
    assert (report.spans, report.bad_records) == (whole, 1)
    assert "the JSON ends or breaks here" in report.problems[0] or "decompress" in report.problems[0]
    loaded = {r[0] for r in con.execute("SELECT span_id FROM spans").fetchall()}
    assert loaded == {s["id"] for s in spans[:whole]}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.floats(0.0, 1.0))
def test_a_cut_jaeger_download_loads_its_whole_spans(tmp_path_factory, cut):
    world = denied_world(3)
    doc = jaeger(world.rows)
    text = json.dumps(doc).encode()
    first = text.index(b'"spans"')
    at = first + 1 + int(cut * (text.index(b'"total"') - first - 1))
    spans = [s for t in doc["data"] for s in t["spans"]]
    whole = sum(1 for s in spans if text.find(json.dumps(s).encode()) + len(json.dumps(s)) <= at)
    path = tmp_path_factory.mktemp("cut") / "jaeger.json"
    path.write_bytes(text[:at])
    con = duckdb.connect()
    report = load_into(con, [str(path)])
    assert (report.spans, report.bad_records) == (whole, 1)
    assert {r[0] for r in con.execute("SELECT span_id FROM spans").fetchall()} == {s["spanID"] for s in spans[:whole]}


# --- trace stores' responses -------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["jaeger_v3", "jaeger_v3_stream", "tempo_batches", "tempo_v2", "zipkin_traces"])
def test_trace_store_responses_load_the_spans_they_hold(tmp_path, shape):
    world = denied_world(2)
    request = otlp(world.rows)
    if shape == "jaeger_v3":
        doc = json.dumps({"result": request})
    elif shape == "jaeger_v3_stream":  # one chunk per line
        half = len(request["resourceSpans"]) // 2
        doc = "\n".join(json.dumps({"result": {"resourceSpans": part}})
                        for part in (request["resourceSpans"][:half], request["resourceSpans"][half:]))
    elif shape == "tempo_batches":
        doc = json.dumps({"batches": request["resourceSpans"]})
    elif shape == "tempo_v2":
        doc = json.dumps({"trace": request})
    else:
        doc = json.dumps([[], _zipkin_spans(2)[:2], _zipkin_spans(2)[2:]])  # a list of traces, the first empty
    (tmp_path / "response.json").write_text(doc)
    con = duckdb.connect()
    report = load_into(con, [str(tmp_path / "response.json")])
    assert report.bad_records == 0
    assert report.spans == (len(_zipkin_spans(2)) if shape == "zipkin_traces" else len(world.rows))


# --- clock domains -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("process_tags", "domain"), [
    ([jaeger_tag("hostname", "web-7"), jaeger_tag("ip", "10.1.2.3")], "web-7"),  # Jaeger clients: hostname first
    ([jaeger_tag("ip", "10.1.2.3")], "10.1.2.3"),  # an address before the service
    ([jaeger_tag("host.id", "i-0abc"), jaeger_tag("hostname", "web-7")], "i-0abc"),
    ([jaeger_tag("service.instance.id", "pod-1"), jaeger_tag("ip", "10.1.2.3")], "10.1.2.3"),
    ([jaeger_tag("service.instance.id", "pod-1")], "pod-1"),
    ([], "orders"),
])
def test_jaeger_process_tags_give_the_clock_domain(tmp_path, process_tags, domain):
    doc = {"data": [{"traceID": "ab" * 8, "processes": {"p": {"serviceName": "orders", "tags": process_tags}},
                     "spans": [{"traceID": "ab" * 8, "spanID": "cd" * 8, "operationName": "x", "startTime": 1,
                                "duration": 1, "processID": "p", "tags": []}]}]}
    (tmp_path / "jaeger.json").write_text(json.dumps(doc))
    con = duckdb.connect()
    load_into(con, [str(tmp_path / "jaeger.json")])
    assert con.execute("SELECT domain FROM spans").fetchall() == [(domain,)]


def test_otel_host_ip_list_gives_its_first_address(tmp_path):
    world = World()
    world.call(T0, Token(exp=T0 + 60))
    request = otlp(world.rows)
    for rs in request["resourceSpans"]:
        rs["resource"]["attributes"] = [a for a in rs["resource"]["attributes"] if a["key"] != "host.name"] + [
            {"key": "host.ip", "value": otlp_value(["10.9.8.7", "fe80::1"])}]
    (tmp_path / "export.json").write_text(json.dumps(request))
    con = duckdb.connect()
    load_into(con, [str(tmp_path / "export.json")])
    assert {r[0] for r in con.execute("SELECT domain FROM spans").fetchall()} == {"10.9.8.7"}


@pytest.mark.parametrize("sorts", [True, False])
def test_spans_seen_twice_are_found_by_either_check(tmp_path, monkeypatch, sorts):
    # the check for copies sorts the spans' hashes (numpy) or lets DuckDB count them distinct: the same copies
    # dropped and the same spans without a time counted either way, and nothing dropped where there is no copy
    import jitrace.analyzer.load as load

    monkeypatch.setattr(load, "_sorts", lambda spans: sorts)
    world = World()
    for i in range(3):
        world.call(T0 + i, Token(exp=T0 + 60))
    request = otlp(world.rows)
    del request["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["startTimeUnixNano"]
    (tmp_path / "export.json").write_text(json.dumps(request))
    report = load_into(session.connect(), [str(tmp_path / "export.json")])
    assert (report.spans, report.duplicate_spans, report.spans_without_time) == (len(world.rows), 0, 1)
    (tmp_path / "again").mkdir()
    (tmp_path / "again" / "export.json").write_text(json.dumps(request))
    report = load_into(session.connect(), [str(tmp_path / "export.json"), str(tmp_path / "again" / "export.json")])
    assert (report.spans, report.duplicate_spans, report.spans_without_time) == (len(world.rows), len(world.rows), 1)
