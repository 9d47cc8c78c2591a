"""Bad input: a record that cannot be read is counted and reported with file and position, the rest loads;
strict makes it an error; an unreadable or unknown file is a one-line UserError. Hostile OTLP JSON never crashes."""

from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path

import duckdb
import otlp_requests
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jitrace.analyzer.errors import UserError
from jitrace.analyzer.load import load_into

GOOD = {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "ok",
        "startTimeUnixNano": "1", "endTimeUnixNano": "2"}


def _line(*spans) -> str:
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": list(spans)}]}]})


def _load(paths, strict=False):
    con = duckdb.connect()
    return con, load_into(con, [str(p) for p in paths], strict=strict)


def test_bad_records_are_counted_and_named_and_the_rest_loads(tmp_path):
    path = tmp_path / "export.jsonl"
    path.write_text("\n".join([
        _line(GOOD),
        '{"resourceSpans": [{"scopeSpans": [{"spans": [',  # truncated line (a writer killed mid-line)
        _line(GOOD | {"spanId": "xyz"}, GOOD | {"spanId": "0000000000000001"}),
        _line(GOOD | {"startTimeUnixNano": "soon", "spanId": "0000000000000002"}),
        _line(GOOD | {"kind": "SPAN_KIND_SIDEWAYS", "spanId": "0000000000000003"}),
        '{"something": "else"}',
        _line(GOOD | {"attributes": [{"key": "k", "value": {"intValue": "12x"}}], "spanId": "0000000000000004"}),
    ]) + "\n")
    con, report = _load([path])
    assert (report.spans, report.bad_records) == (2, 6)
    assert report.problems == [
        f"{path}:2: invalid JSON: Expecting value (column 47)",
        f"{path}:3#0: spanId: 'xyz' is neither hex nor base64",
        f"{path}:4#0: startTimeUnixNano: 'soon' is not an integer",
        f"{path}:5#0: kind: unknown value 'SPAN_KIND_SIDEWAYS'",
        f"{path}:6: expected an OTLP object with resourceSpans or resourceLogs",
        f"{path}:7#0: attributes['k'].intValue: '12x' is not an integer",
    ]
    assert all("\n" not in p for p in report.problems)
    assert con.execute("SELECT span_id FROM spans ORDER BY 1").fetchall() == [("0000000000000001",),
                                                                              ("eee19b7ec3c1b174",)]


@pytest.mark.parametrize(("value", "problem"), [
    ({"arrayValue": [1]}, "arrayValue: expected an object, got list"),
    ({"kvlistValue": "x"}, "kvlistValue: expected an object, got str"),
    ({"doubleValue": 10**400}, "doubleValue: '1000000000000000000000000000000000000000' is not a number"),
    ({"arrayValue": {"values": [{"doubleValue": 10**400}]}}, "doubleValue: '1000000000000000000000000000000000000000'"
                                                              " is not a number"),
])
def test_a_value_of_the_wrong_shape_is_a_bad_record_not_a_crash(tmp_path, value, problem):
    path = tmp_path / "export.jsonl"
    path.write_text(_line(GOOD | {"attributes": [{"key": "k", "value": value}]}) + "\n" + _line(GOOD) + "\n")
    _, report = _load([path])
    assert (report.spans, report.bad_records) == (1, 1)
    assert report.problems == [f"{path}:1#0: attributes['k'].{problem}"]


def test_strict_makes_a_bad_record_an_error_naming_it(tmp_path):
    path = tmp_path / "export.jsonl"
    path.write_text(_line(GOOD) + "\n" + _line(GOOD | {"traceId": 5}) + "\n")
    with pytest.raises(UserError, match=r"export\.jsonl:2#0: traceId: expected a string, got int.*--strict"):
        _load([path], strict=True)


def test_bad_records_in_other_formats(tmp_path, real_data):
    zipkin = json.loads((real_data / "skew.json").read_text())
    zipkin[1]["timestamp"] = "yesterday"
    (tmp_path / "z.json").write_text(json.dumps(zipkin))
    lines = [json.dumps({"message": "ok", "trace_id": "ab" * 16}), "not json at all",
             json.dumps({"message": "bad time", "timestamp": "31/12/2024"}), "[1]"]
    (tmp_path / "app.jsonl").write_text("\n".join(lines))
    proto, _ = otlp_requests.traces(3)
    blob = b"".join(struct.pack(">I", len(b)) + b for b in [proto.SerializeToString()] * 2)
    (tmp_path / "t.binpb").write_bytes(blob[:-5])  # the second message is cut short
    _, report = _load([tmp_path])
    assert (report.spans, report.logs, report.bad_records) == (3 + 3, 1, 5)
    joined = "\n".join(report.problems)
    assert f"{tmp_path / 'z.json'}#1: timestamp: 'yesterday' is not an integer" in joined
    assert f"{tmp_path / 'app.jsonl'}:2: invalid JSON" in joined
    assert f"{tmp_path / 'app.jsonl'}:3: timestamp: '31/12/2024' is not a time" in joined
    assert f"{tmp_path / 'app.jsonl'}:4: expected a JSON object, got list" in joined
    assert f"{tmp_path / 't.binpb'}@{len(blob) // 2}: truncated message" in joined


@pytest.mark.parametrize(("content", "message"), [
    # plain text is named as such, and nothing of it is quoted (it may be a key or a password file)
    (b"hello, world\n", "plain text that is not JSON (a log, a key, a CSV?)"),
    (b"INFO:jitrace.lab.gateway:call Read on r1 ended PERMISSION_DENIED GRANT_NOT_ACTIVE\nINFO:...\n",
     "plain text that is not JSON"),
    ("ключ,значение\n".encode(), "plain text that is not JSON"),
    (b"Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJib2IifQ.c2ln\n", "plain text that is not JSON"),
    (b'{"kind": "not a trace"}', "a JSON object with keys kind in no known trace or log format"),
    (b'{"resourceSpans": [', "not valid JSON"),
    (b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "neither length-prefixed nor bare OTLP protobuf"),
    (b"\x1f\x8b\x08\x00 truncated gzip", "cannot decompress"),
    (b"PAR1 not really parquet PAR1", "unreadable Parquet"),
])
def test_unknown_or_unreadable_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "input.dat"
    path.write_bytes(content)
    with pytest.raises(UserError) as err:
        _load([path])
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value) and "\n" not in str(err.value)
    assert not any(word in str(err.value) for word in ("hello", "INFO:", "ключ", "Bearer", "eyJ"))


def test_missing_inputs_and_foreign_parquet(tmp_path):
    with pytest.raises(UserError, match="no such file or folder"):
        _load([tmp_path / "nope.json"])
    with pytest.raises(UserError, match="no file matches this pattern"):
        _load([str(tmp_path / "*.json")])
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"a": [1]}), tmp_path / "x.parquet")
    with pytest.raises(UserError, match=r"x\.parquet: Parquet without jitrace's span or log columns"):
        _load([tmp_path / "x.parquet"])


def test_many_bad_records_keep_an_exact_count_and_a_bounded_list(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(_line(GOOD) + "\n" + "{]\n" * 1500)
    _, report = _load([path])
    assert report.bad_records == 1500 and len(report.problems) == 1001
    assert report.problems[-1] == "... and 500 more bad records"


# Hostile OTLP JSON: any JSON value in any field of an otherwise well-formed export, and random JSON documents.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
FIELDS = ["traceId", "spanId", "parentSpanId", "name", "kind", "startTimeUnixNano", "endTimeUnixNano", "status",
          "attributes", "events", "links"]


def _any_value():
    scalars = st.one_of(
        st.builds(lambda v: {"stringValue": v}, json_values), st.builds(lambda v: {"intValue": v}, json_values),
        st.builds(lambda v: {"doubleValue": v}, json_values), st.builds(lambda v: {"boolValue": v}, json_values),
        st.builds(lambda v: {"bytesValue": v}, json_values), json_values,
        # containers of the wrong shape, and integers no double holds
        st.builds(lambda v: {"arrayValue": v}, json_values), st.builds(lambda v: {"kvlistValue": v}, json_values),
        st.builds(lambda v: {"doubleValue": v}, st.integers(min_value=10**300, max_value=10**320)),
    )
    return st.recursive(scalars, lambda inner: st.builds(lambda vs: {"arrayValue": {"values": vs}},
                                                         st.lists(inner, max_size=3)), max_leaves=6)


hostile_span = st.fixed_dictionaries(
    {},
    optional={f: json_values for f in FIELDS} | {
        "attributes": st.lists(st.fixed_dictionaries({"key": st.text(max_size=8) | json_values,
                                                      "value": _any_value()}), max_size=3),
    },
).map(lambda extra: GOOD | extra)
hostile_doc = st.one_of(
    st.builds(lambda spans, res: {"resourceSpans": [{"resource": res, "scopeSpans": [{"spans": spans}]}]},
              st.lists(hostile_span, max_size=4), json_values),
    st.builds(lambda v: {"resourceSpans": v}, json_values),
    st.builds(lambda v: {"resourceLogs": [{"scopeLogs": [{"logRecords": v}]}]}, json_values),
)


def _check(data: str | bytes, suffix: str) -> None:
    """Load hostile ``data`` as a file: a one-line error naming the file, or counts that agree with what was stored."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"in{suffix}"
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        con = duckdb.connect()
        try:
            report = load_into(con, [str(path)])
        except UserError as err:
            assert "\n" not in str(err) and str(path) in str(err)
            return
        spans, logs = con.execute("SELECT (SELECT count(*) FROM spans), (SELECT count(*) FROM logs)").fetchone()
        assert (report.spans, report.logs) == (spans, logs)
        assert len(report.problems) == min(report.bad_records, 1000)
        # every stored attribute map is valid JSON (NaN/Infinity included)
        for (attrs,) in con.execute("SELECT attributes::VARCHAR FROM spans").fetchall():
            json.loads(attrs)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_doc)
def test_hostile_otlp_json_is_loaded_or_counted_never_a_crash(doc):
    _check(json.dumps(doc), ".json")
    _check(json.dumps(doc) + "\n" + json.dumps(doc) + "\n", ".jsonl")


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_is_loaded_counted_or_refused(text):
    _check(text, ".json")


hostile_zipkin = st.lists(st.fixed_dictionaries({"traceId": json_values | st.just("1e223ff1f80f1c69"),
                                                 "id": json_values | st.just("43210ae0c10d1234")},
                                                optional={k: json_values for k in ("parentId", "kind", "timestamp",
                                                                                   "duration", "localEndpoint",
                                                                                   "tags", "annotations", "name")}),
                          min_size=1, max_size=3)
hostile_jaeger = st.builds(lambda spans, procs: {"data": [{"traceID": "1", "spans": spans, "processes": procs}]},
                           st.lists(st.dictionaries(st.sampled_from(["traceID", "spanID", "operationName",
                                                                     "references", "startTime", "duration", "tags",
                                                                     "logs", "processID", "process"]),
                                                    json_values), max_size=3),
                           json_values)
hostile_lines = st.lists(st.dictionaries(st.sampled_from(["message", "trace_id", "otelSpanID", "levelname",
                                                          "timestamp", "decision_id", "bundles", "result",
                                                          "labels", "span_id", "asctime"]), json_values,
                                         min_size=1), min_size=1, max_size=4)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_zipkin, hostile_jaeger, hostile_lines)
def test_hostile_jaeger_zipkin_and_log_lines_never_crash(zipkin, jaeger, lines):
    _check(json.dumps(zipkin), ".json")
    _check(json.dumps(jaeger), ".json")
    _check("\n".join(json.dumps(x) for x in lines), ".jsonl")


def _framed(*messages: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(m)) + m for m in messages)


_PROTO = _framed(otlp_requests.traces(4)[0].SerializeToString(), otlp_requests.logs(2).SerializeToString())


def _mutate(data: bytes, at: int, flip: int, cut: int) -> bytes:
    at %= len(data)
    return (data[:at] + bytes([data[at] ^ flip]) + data[at + 1:])[:cut]


@settings(max_examples=80, deadline=None)
@given(st.one_of(st.binary(min_size=1, max_size=300),
                 st.builds(_mutate, st.just(_PROTO), st.integers(0, 10**6), st.integers(1, 255),
                           st.integers(1, len(_PROTO)))))
def test_hostile_protobuf_files_load_count_or_refuse(data):
    _check(data, ".binpb")


@pytest.fixture(scope="module")
def parquet_bytes(tmp_path_factory):
    import pyarrow.parquet as pq

    from jitrace.analyzer import schema
    from jitrace.analyzer.rows import table

    path = tmp_path_factory.mktemp("pq") / "spans.parquet"
    row = ("5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174", None, "ok", "SERVER", 1, 2, "UNSET", None, "s",
           "{}", "{}", "[]", "[]", None, None)
    pq.write_table(table([row] * 50, schema.SPANS), path, compression="zstd")
    return path.read_bytes()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(at=st.integers(0, 10**6), flip=st.integers(1, 255), cut=st.integers(4, 10**6))
def test_damaged_parquet_is_a_one_line_error_or_loads(parquet_bytes, at, flip, cut):
    _check(_mutate(parquet_bytes, at, flip, max(cut % (len(parquet_bytes) + 1), 4)), ".parquet")


@pytest.mark.parametrize("big", [2**63, 2**70, 1e300, -(2**64)])
def test_times_beyond_64_bits_are_bad_records_not_crashes(tmp_path, big):
    """Found by hypothesis: a log timestamp of 2**63 reached the BIGINT column and failed the whole load."""
    app = tmp_path / "app.jsonl"
    app.write_text(json.dumps({"message": "x", "timestamp": big, "trace_id": "ab" * 16}) + "\n"
                   + json.dumps({"message": "ok", "timestamp": 1_700_000_000, "trace_id": "ab" * 16}) + "\n")
    zipkin = tmp_path / "zipkin.json"
    zipkin.write_text(json.dumps([{"traceId": "ab" * 8, "id": "cd" * 8, "timestamp": big, "duration": big},
                                  {"traceId": "ab" * 8, "id": "ce" * 8, "timestamp": 1, "duration": 1}]))
    jaeger = tmp_path / "jaeger.json"
    jaeger.write_text(json.dumps({"data": [{"traceID": "ab" * 8, "processes": {"p": {"serviceName": "s"}}, "spans": [
        {"traceID": "ab" * 8, "spanID": "cd" * 8, "startTime": big, "duration": 1, "processID": "p"},
        {"traceID": "ab" * 8, "spanID": "ce" * 8, "startTime": 1, "duration": big, "processID": "p"},
        {"traceID": "ab" * 8, "spanID": "d0" * 8, "startTime": 1, "duration": "1" + "0" * 400 + "s", "processID": "p"},
        {"traceID": "ab" * 8, "spanID": "cf" * 8, "startTime": 1, "duration": 1, "processID": "p"}]}]}))
    for path in (app, zipkin, jaeger):
        con, report = _load([path])
        assert report.spans + report.logs >= 1 and report.bad_records >= 1, (path.name, report)
        assert all("\n" not in p for p in report.problems)
