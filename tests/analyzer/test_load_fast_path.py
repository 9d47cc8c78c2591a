"""The fast path for OTLP JSON-lines span files, the C reader (analyzer/load/_otlp_json_native.py), loads exactly
what the Python reader loads: a range of lines it might read otherwise is read by the Python reader, and a file not
for it is left whole to the Python reader: same rows, same bad-record reports, same errors. Each file is loaded
twice, with the fast path and without it, and the two compared.
Where the C reader was not built, test_the_c_reader_is_built fails and so do the tests that expect it to read."""

from __future__ import annotations

import base64
import gzip
import json
import tempfile
from pathlib import Path

import duckdb
import jwt
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_load_bad_input import hostile_doc

import jitrace.analyzer.load as load
from jitrace.analyzer import schema
from jitrace.analyzer.errors import UserError
from jitrace.analyzer.load import _files, _otlp_json_native, _text

ROWS = "SELECT * FROM span_fact_rows"  # loaded rows, stored with their facts (the facts compared too)
JSON_COLUMNS = (10, 11, 12, 13)  # resource, attributes, events, links: compared as parsed JSON, types included


def test_the_c_reader_is_built():
    # setup.py builds it where a C compiler is (it is optional there): CI has one, so a failed build fails here
    assert _otlp_json_native._otlp_native is not None, "analyzer/load/_otlp_native.c was not built: see pip's output"


def _typed(value):
    """A parsed JSON value with its JSON types spelled out (1 and 1.0, 0.0 and -0.0 differ)."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):
        return ("int", value)
    if isinstance(value, float):
        return ("float", repr(value))
    if isinstance(value, list):
        return ("list", [_typed(v) for v in value])
    if isinstance(value, dict):
        return ("object", [(k, _typed(v)) for k, v in value.items()])
    return (type(value).__name__, value)


def _normal(row: tuple) -> tuple:
    return tuple(repr(_typed(json.loads(v))) if i in JSON_COLUMNS else v for i, v in enumerate(row))


class _Load:
    def __init__(self, paths, *, fast: bool, strict: bool = False):
        self.fast_files = []
        self.python_ranges = 0  # ranges of those files the C reader left to the Python reader
        self.without_facts = 0  # spans the C reader read whose facts it left to span_facts.sql
        con = duckdb.connect()
        module = _otlp_json_native
        real_insert = module.insert

        def spy(con, path):
            loaded = real_insert(con, path)
            if loaded is not None:
                self.fast_files.append(path)
                self.python_ranges += loaded.python_ranges
                self.without_facts += loaded.without_facts
            return loaded

        _text.FAST_PATH, module.insert = fast, spy
        try:
            self.report = load.load_into(con, [str(p) for p in paths], strict=strict)
        finally:
            _text.FAST_PATH, module.insert = True, real_insert
        self.rows = sorted((_normal(r) for r in con.execute(ROWS).fetchall()), key=repr)
        self.logs = sorted(con.execute("SELECT * FROM logs").fetchall(), key=repr)
        con.close()


def _both(paths) -> tuple[_Load, _Load]:
    """The load with the fast path and the Python-only load; asserts they agree."""
    fast, python = _Load(paths, fast=True), _Load(paths, fast=False)
    assert fast.rows == python.rows
    assert fast.logs == python.logs
    assert (fast.report.spans, fast.report.logs, fast.report.bad_records, fast.report.problems) == \
           (python.report.spans, python.report.logs, python.report.bad_records, python.report.problems)
    return fast, python


def _same_outcome(paths) -> _Load | None:
    """As _both, where the Python reader may also refuse the file: then the load with the fast path refuses it with
    the same one-line error (and None is returned)."""
    try:
        return _both(paths)[0]
    except UserError as exc:
        with pytest.raises(UserError) as again:
            _Load(paths, fast=True)
        assert str(again.value) == str(exc)
        return None


# ------------------------------------------------------------------------------------------------ generated files

# OTLP's enums as producers write them: the number, or the proto name
KINDS = st.one_of(st.integers(0, len(schema.SPAN_KINDS) - 1),
                  st.sampled_from([f"SPAN_KIND_{k}" for k in schema.SPAN_KINDS]))
CODES = st.one_of(st.integers(0, len(schema.STATUS_CODES) - 1),
                  st.sampled_from([f"STATUS_CODE_{c}" for c in schema.STATUS_CODES]))
INT64 = st.integers(-(2**63), 2**63 - 1)
TIMES = st.integers(0, 2**63 - 1)
TOKEN = jwt.encode({"sub": "bob", "exp": 1}, "load-fast-path-test-key-32-bytes!", algorithm="HS256")  # at run time
TEXT = st.one_of(st.text(max_size=12), st.sampled_from(["", "grpc", "é\"\\/\n\t\x00\x1f\u2028😀", f"Bearer {TOKEN}",
                                                       "nullable", "a, null", "x:inf", "{}", "}},{"]))
KEYS = st.one_of(st.text(max_size=8), st.sampled_from([
    "service.name", "rpc.grpc.status_code", "jit.token.ttl_s", "host.name", "key", "value", "stringValue",
    # the facts' inputs of every type the C reader gives (VARCHAR, DOUBLE, BIGINT, VARCHAR[]): any value may come
    "jit.token.present", "jit.token.id", "jit.clock.sent_ns", "jit.policy.granted", "jit.policy.request",
    "host.ip", "rpc.response.status_code", "jit.token.check"]))
DOUBLES = st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                    st.sampled_from([0.0, -0.0, 1.0, 5.0, 1e16, 1e22, 1.5e-7, 5e-324, 123456789.125, -1.5]))


def _hex(raw: bytes, rng) -> str:
    text = raw.hex()
    return {0: text, 1: text.upper(), 2: base64.b64encode(raw).decode()}[rng]


@st.composite
def _id(draw, size: int) -> str:
    raw = draw(st.binary(min_size=size, max_size=size).filter(lambda b: any(b)))
    return _hex(raw, draw(st.integers(0, 2)))


def _scalar():
    return st.one_of(
        st.builds(lambda s: {"stringValue": s}, TEXT),
        st.builds(lambda i, as_text: {"intValue": str(i) if as_text else i}, INT64, st.booleans()),
        st.builds(lambda d: {"doubleValue": d}, DOUBLES),
        st.builds(lambda i: {"doubleValue": i}, st.integers(-(10**20), 10**20)),  # an integer literal: a double
        st.builds(lambda b: {"boolValue": b}, st.booleans()),
    )


def _array():
    def of(strategy, field, convert=lambda x: x):
        return st.builds(lambda xs: {"arrayValue": {"values": [{field: convert(x)} for x in xs]}},
                         st.lists(strategy, max_size=4))
    return st.one_of(of(TEXT, "stringValue"), of(st.integers(-(10**17), 10**17), "intValue", str),
                     of(st.integers(-(10**17), 10**17), "intValue"), of(st.booleans(), "boolValue"),
                     st.just({"arrayValue": {}}))


def _attributes(max_size: int = 5):
    value = st.one_of(_scalar(), _array(), st.just({}))
    kv = st.one_of(st.builds(lambda k, v: {"key": k, "value": v}, KEYS, value), st.builds(lambda k: {"key": k}, KEYS))
    return st.lists(kv, max_size=max_size, unique_by=lambda kv: kv["key"])


@st.composite
def _span(draw) -> dict:
    span = {"traceId": draw(_id(16)), "spanId": draw(_id(8))}
    optional = {
        "parentSpanId": st.one_of(_id(8), st.just(""), st.just("0" * 16)),
        "name": TEXT,
        "kind": KINDS,
        "startTimeUnixNano": st.one_of(TIMES, TIMES.map(str)),
        "endTimeUnixNano": st.one_of(TIMES, TIMES.map(str)),
        "status": st.fixed_dictionaries({}, optional={"code": CODES, "message": TEXT}),
        "attributes": _attributes(),
        "events": st.lists(st.fixed_dictionaries({}, optional={
            "name": TEXT, "timeUnixNano": st.one_of(TIMES, TIMES.map(str)), "attributes": _attributes(3)}),
            max_size=2),
        "links": st.lists(st.builds(lambda t, s, a: {"traceId": t, "spanId": s, "attributes": a},
                                    _id(16), _id(8), _attributes(2)), max_size=2),
        "droppedAttributesCount": st.integers(0, 3),
        "traceState": st.text(max_size=5),
    }
    for field, strategy in optional.items():
        if draw(st.booleans()):
            span[field] = draw(strategy)
    return span


@st.composite
def _request(draw) -> dict:
    resources = []
    for _ in range(draw(st.integers(0, 2))):
        resource = {}
        if draw(st.booleans()):
            service = draw(st.one_of(st.builds(lambda s: {"stringValue": s}, TEXT), _scalar()))
            attrs = [kv for kv in draw(_attributes(3)) if kv["key"] != "service.name"]
            resource["resource"] = {"attributes": [{"key": "service.name", "value": service}, *attrs]}
        scopes = []
        for _ in range(draw(st.integers(0, 2))):
            scope = {"spans": draw(st.lists(_span(), max_size=3))}
            if draw(st.booleans()):
                scope["scope"] = draw(st.fixed_dictionaries({}, optional={"name": TEXT, "version": TEXT}))
            scopes.append(scope)
        resource["scopeSpans"] = scopes
        resources.append(resource)
    return {"resourceSpans": resources}


def _dumps(obj, style: int) -> str:
    """The spellings producers use: compact (the Collector), Python's default separators, ASCII-only escapes."""
    if style == 0:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    return json.dumps(obj, ensure_ascii=style == 2)


def _write(folder: str, lines: list[str]) -> Path:
    path = Path(folder) / "export.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


# Files the fast path must decline (or read identically): each a good file with one thing changed.
GOOD_SPAN = {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "ok",
             "startTimeUnixNano": "1", "endTimeUnixNano": "2",
             "attributes": [{"key": "k", "value": {"stringValue": "v"}}]}


def _line(*spans, **resource) -> str:
    return json.dumps({"resourceSpans": [{**resource, "scopeSpans": [{"spans": list(spans)}]}]})


MUTATIONS = {
    "a truncated line": lambda lines: [lines[0], lines[1][:40], *lines[2:]],
    "a bad id": lambda lines: [lines[0], _line(GOOD_SPAN | {"spanId": "xyz"}), *lines[2:]],
    "a short hex id": lambda lines: [lines[0], _line(GOOD_SPAN | {"spanId": "ee19b7ec3c1b174"}), *lines[2:]],
    "an all-zero trace id": lambda lines: [lines[0], _line(GOOD_SPAN | {"traceId": "0" * 32}), *lines[2:]],
    "a numeric id": lambda lines: [lines[0], _line(GOOD_SPAN | {"spanId": 1234567890123456}), *lines[2:]],
    "an unknown kind": lambda lines: [lines[0], _line(GOOD_SPAN | {"kind": "SPAN_KIND_SIDEWAYS"}), *lines[2:]],
    "a float kind": lambda lines: [lines[0], _line(GOOD_SPAN | {"kind": 2.0}), *lines[2:]],
    "a time spelled 1e3": lambda lines: [lines[0], _line(GOOD_SPAN | {"startTimeUnixNano": 1e3}), *lines[2:]],
    "a time past 63 bits": lambda lines: [lines[0], _line(GOOD_SPAN | {"endTimeUnixNano": str(2**63)}), *lines[2:]],
    "an int spelled 007": lambda lines: [lines[0], _line(GOOD_SPAN | {"attributes": [
        {"key": "i", "value": {"intValue": "007"}}]}), *lines[2:]],
    "a double as a string": lambda lines: [lines[0], _line(GOOD_SPAN | {"attributes": [
        {"key": "d", "value": {"doubleValue": "NaN"}}]}), *lines[2:]],
    "a numeric name": lambda lines: [lines[0], _line(GOOD_SPAN | {"name": 5}), *lines[2:]],
    "a string bool": lambda lines: [lines[0], _line(GOOD_SPAN | {"attributes": [
        {"key": "b", "value": {"boolValue": "true"}}]}), *lines[2:]],
    "a numeric key": lambda lines: [lines[0], _line(GOOD_SPAN | {"attributes": [
        {"key": 5, "value": {"boolValue": True}}]}), *lines[2:]],
    "a repeated key": lambda lines: [lines[0], _line(GOOD_SPAN | {"attributes": [
        {"key": "k", "value": {"intValue": 1}}, {"key": "k", "value": {"intValue": 2}}]}), *lines[2:]],
    "a kvlist": lambda lines: [lines[0], _line(GOOD_SPAN | {"attributes": [
        {"key": "m", "value": {"kvlistValue": {"values": [{"key": "a", "value": {"intValue": 1}}]}}}]}), *lines[2:]],
    "bytes": lambda lines: [lines[0], _line(GOOD_SPAN | {"attributes": [
        {"key": "m", "value": {"bytesValue": "AAE="}}]}), *lines[2:]],
    "an array of doubles": lambda lines: [lines[0], _line(GOOD_SPAN | {"attributes": [
        {"key": "m", "value": {"arrayValue": {"values": [{"doubleValue": 1.5}]}}}]}), *lines[2:]],
    "a nested array": lambda lines: [lines[0], _line(GOOD_SPAN | {"attributes": [
        {"key": "m", "value": {"arrayValue": {"values": [{"arrayValue": {}}]}}}]}), *lines[2:]],
    "an attribute value that is no object": lambda lines: [lines[0], _line(GOOD_SPAN | {"attributes": [
        {"key": "m", "value": "v"}]}), *lines[2:]],
    "a status that is a list": lambda lines: [lines[0], _line(GOOD_SPAN | {"status": []}), *lines[2:]],
    "a null value": lambda lines: [lines[0], _line(GOOD_SPAN | {"attributes": [
        {"key": "m", "value": {"stringValue": None}}]}), *lines[2:]],
    "a null intValue": lambda lines: [lines[0], _line(GOOD_SPAN | {"attributes": [
        {"key": "m", "value": {"intValue": None}}]}), *lines[2:]],
    "a null name": lambda lines: [lines[0], _line(GOOD_SPAN | {"name": None}), *lines[2:]],
    "null resourceSpans": lambda lines: [lines[0], '{"resourceSpans": null}', *lines[2:]],
    "a trailing comma": lambda lines: [lines[0], lines[1].replace("]}]}", "],}]}", 1), *lines[2:]],
    "a trailing comma in a list": lambda lines: [lines[0], lines[1].replace("}]}]}", "},]}]}", 1), *lines[2:]],
    "a nan literal": lambda lines: [lines[0], lines[1].replace('"stringValue": "v"', '"doubleValue": nan'),
                                    *lines[2:]],
    "an Infinity literal": lambda lines: [lines[0], lines[1].replace('"stringValue": "v"', '"doubleValue": Infinity'),
                                          *lines[2:]],
    "an inf literal in a field nobody reads": lambda lines: [
        lines[0], lines[1].replace('"name": "ok"', '"name": "ok", "droppedAttributesCount": -inf'), *lines[2:]],
    "a line of something else": lambda lines: [lines[0], '{"something": "else"}', *lines[2:]],
    "a JSON array line": lambda lines: [lines[0], "[1, 2]", *lines[2:]],
    "a logs line": lambda lines: [lines[0], json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"timeUnixNano": "1", "body": {"stringValue": f"authorization: Bearer {TOKEN}"}}]}]}]}), *lines[2:]],
    "the old instrumentationLibrarySpans": lambda lines: [lines[0], json.dumps({"resourceSpans": [
        {"instrumentationLibrarySpans": [{"spans": [GOOD_SPAN]}]}]}), *lines[2:]],
    "a resource with a bad attribute and no spans": lambda lines: [lines[0], json.dumps({"resourceSpans": [
        {"resource": {"attributes": [{"key": "k", "value": {"intValue": "x"}}]}, "scopeSpans": []}]}), *lines[2:]],
    "a blank line": lambda lines: [lines[0], "", *lines[1:]],
    "a line of spaces": lambda lines: [lines[0], "  \t", *lines[1:]],
    "trailing blank lines": lambda lines: [*lines, "", " ", ""],
    "CRLF line ends": lambda lines: [line + "\r" for line in lines],
    "a form feed": lambda lines: [lines[0] + "\f", *lines[1:]],
    "a byte order mark": lambda lines: ["\ufeff" + lines[0], *lines[1:]],
    "a byte order mark on line 2": lambda lines: [lines[0], "\ufeff" + lines[1], *lines[2:]],
    "two objects on a line": lambda lines: [lines[0], lines[1] + lines[1], *lines[2:]],
    "one line": lambda lines: lines[:1],
    "an escaped key": lambda lines: [lines[0], lines[1].replace('"stringValue"', '"string\\u0056alue"'), *lines[2:]],
    "a duplicate field": lambda lines: [lines[0], lines[1].replace('"name": "ok"', '"name": "ok", "name": "no"'),
                                        *lines[2:]],
    "a bearer token in an attribute": lambda lines: [lines[0], lines[1].replace('"v"', json.dumps(f"Bearer {TOKEN}")),
                                                     *lines[2:]],
    "base64 ids": lambda lines: [lines[0], _line(GOOD_SPAN | {"traceId": "W47/95gDgQPSabYzgT/GDA==",
                                                              "spanId": "7uGbfsPBsXQ="}), *lines[2:]],
    "a missing key": lambda lines: [lines[0], _line(GOOD_SPAN | {"attributes": [
        {"value": {"stringValue": "v"}}]}), *lines[2:]],
    "a key in another case": lambda lines: [lines[0], _line(GOOD_SPAN | {"SpanId": "xyz", "Attributes": 5}),
                                            *lines[2:]],
    "a bool as a double": lambda lines: [lines[0], _line(GOOD_SPAN | {"attributes": [
        {"key": "d", "value": {"doubleValue": True}}]}), *lines[2:]],
    "content after the object": lambda lines: [lines[0], lines[1] + ', "x": 1', *lines[2:]],
    "a logs line first": lambda lines: [json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"timeUnixNano": "1", "body": {"stringValue": "hello"}}]}]}]}), *lines],
    "a string that looks like a literal": lambda lines: [lines[0], lines[1].replace('"v"', '"[nan]"'), *lines[2:]],
    "invalid UTF-8": lambda lines: [lines[0], lines[1].replace('"v"', '"v\udcff"'), *lines[2:]],
}
MUST_READ = {"trailing blank lines", "CRLF line ends", "a bearer token in an attribute", "base64 ids",
             "an escaped key", "a blank line", "a line of spaces", "a byte order mark", "a key in another case",
             "a short hex id", "a kvlist", "bytes", "an array of doubles", "a nested array",
             "a string that looks like a literal"}
EITHER = {"a duplicate field"}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_a_file_with_one_oddity_loads_exactly_as_the_python_reader_loads_it(tmp_path, name):
    good = [_line(GOOD_SPAN | {"spanId": f"{i + 1:016x}"}, resource={"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "svc"}}]}}) for i in range(4)]
    lines = MUTATIONS[name](good)
    path = tmp_path / "export.jsonl"
    path.write_bytes("\n".join(lines).encode("utf-8", errors="surrogateescape") + b"\n")
    fast = _same_outcome([path])
    must_decline = set(MUTATIONS) - MUST_READ - EITHER
    if fast is None:
        assert name in must_decline
    elif name in must_decline:  # the file, or the odd line alone, left to the Python reader
        assert fast.fast_files == [] or fast.python_ranges == 1, f"{name}: the C reader read what it must leave"
    elif name in MUST_READ:
        assert fast.fast_files == [path] and fast.python_ranges == 0, f"{name}: the C reader declined what it reads"


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_doc)
def test_hostile_otlp_json_loads_the_same_with_the_fast_path(doc):
    # test_load_bad_input's hostile exports (any JSON value in any field): read exactly, or left to Python
    with tempfile.TemporaryDirectory() as folder:
        _same_outcome([_write(folder, [json.dumps(doc), json.dumps(doc)])])


def test_tokens_in_logs_are_redacted_the_fast_path_leaves_logs_to_python(tmp_path):
    path = tmp_path / "export.jsonl"
    log = {"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"timeUnixNano": "1", "body": {"stringValue": f"authorization: Bearer {TOKEN}"},
         "attributes": [{"key": "jwt", "value": {"stringValue": TOKEN}}]}]}]}]}
    path.write_text("\n".join([_line(GOOD_SPAN), json.dumps(log), _line(GOOD_SPAN)]) + "\n")
    fast, _ = _both([path])
    assert fast.fast_files == [path] and fast.python_ranges == 1 and fast.report.logs == 1  # line 2 to Python
    assert TOKEN not in repr(fast.logs) and "[REDACTED]" in repr(fast.logs)


def test_bad_records_keep_their_positions_and_strict_its_error(tmp_path):
    path = tmp_path / "export.jsonl"
    path.write_text("\n".join([_line(GOOD_SPAN), _line(GOOD_SPAN | {"spanId": "xyz"}), _line(GOOD_SPAN)]) + "\n")
    fast, _ = _both([path])
    assert fast.fast_files == [path] and fast.python_ranges == 1
    assert fast.report.problems == [f"{path}:2#0: spanId: 'xyz' is neither hex nor base64"]
    with pytest.raises(UserError, match=r"export\.jsonl:2#0: spanId.*--strict"):
        _Load([path], fast=True, strict=True)


def test_compressed_files_and_lines_across_buffers_and_threads(tmp_path, monkeypatch):
    # small ranges: many per file, read by several threads; the ordinal of each record is still its line
    monkeypatch.setattr(_otlp_json_native, "RANGE_BYTES", 1 << 12)
    lines = [_line(*[GOOD_SPAN | {"spanId": f"{n * 10 + k + 1:016x}", "name": f"line {n + 1}"} for k in range(n % 7)])
             for n in range(3000)]
    text = ("\n".join(lines) + "\n").encode()
    (tmp_path / "plain.jsonl").write_bytes(text)
    (tmp_path / "lines.jsonl.gz").write_bytes(gzip.compress(text))
    (tmp_path / "lines.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(text))
    for path in sorted(tmp_path.iterdir()):
        fast, _ = _both([path])
        assert fast.fast_files == [path] and fast.python_ranges == 0, path.name
        assert all(row[3] == f"line {row[15].rsplit(':', 1)[1]}" for row in fast.rows)  # name == source line
        assert fast.report.spans == sum(n % 7 for n in range(3000))


def test_an_odd_record_costs_its_line_not_the_file(tmp_path, monkeypatch):
    # a real export with one bad record among millions: the C reader reads every other line, the lines around it
    # included (the file is JSON lines for the Python reader too, so its lines can be read apart)
    monkeypatch.setattr(_otlp_json_native, "RANGE_BYTES", 1 << 12)
    lines = [_line(GOOD_SPAN | {"spanId": f"{n + 1:016x}", "name": f"line {n + 1}"}) for n in range(600)]
    lines[300] = _line(GOOD_SPAN | {"spanId": "xyz"})
    lines[301] = json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": "1"}]}]}]})
    path = tmp_path / "export.jsonl"
    path.write_text("\n".join(lines) + "\n")
    fast, _ = _both([path])
    assert fast.fast_files == [path] and fast.python_ranges == 2  # lines 301 and 302, each alone
    assert fast.report.spans == 598 and fast.report.logs == 1 and fast.report.bad_records == 1
    assert fast.report.problems == [f"{path}:301#0: spanId: 'xyz' is neither hex nor base64"]


@pytest.mark.parametrize("first", ["a bad id", "metrics beside the spans", "a byte order mark and a bad id"])
def test_an_odd_record_on_line_1_costs_its_line_not_the_file(tmp_path, monkeypatch, first):
    # line 1 is JSON: the Python reader reads the file as lines too, so line 1 can be its alone (the bench
    # world's all-zero trace id on line 1 sent the whole file to the Python reader)
    monkeypatch.setattr(_otlp_json_native, "RANGE_BYTES", 1 << 12)
    lines = [_line(GOOD_SPAN | {"spanId": f"{n + 1:016x}", "name": f"line {n + 1}"}) for n in range(600)]
    lines[0] = (_line(GOOD_SPAN | {"traceId": "0" * 32}) if first != "metrics beside the spans" else
                json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [GOOD_SPAN]}]}], "resourceMetrics": []}))
    path = tmp_path / "export.jsonl"
    path.write_bytes(("\ufeff" if "byte order" in first else "").encode() + ("\n".join(lines) + "\n").encode())
    fast, _ = _both([path])
    assert fast.fast_files == [path] and fast.python_ranges == 1
    assert fast.report.spans == 599 + (first == "metrics beside the spans")
    assert fast.report.bad_records == (first != "metrics beside the spans")


def test_line_1_that_is_no_json_by_itself_leaves_the_file_to_python(tmp_path, monkeypatch):
    # a pretty-printed document whose first line names resourceSpans: one document to the Python reader, never lines
    monkeypatch.setattr(_otlp_json_native, "RANGE_BYTES", 1 << 12)
    spans = [GOOD_SPAN | {"spanId": f"{n + 1:016x}"} for n in range(300)]
    path = tmp_path / "export.json"
    path.write_text('{"resourceSpans":\n' + json.dumps([{"scopeSpans": [{"spans": spans}]}], indent=1) + "}\n")
    fast, _ = _both([path])
    assert fast.fast_files == [] and fast.report.spans == 300


def test_inside_a_callers_transaction_the_python_reader_loads(tmp_path):
    path = _write(tmp_path, [_line(GOOD_SPAN), _line(GOOD_SPAN | {"spanId": "0000000000000002"})])
    con = duckdb.connect()
    load.load_into(con, [])  # the tables
    con.execute("BEGIN TRANSACTION")
    assert _otlp_json_native.insert(con, path) is None
    report = load.load_into(con, [str(path)])
    con.execute("COMMIT")
    assert report.spans == 2 and con.execute("SELECT count(*) FROM spans").fetchone() == (2,)


# ------------------------------------------------------------------------------------------------ every value

def _rich_value(depth: int = 2):
    """Every AnyValue: kvlists, bytes, doubles in arrays, nesting."""
    data = st.builds(lambda b: {"bytesValue": base64.b64encode(b).decode()}, st.binary(max_size=6))
    leaf = st.one_of(_scalar(), data, st.just({}))
    if depth == 0:
        return leaf
    inner = _rich_value(depth - 1)
    return st.one_of(
        leaf,
        st.builds(lambda xs: {"arrayValue": {"values": xs}}, st.lists(inner, max_size=3)),
        st.builds(lambda kvs: {"kvlistValue": {"values": [{"key": k, "value": v} for k, v in kvs.items()]}},
                  st.dictionaries(KEYS, inner, max_size=3)),
    )


def _reordered(obj, rng: list[int]):
    """``obj`` with each object's fields in another order (producers need not write "key" before "value", nor the
    resource before its scopes): the C reader reads what comes first later, where it must."""
    if isinstance(obj, list):
        return [_reordered(x, rng) for x in obj]
    if isinstance(obj, dict):
        items = [(k, _reordered(v, rng)) for k, v in obj.items()]
        if rng and rng.pop() and len(items) > 1:
            items.reverse()
        return dict(items)
    return obj


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(_request(), min_size=2, max_size=3), st.integers(0, 2),
       st.lists(st.tuples(KEYS, _rich_value()), max_size=4, unique_by=lambda kv: kv[0]),
       st.lists(st.booleans(), max_size=200), st.sampled_from(["ee19b7ec3c1b174", "abc", "EE19B7EC3C1B1740"]))
def test_the_c_reader_reads_every_value_and_field_order_as_python_does(requests, style, rich, order, short_id):
    for request in requests:
        for rs in request["resourceSpans"]:
            for ss in rs["scopeSpans"]:
                for span in ss["spans"]:
                    span["attributes"] = span.get("attributes", []) + [
                        {"key": f"rich.{k}", "value": v} for k, v in rich]
                    span["parentSpanId"] = short_id
    requests = [_reordered(r, list(order)) for r in requests]
    with tempfile.TemporaryDirectory() as folder:
        path = _write(folder, [_dumps(r, style) for r in requests])
        fast, python = _both([path])
    assert fast.fast_files == [path] and fast.python_ranges == 0, "the C reader declined a file it reads"
    assert python.report.bad_records == 0


RICH_SPAN = GOOD_SPAN | {"parentSpanId": "W47/95gDgQPSabYzgT/GDA==", "kind": "SPAN_KIND_SERVER", "status": {
    "code": 2, "message": "d\u00e9nied \\\"x\\\""}, "events": [{"name": "check", "timeUnixNano": "3", "attributes": [
        {"key": "n", "value": {"doubleValue": 0.25}}]}], "links": [{"traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": "eee19b7ec3c1b174"}], "attributes": [{"key": "k\u00e9", "value": {"arrayValue": {"values": [
            {"kvlistValue": {"values": [{"key": "a", "value": {"intValue": "-7"}}]}}, {"boolValue": True}]}}}]}


EDITS = st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 3), st.binary(min_size=1, max_size=3)),
                 min_size=1, max_size=4)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(EDITS)
def test_damaged_bytes_are_read_as_python_reads_them_or_declined(edits):
    # the C reader meets every byte: a cut, a doubled or a stray byte anywhere gives Python's rows or a refusal
    _damaged_same([_line(RICH_SPAN), _line(RICH_SPAN, GOOD_SPAN)], edits)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(EDITS)
def test_damage_in_one_range_of_many_is_read_as_python_reads_it(edits):
    # many small ranges: the damaged ones go to the Python reader, the rest stay with the C reader, and the whole
    # load is still the Python reader's to the byte (rows, positions, problems)
    saved = _otlp_json_native.RANGE_BYTES
    _otlp_json_native.RANGE_BYTES = 1 << 10
    try:
        _damaged_same([_line(RICH_SPAN | {"spanId": f"{n + 1:016x}"}) for n in range(40)], edits)
    finally:
        _otlp_json_native.RANGE_BYTES = saved


def _damaged_same(lines: list[str], edits) -> None:
    data = bytearray(("\n".join(lines) + "\n").encode())
    for at, how, blob in edits:
        at %= len(data)
        if how == 0:
            del data[at:at + len(blob)]
        elif how == 1:
            data[at:at] = blob
        else:
            data[at:at + len(blob)] = blob
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "export.jsonl"
        path.write_bytes(bytes(data))
        _same_outcome([path])


def test_a_compressed_file_of_another_kind_is_decompressed_once(tmp_path, monkeypatch):
    # the C reader decides from a compressed file's head: a logs file is not decompressed whole once more for it
    log = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": "1", "body": {"stringValue": "x"}}]}]}]}
    path = tmp_path / "logs.jsonl.gz"
    path.write_bytes(gzip.compress(("\n".join([json.dumps(log)] * 3) + "\n").encode()))
    decompressed = []
    real = _files.read_bytes
    monkeypatch.setattr(_files, "read_bytes", lambda p: decompressed.append(p) or real(p))
    fast = _Load([path], fast=True)
    assert fast.report.logs == 3 and fast.fast_files == []
    assert decompressed == [path]


def test_the_fast_path_loads_into_a_runs_database_file(tmp_path):
    # a run attaches its file (analyzer/steps/database.py): the fast path's cursor must insert there, not into DuckDB's
    # default in-memory database (where there is no span_rows: it would fail and leave the file to Python)
    from jitrace.analyzer.steps import session

    path = _write(tmp_path, [_line(GOOD_SPAN), _line(GOOD_SPAN | {"spanId": "0000000000000002"})])
    con = session.connect(tmp_path / "jitrace.duckdb")
    load.load_into(con, [])  # the tables
    assert _otlp_json_native.insert(con, path).spans == 2
    assert con.execute("SELECT count(*) FROM span_fact_rows").fetchone() == (2,)


# ------------------------------------------------------------------------------------------------ the facts' inputs

def _kv(key, value):
    return {"key": key, "value": value}


FACT_SPAN = GOOD_SPAN | {"attributes": [
    _kv("rpc.grpc.status_code", {"intValue": "7"}), _kv("jit.token.present", {"boolValue": True}),
    _kv("jit.token.id", {"stringValue": "tok-1"}), _kv("jit.token.ttl_s", {"doubleValue": -0.5}),
    _kv("jit.token.exp", {"intValue": 1760003600}), _kv("jit.clock.sent_ns", {"intValue": "1760000000000000001"}),
    _kv("jit.policy.granted", {"arrayValue": {"values": [{"stringValue": "orders.list"}, {"stringValue": "é"}]}}),
    _kv("jit.policy.request", {"arrayValue": {}}), _kv("jit.denial.reason", {}), _kv("other", {"doubleValue": 1.5})]}
ODD_FACTS = {  # a value from_json reads otherwise than the C reader would, or a span that must go through SQL
    "a bearer token": _kv("note", {"stringValue": f"Bearer {TOKEN}"}),
    "a double where text is read": _kv("jit.token.id", {"doubleValue": 1e16}),
    "text where a double is read": _kv("jit.token.ttl_s", {"stringValue": "3.5"}),
    "a double where an integer is read": _kv("jit.clock.sent_ns", {"doubleValue": 1.5}),
    "a list of numbers": _kv("jit.policy.granted", {"arrayValue": {"values": [{"intValue": 1}]}}),
    "a list with a null": _kv("jit.policy.granted", {"arrayValue": {"values": [{}]}}),
    "a NUL in text": _kv("jit.token.sub", {"stringValue": "a\x00b"}),
    "a kvlist": _kv("jit.token.aud", {"kvlistValue": {"values": [_kv("a", {"intValue": 1})]}}),
}


def test_the_c_reader_gives_the_facts_of_ordinary_spans_and_leaves_odd_ones_to_sql(tmp_path):
    # the typed columns the C reader gives for span_facts.sql hold what from_json reads: every fact compared with the
    # Python reader's load (whose facts come from the JSON text); a value it cannot give exactly sends the span
    # through span_facts.sql, as does a token in any text (redacted first) and a token check among the events
    lines = [_line(FACT_SPAN | {"spanId": f"{n + 1:016x}"}, resource={"resource": {"attributes": [
        _kv("service.name", {"stringValue": "svc"}), _kv("host.name", {"intValue": 5})]}}) for n in range(4)]
    path = tmp_path / "export.jsonl"
    path.write_text("\n".join(lines) + "\n")
    fast, _ = _both([path])
    assert fast.fast_files == [path] and fast.without_facts == 0
    odd = [FACT_SPAN | {"spanId": f"{n + 1:016x}", "attributes": [
        *(kv for kv in FACT_SPAN["attributes"] if kv["key"] != value["key"]), value]}
        for n, value in enumerate(ODD_FACTS.values())]
    odd.append(GOOD_SPAN | {"spanId": "00000000000000ff", "events": [{"name": "jit.token.check", "attributes": [
        _kv("jit.token.verdict", {"stringValue": "expired"})]}]})
    path.write_text("\n".join([*lines, _line(*odd)]) + "\n")
    fast, _ = _both([path])
    assert fast.fast_files == [path] and fast.without_facts == len(odd)
    assert TOKEN not in repr(fast.rows)


@pytest.mark.parametrize("secret", ["Bearer abc.def", "BaSiC dXNlcjpwYXNzd29yZA==", "x eyJhbGciOiJI.eyJzdWIiOiJi.c2ln"])
def test_a_credential_anywhere_in_a_span_is_redacted_before_its_facts(tmp_path, secret):
    # the C reader looks for the redaction's hints eight bytes at a time: at every offset, in any field, the span is
    # redacted and its facts computed after, exactly as the Python reader's load has it
    spans = []
    for pad in range(10):
        text = "p" * pad + secret + "q" * (9 - pad)
        where = pad % 4
        span = FACT_SPAN | {"spanId": f"{pad + 1:016x}"}
        if where == 0:
            span = span | {"name": text}
        elif where == 1:
            span = span | {"status": {"code": 2, "message": text}}
        elif where == 2:
            span = span | {"events": [{"name": "e", "attributes": [_kv("k", {"stringValue": text})]}]}
        else:
            span = span | {"attributes": [*FACT_SPAN["attributes"], _kv("jit.token.sub", {"stringValue": text})]}
        spans.append(span)
    path = tmp_path / "export.jsonl"
    path.write_text("\n".join([_line(GOOD_SPAN), _line(*spans)]) + "\n")
    fast, _ = _both([path])
    assert fast.fast_files == [path] and fast.without_facts == len(spans)
    assert "[REDACTED]" in repr(fast.rows)


DOUBLE_SPELLINGS = ["12.50", "0.00001", "0.0001", "0.00012", "1e2", "1.5E+3", "-0", "0", "0.0", "-0.0", "100", "-7",
                    "1234567890.12345", "123456789012345", "1234567890123456", "0.1000", "9007199254740993",
                    "0.30000000000000004", "0.1", "3600.0", "-3599.998", "5e-324", "1.7976931348623157e308",
                    "999999999999999.9", "0.000999", "10.0", "1.05", "3052.1749999523163", "1.0000000000000002",
                    "0.10000000000000001", "2.2250738585072014e-308", "1.5e-07", "1e+16", "-547.8250000476837",
                    "12345678.123456789", "0.1000000000000000055511151231257827"]


@pytest.mark.parametrize("text", DOUBLE_SPELLINGS)
def test_doubles_in_any_spelling_are_read_as_python_reads_them(tmp_path, text):
    # the C reader writes a double's text as it stands when that is Python's repr, else asks Python for it: the
    # attribute's JSON text and the fact (jit.token.ttl_s) are the Python reader's either way
    path = _doubles_file(tmp_path, [text, text])
    fast, _ = _both([path])
    assert fast.fast_files == [path] and fast.python_ranges == 0
    assert _texts(path, fast=True) == _texts(path, fast=False)


def test_a_double_not_spelled_as_python_writes_it_reads_its_range_again(tmp_path):
    # long doubles are written as they came and checked against Python once their range is read: a range holding
    # one that Python writes otherwise is read again, asking Python for each, and still gives the Python reader's rows
    texts = ["3052.1749999523163", "0.10000000000000001", "-547.8250000476837", "1.0000000000000002e0"]
    path = _doubles_file(tmp_path, texts * 3)
    fast, _ = _both([path])
    assert fast.fast_files == [path] and fast.python_ranges == 0
    assert _texts(path, fast=True) == _texts(path, fast=False)  # the text itself, not only what it parses to


def _spellings(x: float) -> list[str]:
    """Plain decimal spellings of ``x``: its repr, other digit counts, and the repr with its last digit moved."""
    texts = [repr(x), f"{x:.15g}", f"{x:.16g}", f"{x:.17g}", f"{x:.18g}"]
    last = repr(x)[-1]
    if last.isdigit():
        texts += [repr(x)[:-1] + str(d) for d in range(10) if str(d) != last]
    return [t for t in texts if "e" not in t and "n" not in t]


@settings(max_examples=3000, deadline=None)
@given(st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                 st.floats(min_value=1e-4, max_value=1e16), st.floats(min_value=-1e5, max_value=1e5)))
def test_a_double_proven_to_be_its_repr_without_python_is_its_repr(x):
    # the C reader proves (without the GIL) that most long doubles are spelled as Python's repr; a text it proves so
    # must be exactly repr(float(text)), ties and texts near a power of ten or two included (else it asks Python)
    native = _otlp_json_native._otlp_native
    for text in _spellings(x):
        if native.repr_proven(text.encode()):
            assert repr(float(text)) == text


def test_the_long_doubles_writers_write_are_proven_without_python():
    # what float32 values widened to double look like (the bench's ttl and age): no Python call for them
    native = _otlp_json_native._otlp_native
    for text in ("3052.1749999523163", "-547.8250000476837", "0.30000000000000004", "1547.950000047684"):
        assert native.repr_proven(text.encode())
    for text in ("0.10000000000000001", "1547.9500000476838", "1547.95000004768370", "1e+16", "0.1"):
        assert not native.repr_proven(text.encode())  # not its repr, or one short_double reads


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.floats(min_value=-1e6, max_value=1e6).filter(_spellings)
                .flatmap(lambda x: st.sampled_from(_spellings(x))), min_size=1, max_size=20))
def test_doubles_spelled_any_way_load_as_python_loads_them(tmp_path_factory, texts):
    path = _doubles_file(tmp_path_factory.mktemp("doubles"), texts + texts[:1])  # two lines at least
    fast, _ = _both([path])
    assert fast.fast_files == [path] and fast.python_ranges == 0
    assert _texts(path, fast=True) == _texts(path, fast=False)


def _doubles_file(tmp_path: Path, texts: list[str]) -> Path:
    """A span per text, its jit.token.ttl_s and another attribute holding that double spelled as given."""
    lines = []
    for n, text in enumerate(texts):
        span = GOOD_SPAN | {"spanId": f"{n + 1:016x}", "attributes": [
            _kv("jit.token.ttl_s", {"doubleValue": "TEXT"}), _kv("d", {"doubleValue": "TEXT"})]}
        lines.append(_line(span).replace('"TEXT"', text))
    path = tmp_path / "export.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _texts(path: Path, *, fast: bool) -> list[tuple]:
    """The attributes' JSON text of each span, as loaded with or without the fast path."""
    con = duckdb.connect()
    _text.FAST_PATH = fast
    try:
        load.load_into(con, [str(path)])
    finally:
        _text.FAST_PATH = True
    return con.execute("SELECT span_id, attributes FROM spans ORDER BY span_id").fetchall()


@pytest.mark.parametrize("swap", [False, True])
def test_copies_of_a_span_in_one_request_keep_one_copy_whatever_their_order(tmp_path, swap):
    # two copies of one span in one request: one source, the same number of attributes. The copy kept must not
    # depend on the reader (the C reader stores spans in another order than the Python reader) nor on their order
    copies = [GOOD_SPAN | {"attributes": [{"key": "k", "value": {"doubleValue": v}}]} for v in (-2014, 0)]
    other = GOOD_SPAN | {"spanId": "eee19b7ec3c1b175"}
    lines = [_line(other), _line(*(copies[::-1] if swap else copies)), _line(other | {"spanId": "eee19b7ec3c1b176"})]
    fast = _both([_write(str(tmp_path), lines)])[0]
    kept = [row[11] for row in fast.rows if row[1] == "eee19b7ec3c1b174"]  # attributes, as _normal gives them
    assert kept == [repr(_typed({"k": -2014.0}))]  # the first by content: the same whichever came first
