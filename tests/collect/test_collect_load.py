"""The receiver under load: several concurrent exporters; every acknowledged span is stored exactly once, and past
its in-flight budget the receiver pushes back with the OTLP spec's throttling answers instead of dropping."""

from __future__ import annotations

import http.client
import threading

import duckdb
import grpc
import otlp_requests
from google.rpc import error_details_pb2, status_pb2

from jitrace.analyzer.load import load_into
from jitrace.collect import Receiver

EXPORT_TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def _post(port: int, body: bytes) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/v1/traces", body=body, headers={"Content-Type": "application/x-protobuf"})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp


def test_past_its_budget_the_receiver_throttles_with_retry_hints_then_accepts(tmp_path):
    r = Receiver(tmp_path / "out", "127.0.0.1:0", "127.0.0.1:0", in_flight_bytes=1000)
    grpc_port, http_port = r.start()
    req, _ = otlp_requests.traces(3)
    body = req.SerializeToString()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            export = channel.unary_unary(EXPORT_TRACES)
            r.budget.acquire(900)  # another batch is being written
            try:
                export(body, timeout=10)
                raise AssertionError("not throttled")
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                trailers = dict(exc.trailing_metadata())
                retry = error_details_pb2.RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"])
                assert retry.retry_delay.seconds >= 1
                status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
                assert status.details[0].Is(error_details_pb2.RetryInfo.DESCRIPTOR)
            resp = _post(http_port, body)
            assert resp.status == 503 and int(resp.getheader("Retry-After")) >= 1
            r.budget.release(900)
            export(body, timeout=10)  # room again: accepted
            assert _post(http_port, body).status == 200
    finally:
        r.stop()
    stored = [str(p) for p in r.out.rglob("*.parquet")]  # rows as written (the analyzer counts a span sent twice once)
    assert duckdb.connect().execute("SELECT count(*) FROM read_parquet(?)", [stored]).fetchone()[0] == 6
    assert r.budget.refused == 2 and r.budget.used == 0


def test_concurrent_exporters_every_acknowledged_span_stored_once(tmp_path):
    """4 exporters (2 gRPC, 2 HTTP), each retrying what is throttled, as the OTLP exporters do."""
    req, _ = otlp_requests.traces(50)
    size = len(req.SerializeToString())
    r = Receiver(tmp_path / "out", "127.0.0.1:0", "127.0.0.1:0", in_flight_bytes=2 * size)  # tight: pushback
    grpc_port, http_port = r.start()
    acked: list[str] = []
    lock = threading.Lock()
    throttled = [0]

    def exporter(n: int, use_grpc: bool) -> None:
        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        export = channel.unary_unary(EXPORT_TRACES)
        try:
            for b in range(n):
                request, ids = otlp_requests.traces(50, first=b * 50)
                body = request.SerializeToString()
                for _ in range(200):  # bounded: the test must end even if something is wrong
                    if use_grpc:
                        try:
                            export(body, timeout=20)
                            break
                        except grpc.RpcError as exc:
                            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
                    else:
                        status = _post(http_port, body).status
                        if status == 200:
                            break
                        assert status == 503
                    with lock:
                        throttled[0] += 1
                    threading.Event().wait(0.005)  # a short backoff (the real hint is 1 s: too slow for a test)
                else:
                    raise AssertionError("never accepted")
                with lock:
                    acked.extend(ids)
        finally:
            channel.close()

    errors = []

    def run(n: int, use_grpc: bool) -> None:
        try:
            exporter(n, use_grpc)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(15, i % 2 == 0)) for i in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        r.stop()
    assert not errors, errors
    con = duckdb.connect()
    report = load_into(con, [str(r.out)])
    stored = [row[0] for row in con.execute("SELECT span_id FROM spans").fetchall()]
    assert report.spans == len(acked) == 4 * 15 * 50  # count in = count out
    assert sorted(stored) == sorted(acked) and len(set(stored)) == len(stored)  # each once
    assert r.budget.refused == throttled[0]  # every refusal was an answer the exporter saw, none a silent drop
