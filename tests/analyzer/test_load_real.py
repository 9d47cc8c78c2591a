"""Every public trace file in ../shared/data/real loads with the values its file holds (read from the files by hand:
ids, parents, kinds, statuses, services and times in ns)."""

from __future__ import annotations

import json
from collections import Counter

import duckdb
import pytest

from jitrace.analyzer.load import load_into

COLS = "trace_id, span_id, parent_span_id, kind, status_code, service, start_ns, end_ns, name"

EXPECTED = {
    # OTLP JSON, upper-case hex ids, int kind 2, string 64-bit times
    "otel-proto_examples_trace.json": [
        ("5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174", "eee19b7ec3c1b173", "SERVER", "UNSET", "my.service",
         1544712660000000000, 1544712661000000000, "I'm a server span"),
    ],
    # telemetrygen wrote the same span twice: one span, one row (DUPLICATES)
    "jaeger-ui_otlp2jaeger-in.json": [
        ("83a9efd15c1c98a977e0711cc93ee28b", "e127af99e3b3e074", "909541b92cf05311", "SERVER", "UNSET",
         "telemetrygen", 1706678909209712000, 1706678909209835000, "okey-dokey-0"),
    ],
    # empty resource: no service
    "jaeger-ui_otlp2jaeger-in-error.json": [
        ("83a9efd15c1c98a977e0711cc93ee28b", "e127af99e3b3e074", "909541b92cf05311", "SERVER", "UNSET", None,
         1706678909209712000, 1706678909209835000, "okey-dokey-0"),
    ],
    # JSON lines, one span per line (kind 1 = INTERNAL)
    "jaeger-ui_otlp2jaeger-multi-in.jsonl": [
        ("c620759e5d60fafb8ee0922b30e06bc6", "26f5ef9dbb885479", "49b8e9efa1e8a3b1", "INTERNAL", "UNSET",
         "example-trace", 1711138246978000000, 1711138247024460625, "ohboy.do"),
        ("c620759e5d60fafb8ee0922b30e06bc6", "e76628f4e6dde174", "49b8e9efa1e8a3b1", "INTERNAL", "UNSET",
         "example-trace", 1711138247025000000, 1711138247096355250, "ohboy.do"),
        ("c620759e5d60fafb8ee0922b30e06bc6", "49b8e9efa1e8a3b1", "eff3153be6b1fb93", "INTERNAL", "UNSET",
         "example-trace", 1711138246943000000, 1711138247116150875, "info"),
        ("c620759e5d60fafb8ee0922b30e06bc6", "eff3153be6b1fb93", None, "INTERNAL", "UNSET",
         "example-trace", 1711138246940000000, 1711138247116321958, "main"),
    ],
    "jaeger_memory_otel_traces_01.json": [
        ("00000000000000010000000000000000", "0000000000000002", "0000000000000003", "SERVER", "ERROR", "service-x",
         1485467191639875000, 1485467191639880000, "test-general-conversion-2"),
        ("00000000000000020000000000000000", "0000000000000003", "0000000000000010", "CLIENT", "ERROR", "service-x",
         1485467191639875000, 1485467191639880000, "test-general-conversion-3"),
        ("00000000000000010000000000000000", "0000000000000004", "0000000000000011", "PRODUCER", "ERROR", "service-x",
         1485467191639875000, 1485467191639880000, "test-general-conversion-4"),
        ("00000000000000020000000000000000", "0000000000000005", "0000000000000010", "CONSUMER", "ERROR", "service-x",
         1485467191639875000, 1485467191639880000, "test-general-conversion-5"),
    ],
    # pretty-printed OTLP JSON, 3 resources, kind omitted on three spans
    "jaeger_integration_example_trace.json": [
        ("00000000000000000000000000000011", sid, None, kind, "UNSET", svc, 1485449191639875000,
         1485449191639975000, name)
        for sid, kind, svc, name in [
            ("0000000000000004", "UNSPECIFIED", "example-service-2", "example-operation-2"),
            ("0000000000000005", "UNSPECIFIED", "example-service-3", "example-operation-1"),
            ("0000000000000003", "UNSPECIFIED", "example-service-1", "example-operation-1"),
            ("0000000000000006", "SERVER", "example-service-1", "example-operation-3"),
            ("0000000000000007", "CLIENT", "example-service-1", "example-operation-4"),
        ]
    ],
    # Jaeger UI trace object: 64-bit trace id padded; the parent is the CHILD_OF reference in the same trace
    # (span 4's first CHILD_OF points into trace 0xff and is skipped); the error tag makes an ERROR status. Span 2
    # is there twice (INTERNAL both times): one span, the copy with the most facts kept (6 tags against 2 logs)
    "uimodel_ui_01.json": [
        ("00000000000000000000000000000001", sid, parent, "INTERNAL", status, svc, 1485467191639875000,
         1485467191639875000 + dur_us * 1000, name)
        for sid, parent, status, svc, dur_us, name in [
            ("0000000000000002", None, "ERROR", "service-x", 5, "some-operation"),
            ("0000000000000003", "0000000000000002", "UNSET", "service-y", 5, "some-operation"),
            ("0000000000000004", "0000000000000002", "UNSET", "service-y", 5, "reference-test"),
            ("0000000000000005", "0000000000000004", "UNSET", "service-y", 4, "preserveParentID-test"),
        ]
    ],
    # Jaeger UI download ({"data": trace}); span.kind tags give CLIENT and SERVER, microseconds -> ns
    "jaeger-ui_flamegraph-testTrace.json": [
        ("84b3fad94c6112edd6af3347d06f6f1d", "487f03177ef9cf89", None, "INTERNAL", "UNSET", "load-generator",
         1660049722779884000, 1660049722779884000 + 1181596000, "OrderVehicle"),
        ("84b3fad94c6112edd6af3347d06f6f1d", "d81ccf159d71bc66", "487f03177ef9cf89", "CLIENT", "UNSET",
         "load-generator", 1660049722993018000, 1660049722993018000 + 968334000, "HTTP GET"),
        ("84b3fad94c6112edd6af3347d06f6f1d", "3d4670fa91902216", "d81ccf159d71bc66", "SERVER", "UNSET",
         "ride-sharing-app", 1660049722993895000, 1660049722993895000 + 967066000, "BikeHandler"),
        ("84b3fad94c6112edd6af3347d06f6f1d", "7bc101ef51dbc40c", "3d4670fa91902216", "INTERNAL", "UNSET",
         "ride-sharing-app", 1660049722994061000, 1660049722994061000 + 966333000, "FindNearestVehicle"),
    ],
    # Zipkin v2: 64-bit trace id padded, a span without kind is local (INTERNAL), the shared SERVER span keeps the
    # CLIENT's id
    "skew.json": [
        ("00000000000000001e223ff1f80f1c69", "43210ae0c10d1234", "74280ae0c10d8062", "INTERNAL", "UNSET", "serviceb",
         1470150004008762000, 1470150004008762000 + 65000000, "async"),
        ("00000000000000001e223ff1f80f1c69", "74280ae0c10d8062", "bf396325699c84bf", "SERVER", "UNSET", "serviceb",
         1470150004008761000, 1470150004008761000 + 93577000, "post"),
        ("00000000000000001e223ff1f80f1c69", "bf396325699c84bf", None, "SERVER", "UNSET", "servicea",
         1470150004071068000, 1470150004071068000 + 99411000, "get"),
        ("00000000000000001e223ff1f80f1c69", "74280ae0c10d8062", "bf396325699c84bf", "CLIENT", "UNSET", "servicea",
         1470150004074202000, 1470150004074202000 + 94539000, "post"),
    ],
}


# Copies of a span (trace id, span id, kind) a file holds: dropped, counted in duplicate_spans
DUPLICATES = {"jaeger-ui_otlp2jaeger-in.json": 1, "uimodel_ui_01.json": 1}


def _load(path) -> tuple[duckdb.DuckDBPyConnection, object]:
    con = duckdb.connect()
    return con, load_into(con, [str(path)])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_file_loads_with_the_values_it_holds(real_data, name):
    con, report = _load(real_data / name)
    assert (report.spans, report.logs, report.bad_records, report.problems) == (len(EXPECTED[name]), 0, 0, [])
    assert (report.duplicate_spans, report.spans_without_time) == (DUPLICATES.get(name, 0), 0)
    rows = con.execute(f"SELECT {COLS} FROM spans ORDER BY source").fetchall()
    assert rows == EXPECTED[name]


def test_yelp_zipkin_trace(real_data):
    con, report = _load(real_data / "yelp.json")
    assert (report.spans, report.bad_records) == (16, 0)
    services = {r[0] for r in con.execute("SELECT service FROM spans").fetchall()}
    assert services == {"routing", "yelp_main/api_proxy", "unknown", "yelp-main", "mobile_api", "spectre"}
    kinds = Counter(r[0] for r in con.execute("SELECT kind FROM spans").fetchall())
    assert kinds == {"CLIENT": 11, "SERVER": 4, "INTERNAL": 1}
    (root,) = con.execute("SELECT span_id, service, start_ns, end_ns FROM spans "
                          "WHERE parent_span_id IS NULL").fetchall()
    assert root == ("2e8cfb154b59a41f", "routing", 1571896375237354000, 1571896375237354000 + 131848000)
    # the shared client/server pair of mobile_api -> spectre: one id, two kinds
    pair = con.execute("SELECT kind, service, start_ns FROM spans WHERE span_id = '7a778764a0d0b594' ORDER BY kind")
    assert pair.fetchall() == [("CLIENT", "mobile_api", 1571896375310000000),
                               ("SERVER", "spectre", 1571896375310740000)]
    # Zipkin tags are strings and stay strings; the remote endpoint becomes peer.service
    (attrs,) = con.execute("SELECT attributes FROM spans WHERE span_id = '15fc03927f0f68df'").fetchone()
    assert json.loads(attrs) == {"client_status_code": "200", "http.uri.client": "/visits", "request_budget": "9980",
                                 "tracer": "syslog2scribe.haproxy-synapse", "peer.service": "blt",
                                 "net.peer.port": 31882}


def test_otlp_events_links_and_typed_attributes(real_data):
    con, _ = _load(real_data / "jaeger_memory_otel_traces_01.json")
    events, links, attrs = con.execute("SELECT events, links, attributes FROM spans WHERE span_id = "
                                       "'0000000000000002'").fetchone()
    events, links, attrs = json.loads(events), json.loads(links), json.loads(attrs)
    assert len(events) == 2 and len(links) == 2
    assert all(len(ln["trace_id"]) == 32 and len(ln["span_id"]) == 16 for ln in links)
    assert attrs["peer.ipv4"] == 23456 and attrs["temperature"] == 72.5 and isinstance(attrs["temperature"], float)


def test_jaeger_tags_keep_their_types(real_data):
    con, _ = _load(real_data / "uimodel_ui_01.json")
    (attrs,) = con.execute("SELECT attributes FROM spans WHERE name = 'some-operation' AND "
                           "status_code = 'ERROR'").fetchone()
    attrs = json.loads(attrs)
    assert attrs["peer.ipv4"] == 23456 and attrs["error"] is True and attrs["temperature"] == 72.5


# Zipkin files of several hosts: spans, and the clock domain of each service's spans (its host's address)
HOSTS = {
    "ascend.json": (8, {"mobile-gateway": {"172.17.0.13"}, "content-service": {"172.17.0.10"},
                        "auth-service": {"172.17.0.9"}}),
    # notification-service runs on two hosts, one of them transfer-service's: hosts, not services, are clocks
    "messaging2.json": (11, {"transfer-service": {"172.17.0.7"}, "mobile-gateway": {"172.17.0.12"},
                             "auth-service": {"172.17.0.8"}, "notification-service": {"172.17.0.7", "172.17.0.14"}}),
    "skew.json": (4, {"servicea": {"127.0.0.0"}, "serviceb": {"192.0.0.0"}}),
    "yelp.json": (16, None),
}


@pytest.mark.parametrize("name", sorted(HOSTS))
def test_zipkin_spans_belong_to_the_clock_of_their_host_address(real_data, name):
    con, report = _load(real_data / name)
    spans, hosts = HOSTS[name]
    assert (report.spans, report.bad_records, report.duplicate_spans, report.spans_without_time) == (spans, 0, 0, 0)
    by_service = {}
    for service, domain in con.execute("SELECT DISTINCT service, domain FROM spans").fetchall():
        by_service.setdefault(service, set()).add(domain)
    if hosts is not None:
        assert by_service == hosts
    else:  # no address in these files: the service is the clock
        assert all(domains == {service} for service, domains in by_service.items())


@pytest.mark.parametrize("name", ["ascend.json", "skew.json", "yelp.json"])  # messaging2's calls leave its host
def test_real_offsets_lie_inside_every_pairs_causality_interval(real_data, name):
    """Server clock minus client clock of each pair of hosts is bounded by [t3 - t4, t2 - t1] (client start t1 and
    end t4, server start t2 and end t3): the offsets found keep inside the bounds of every client/server pair."""
    from jitrace.analyzer.steps import session

    con = session.connect()
    load_into(con, [str(real_data / name)])
    session.run_queries(con)
    off = dict(con.execute("SELECT domain, offset_s FROM clock_offsets").fetchall())
    pairs = con.execute("SELECT client_domain, server_domain, t1, t2, t3, t4 FROM pairs "
                        "WHERE client_domain <> server_domain").fetchall()
    assert pairs, "real client/server pairs between two hosts"
    for client, server, t1, t2, t3, t4 in pairs:
        assert (t3 - t4) / 1e9 - 1e-9 <= off[server] - off[client] <= (t2 - t1) / 1e9 + 1e-9


def test_ascend_server_that_starts_after_its_client_ended_is_moved_into_its_interval(real_data):
    # mobile-gateway (172.17.0.13) calls auth-service (172.17.0.9): client 533834..547911 us, server 553000..557157 us
    # past 1531282088 s; the server's clock is ahead by 9246 to 19166 us
    from jitrace.analyzer.steps import session

    con = session.connect()
    load_into(con, [str(real_data / "ascend.json")])
    session.run_queries(con)
    off = dict(con.execute("SELECT domain, offset_s FROM clock_offsets").fetchall())
    assert 0.009246 - 1e-9 <= off["172.17.0.9"] - off["172.17.0.13"] <= 0.019166 + 1e-9


def test_every_real_file_at_once_from_the_folder(real_data):
    con, report = _load(real_data)
    assert report.files == 12 and report.bad_records == 0  # SOURCES.md is skipped: it is notes, not data
    # the two otlp2jaeger files hold one span: the copy with the service (more resource attributes) stays
    assert report.duplicate_spans == sum(DUPLICATES.values()) + 1
    assert report.spans == sum(len(v) for v in EXPECTED.values()) + 16 + 8 + 11 - 1
    assert con.execute("SELECT count(DISTINCT source) FROM spans").fetchone()[0] == report.spans
    assert con.execute("SELECT service FROM spans WHERE span_id = 'e127af99e3b3e074'").fetchall() == [
        ("telemetrygen",)]
