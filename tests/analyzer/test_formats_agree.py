"""The same spans give the same attributions whatever format they came in (issue 23): OTLP JSON lines, OTLP
protobuf, a Jaeger download, a Zipkin list and `jitrace collect`'s compacted Parquet, analyzed end to end, give
byte-identical attributions.csv files. Times are whole microseconds (Jaeger and Zipkin carry no finer), hosts are
named by address (what a Zipkin endpoint carries), and lists travel as JSON text where a format has no arrays."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path

from google.protobuf.json_format import ParseDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from spanfactory import T0, Token, World, jaeger, otlp, zipkin

from jitrace.analyzer.analyze import analyze
from jitrace.collect._writer import Writer
from jitrace.collect.compact import Compactor

ADDRESSES = {"issuer": "10.0.0.1", "client-host": "10.0.0.2", "server-host": "10.0.0.3"}


def _world() -> World:
    """Calls denied for several causes between hosts whose clocks are off, and enough allowed ones to model them."""
    world = World(offsets={"server-host": 2.5, "client-host": -0.003})
    token = Token(iat=T0, exp=T0 + 60, jti="t1")
    world.issue(token, T0)
    for i in range(20):
        world.call(T0 + 1 + i, token)
    world.call(T0 + 58.5, token)  # valid by the issuer's clock, expired by the server's (2.5 s ahead): drift
    world.call(T0 + 70, token)  # expired before it was sent
    world.call(T0 + 30, token, granted=["orders.list"])  # the permission is not granted
    world.call(T0 + 31, None)  # no token
    world.call(T0 + 59.999, token, wait_s=0.5)  # expired while it waited before the check
    for row in world.rows:
        resource = json.loads(row["resource"])
        row["resource"] = json.dumps({"service.name": resource["service.name"],
                                      "host.ip": ADDRESSES[resource.pop("host.name")]})
        row["start_ns"] -= row["start_ns"] % 1000
        row["end_ns"] -= row["end_ns"] % 1000
    return world


def _base64_ids(request: dict) -> dict:
    """Protobuf's JSON mapping spells bytes in base64, the Collector's JSON in hex."""
    for rs in request["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for span in ss["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    span[key] = base64.b64encode(bytes.fromhex(span[key])).decode()
    return request


def _write_every_format(world: World, folder: Path) -> dict[str, Path]:
    chunks = [world.rows[i:i + 10] for i in range(0, len(world.rows), 10)]
    paths = {name: folder / name for name in ("otlp-json", "otlp-protobuf", "jaeger", "zipkin", "compacted")}
    for path in paths.values():
        path.mkdir(parents=True)
    (paths["otlp-json"] / "spans.jsonl").write_text("".join(json.dumps(otlp(c)) + "\n" for c in chunks))
    messages = [ParseDict(_base64_ids(otlp(c)), ExportTraceServiceRequest()).SerializeToString() for c in chunks]
    (paths["otlp-protobuf"] / "spans.binpb").write_bytes(b"".join(struct.pack(">I", len(m)) + m for m in messages))
    (paths["jaeger"] / "traces.json").write_text(json.dumps(jaeger(world.rows)))
    (paths["zipkin"] / "spans.json").write_text(json.dumps(zipkin(world.rows)))
    Writer(paths["compacted"]).write("spans", world.tuples())
    Compactor(paths["compacted"]).run(everything=True)
    return paths


def test_every_format_gives_byte_identical_attributions(tmp_path):
    world = _world()
    outputs = {}
    for name, path in _write_every_format(world, tmp_path / "in").items():
        summary = analyze([str(path)], tmp_path / "out" / name, quiet=True)
        assert summary["spans"] == len(world.rows), name
        outputs[name] = (tmp_path / "out" / name / "attributions.csv").read_bytes()
    reference = outputs.pop("otlp-json")
    causes = {line.split(b",")[7] for line in reference.splitlines()[1:]}
    assert {b"clock_drift", b"token_expired", b"policy_mismatch", b"token_missing"} <= causes, causes
    for name, csv in outputs.items():
        assert csv == reference, f"{name} differs from OTLP JSON"
