"""Big text inputs are parsed on several processes: the same records, positions and bad-record reports as one
process, in the same order; an unknown file and --strict still fail with one line."""

from __future__ import annotations

import json
import random

import duckdb
import pytest

from jitrace.analyzer.errors import UserError
from jitrace.analyzer.load import _parallel, load_into

ROWS = ("SELECT trace_id, span_id, parent_span_id, name, kind, start_ns, attributes, source FROM spans "
        "ORDER BY source, span_id")


def _span(i: int) -> dict:
    return {"traceId": f"{i + 1:032x}", "spanId": f"{i + 1:016x}", "name": "shop.Orders/Read", "kind": 2,
            "startTimeUnixNano": str(1_760_000_000_000_000_000 + i), "endTimeUnixNano": "1760000000000000999",
            "attributes": [{"key": "rpc.grpc.status_code", "value": {"intValue": str(i % 17)}},
                           {"key": "jit.token.ttl_s", "value": {"doubleValue": i / 7}}]}


def _export(path, lines: int, seed: int) -> None:
    """JSON lines of OTLP requests with the bad lines a killed writer or a bad producer leaves, here and there."""
    rng = random.Random(seed)
    out = []
    for n in range(lines):
        spans = [_span(n * 10 + k) for k in range(rng.randint(1, 10))]
        roll = rng.random()
        if roll < 0.05:
            out.append(json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]})[:40])  # cut short
        elif roll < 0.1:
            spans[0]["spanId"] = "not-an-id"
            out.append(json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}))
        elif roll < 0.12:
            out.append("")
        else:
            resource = {"attributes": [{"key": "service.name", "value": {"stringValue": f"svc-{n % 3}"}}]}
            out.append(json.dumps({"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": spans}]}]}))
    path.write_text("\n".join(out) + "\n")


def _thresholds(monkeypatch, parallel: bool) -> None:
    monkeypatch.setattr(_parallel, "MIN_BYTES", 0 if parallel else 1 << 62)
    monkeypatch.setattr(_parallel, "CHUNK_BYTES", 4096)  # many ranges, each cut at a line end
    monkeypatch.setattr(_parallel, "processes", lambda: 2)


def _load(paths, *, parallel: bool, monkeypatch, strict: bool = False):
    _thresholds(monkeypatch, parallel)
    con = duckdb.connect()
    report = load_into(con, [str(p) for p in paths], strict=strict)
    return con.execute(ROWS).fetchall(), report


@pytest.mark.parametrize("seed", [1, 2])
def test_parallel_parsing_loads_exactly_what_one_process_loads(tmp_path, monkeypatch, seed):
    big, small = tmp_path / "big.jsonl", tmp_path / "small.jsonl"
    _export(big, 300, seed)
    _export(small, 5, seed + 100)
    assert len(_parallel.plan([big, small]) or []) == 0  # the real thresholds: this is too small to split
    one_rows, one = _load([big, small], parallel=False, monkeypatch=monkeypatch)
    _thresholds(monkeypatch, parallel=True)
    units = _parallel.plan([big, small])
    assert units is not None and len(units) > 10 and {u.first_line for u in units if u.path == big} != {1}
    many_rows, many = _load([big, small], parallel=True, monkeypatch=monkeypatch)
    assert many_rows == one_rows and len(one_rows) > 500
    assert (many.spans, many.bad_records, many.problems) == (one.spans, one.bad_records, one.problems)
    assert one.bad_records > 0 and any(f"{big}:" in p for p in one.problems)


def test_a_file_in_no_known_format_and_strict_still_fail_with_one_line(tmp_path, monkeypatch):
    big = tmp_path / "big.jsonl"
    _export(big, 100, 3)
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps({"hello": "world"}))
    with pytest.raises(UserError, match=r"odd\.json: .*no known trace or log format"):
        _load([big, odd], parallel=True, monkeypatch=monkeypatch)
    with pytest.raises(UserError, match=r"big\.jsonl:\d+.*--strict"):
        _load([big], parallel=True, monkeypatch=monkeypatch, strict=True)


_METRICS = {"resourceMetrics": [{"resource": {"attributes": [{"key": "service.name",
                                                              "value": {"stringValue": "orders"}}]},
                                 "scopeMetrics": [{"scope": {"name": "io.grpc"}, "metrics": [
                                     {"name": "rpc.server.duration", "unit": "ms",
                                      "histogram": {"dataPoints": [{"count": "3", "sum": 4.5}]}}]}]}]}


@pytest.mark.parametrize("parallel", [False, True])
def test_metrics_requests_in_or_beside_span_files_are_skipped_and_counted_not_bad(tmp_path, monkeypatch, parallel):
    """The Collector's file exporter, serving the traces and the metrics pipelines, writes both into one file (and a
    metrics-only exporter writes files beside the span files): spans load, metrics are counted, none is bad."""
    lines = []
    for n in range(60):
        if n % 3 == 0:  # the first line too: the file's kind is still OTLP
            lines.append(json.dumps(_METRICS))
        else:
            spans = [_span(n * 10 + k) for k in range(3)]
            lines.append(json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}))
    mixed = tmp_path / "otel.jsonl"
    mixed.write_text("\n".join(lines) + "\n")
    (tmp_path / "metrics.json").write_text(json.dumps(_METRICS, indent=2))  # a whole document, metrics only
    rows, report = _load([mixed, tmp_path / "metrics.json"], parallel=parallel, monkeypatch=monkeypatch)
    assert (report.spans, report.bad_records, report.skipped_requests) == (40 * 3, 0, 20 + 1)
    assert len(rows) == 40 * 3
