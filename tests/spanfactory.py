"""Spans in the normalized schema, emitted the way the instrumentation records them, for analyzer tests.

A ``World`` has hosts whose wall clocks are off true time by a known offset (local = true + offset). A call is
described in true time (when it was sent, how long it travelled, how long it waited before the check) and the
factory writes what each side would record with its own clock: span start/end, jit.token.ttl_s = exp - local now,
the verdict the server's verifier would reach with its clock, the grant-window and policy checks, the status code,
and the in-band NTP stamps. Tokens and grants are in the issuer's clock (the issuer host is the reference).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from jitrace.analyzer.schema import SPAN_KINDS, SPANS, arrow
from jitrace.instrumentation import contract as c

T0 = 1_760_000_000.0  # an arbitrary true-time origin, Unix seconds


@dataclass
class Token:
    sub: str = "alice"
    iat: float = T0
    exp: float = T0 + 300
    nbf: float | None = None
    jti: str | None = None
    grant_id: str | None = None
    grant_start: float | None = None
    grant_end: float | None = None
    bad: str | None = None  # an invalid-token verdict the verifier would reach (e.g. bad_signature)


@dataclass
class World:
    # host -> its clock minus true time, seconds: a constant, or a function of true time (a clock that drifts, steps)
    offsets: dict[str, float | Callable[[float], float]] = field(default_factory=dict)
    issuer: str | None = "issuer"
    leeway_s: float = 0.0
    rows: list[dict] = field(default_factory=list)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def _id(self, width: int) -> str:
        return format(next(self._ids), f"0{width}x")

    def offset_at(self, host: str, true_s: float) -> float:
        offset = self.offsets.get(host, 0.0)
        return offset(true_s) if callable(offset) else offset

    def local_ns(self, host: str, true_s: float) -> int:
        return round((true_s + self.offset_at(host, true_s)) * 1e9)

    def _span(self, *, trace_id, parent, name, kind, host, service, start_true, end_true, attrs) -> dict:
        span_id = self._id(16)
        self.rows.append(
            {
                "trace_id": trace_id,
                "span_id": span_id,
                "parent_span_id": parent,
                "name": name,
                "kind": kind,
                "start_ns": self.local_ns(host, start_true),
                "end_ns": self.local_ns(host, end_true),
                "status_code": "UNSET",
                "status_message": None,
                "service": service,
                "resource": json.dumps({"service.name": service, "host.name": host}),
                "attributes": json.dumps(attrs),
                "events": "[]",
                "links": "[]",
                "scope": "test",
                "source": "spanfactory",
            }
        )
        return self.rows[-1]

    def issue(self, token: Token, at_true: float, *, requester: str | None = "client-host") -> str:
        """Mint ``token`` on the issuer's host: a ``jit.issue`` span, inside a traced IssueToken call from
        ``requester`` (so the issuer's clock is tied to the others by a client/server pair). Returns the token id."""
        token.jti = token.jti or f"tok-{self._id(6)}"
        attrs = {c.TOKEN_ID: token.jti, c.TOKEN_SUB: token.sub, c.TOKEN_IAT: token.iat, c.TOKEN_EXP: token.exp}
        if token.grant_id:
            attrs |= {c.GRANT_ID: token.grant_id, c.GRANT_START: token.grant_start, c.GRANT_END: token.grant_end}
        assert self.issuer is not None
        trace_id, parent = self._id(32), None
        if requester is not None:
            rpc = {c.RPC_SYSTEM: "grpc", c.RPC_SERVICE: "jit.Issuer", c.RPC_METHOD: "IssueToken",
                   c.RPC_GRPC_STATUS_CODE: 0}
            cl = self._span(trace_id=trace_id, parent=None, name="jit.Issuer/IssueToken", kind="CLIENT",
                            host=requester, service="frontend", start_true=at_true - 0.002,
                            end_true=at_true + 0.003, attrs=rpc)
            sv = self._span(trace_id=trace_id, parent=cl["span_id"], name="jit.Issuer/IssueToken", kind="SERVER",
                            host=self.issuer, service="issuer", start_true=at_true - 0.001,
                            end_true=at_true + 0.002, attrs=rpc)
            parent = sv["span_id"]
        self._span(trace_id=trace_id, parent=parent, name=c.ISSUE_SPAN_NAME, kind="INTERNAL", host=self.issuer,
                   service="issuer", start_true=at_true, end_true=at_true + 0.001, attrs=attrs)
        return token.jti

    def call(
        self,
        at_true: float,
        token: Token | None,
        *,
        client: str = "client-host",
        server: str = "server-host",
        method: str = "Read",
        transit_s: float = 0.001,
        return_s: float | None = None,
        wait_s: float = 0.0,
        handle_s: float = 0.002,
        required: str | None = "orders.read",
        granted: list[str] | None = None,
        policy_version: str | None = "v1",
        policy_decision: str | None = None,
        client_ttl_override: float | None = None,
        server_traced: bool = True,
        server_instrumented: bool = True,
        client_instrumented: bool = True,
        in_band: bool = True,
        reason: bool = True,
        stream_checks: tuple[float, ...] = (),
    ) -> dict:
        """One unary call; returns a dict with trace_id, status and the client/server span rows."""
        granted = ["orders.read"] if granted is None else granted
        trace_id = self._id(32)
        t1, t2 = at_true, at_true + transit_s
        t_check = t2 + wait_s
        t3 = t_check + handle_s
        t4 = t3 + (transit_s if return_s is None else return_s)
        server_now = self.local_ns(server, t_check) / 1e9
        # what the server's verifier decides with its own clock
        verdict, status, denial = "valid", 0, None
        if token is None:
            verdict, status, denial = "missing", 16, "TOKEN_MISSING"
        elif token.bad:
            verdict, status, denial = token.bad, 16, "TOKEN_INVALID"
        elif token.exp - server_now < -self.leeway_s:
            verdict, status, denial = "expired", 16, "TOKEN_EXPIRED"
        elif token.nbf is not None and server_now < token.nbf - self.leeway_s:
            verdict, status, denial = "not_yet_valid", 16, "TOKEN_NOT_YET_VALID"
        decision = None
        if verdict == "valid":
            decision = "allow"
            if token.grant_start is not None and not token.grant_start <= server_now <= token.grant_end:
                decision, status, denial = "deny", 7, "GRANT_NOT_ACTIVE"
            elif required is not None and required not in granted:
                decision, status, denial = "deny", 7, "PERMISSION_MISSING"
            if policy_decision is not None:
                decision = policy_decision
                status, denial = (7, "PERMISSION_MISSING") if decision == "deny" else (0, None)
        events = []
        for at in stream_checks:  # later messages of a stream, each checked again (seconds after the first check)
            now = self.local_ns(server, t_check + at) / 1e9
            check = "expired" if token is not None and token.exp - now < -self.leeway_s else "valid"
            events.append({"name": c.TOKEN_CHECK_EVENT, "time_ns": round(now * 1e9),
                           "attributes": {c.TOKEN_VERDICT: check, c.TOKEN_TTL_S: token.exp - now if token else None}})
            if check != "valid" and status == 0:
                status, denial = 16, "TOKEN_EXPIRED"
                t3 = max(t3, t_check + at + 0.001)
                t4 = t3 + transit_s
                break
        rpc = {c.RPC_SYSTEM: "grpc", c.RPC_SERVICE: "shop.Orders", c.RPC_METHOD: method,
               c.RPC_GRPC_STATUS_CODE: status}
        client_attrs = dict(rpc)
        if client_instrumented:
            client_attrs[c.TOKEN_PRESENT] = token is not None
            client_attrs[c.CLOCK_SENT_NS] = self.local_ns(client, t1)
            if token is not None:
                client_now = self.local_ns(client, t1) / 1e9
                ttl = token.exp - client_now if client_ttl_override is None else client_ttl_override
                client_attrs |= {c.TOKEN_ID: token.jti or "anon", c.TOKEN_SUB: token.sub, c.TOKEN_IAT: token.iat,
                                 c.TOKEN_EXP: token.exp, c.TOKEN_TTL_S: ttl, c.TOKEN_AGE_S: client_now - token.iat}
            if in_band and server_traced and server_instrumented:
                # NTP from the four in-call stamps, each in its own host's clock (as the interceptors take them)
                s1, s2 = self.local_ns(client, t1), self.local_ns(server, t2)
                s3, s4 = self.local_ns(server, t3), self.local_ns(client, t4)
                client_attrs |= {c.CLOCK_OFFSET_S: ((s2 - s1) + (s3 - s4)) / 2e9,
                                 c.CLOCK_DELAY_S: ((s4 - s1) - (s3 - s2)) / 1e9}
            if denial and reason:
                client_attrs[c.DENIAL_REASON] = denial
        client_span = self._span(trace_id=trace_id, parent=None, name=f"shop.Orders/{method}", kind="CLIENT",
                                 host=client, service="frontend", start_true=t1, end_true=t4, attrs=client_attrs)
        server_span = None
        if server_traced:
            server_attrs = dict(rpc)
            if server_instrumented:
                server_attrs |= {c.TOKEN_PRESENT: token is not None, c.TOKEN_VERDICT: verdict,
                                 c.AUTH_WAIT_S: wait_s, c.CLOCK_PEER_SENT_NS: self.local_ns(client, t1),
                                 c.CLOCK_RECEIVED_NS: self.local_ns(server, t2)}
                if token is not None:
                    server_attrs |= {c.TOKEN_ID: token.jti or "anon", c.TOKEN_SUB: token.sub,
                                     c.TOKEN_IAT: token.iat, c.TOKEN_EXP: token.exp,
                                     c.TOKEN_TTL_S: token.exp - server_now, c.TOKEN_AGE_S: server_now - token.iat}
                    if token.nbf is not None:
                        server_attrs[c.TOKEN_NBF] = token.nbf
                    if token.grant_id:
                        server_attrs |= {c.GRANT_ID: token.grant_id, c.GRANT_START: token.grant_start,
                                         c.GRANT_END: token.grant_end}
                if decision is not None:
                    server_attrs |= {c.POLICY_DECISION: decision, c.POLICY_ENGINE: "casbin", c.POLICY_ID: "shop",
                                     c.POLICY_REQUIRED: required, c.POLICY_GRANTED: granted}
                    if policy_version is not None:
                        server_attrs[c.POLICY_VERSION] = policy_version
                if denial and reason:
                    server_attrs[c.DENIAL_REASON] = denial
            server_span = self._span(trace_id=trace_id, parent=client_span["span_id"], name=f"shop.Orders/{method}",
                                     kind="SERVER", host=server, service="orders", start_true=t2, end_true=t3,
                                     attrs=server_attrs)
            server_span["events"] = json.dumps(events)
        return {"trace_id": trace_id, "status": status, "client": client_span, "server": server_span}

    def tuples(self) -> list[tuple]:
        """The rows as the receiver's writer takes them (tuples in the spans schema's column order)."""
        return [tuple(r[n] for n in SPANS.names) for r in self.rows]

    def table(self) -> pa.Table:
        return pa.Table.from_pylist(self.rows, schema=arrow(SPANS))

    def write_parquet(self, path: Path) -> Path:
        pq.write_table(self.table(), path)
        return path

    def load(self, con: duckdb.DuckDBPyConnection) -> None:
        """Append the spans to ``con``'s spans table (as the loader would)."""
        arrow = self.table()  # noqa: F841  (read by DuckDB's replacement scan)
        con.execute("INSERT INTO span_rows SELECT * FROM arrow")


# ---------------------------------------------------------------------------------- the rows in other formats

def otlp_value(v: object) -> dict:
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    if isinstance(v, list):
        return {"arrayValue": {"values": [otlp_value(x) for x in v]}}
    return {"stringValue": str(v)}


def _kv(attrs: dict) -> list[dict]:
    return [{"key": k, "value": otlp_value(v)} for k, v in attrs.items() if v is not None]


def otlp(rows: list[dict]) -> dict:
    """An OTLP JSON export request holding ``rows`` (one resource per distinct resource)."""
    by_resource: dict[str, list[dict]] = {}
    for r in rows:
        by_resource.setdefault(r["resource"], []).append(r)
    return {"resourceSpans": [
        {"resource": {"attributes": _kv(json.loads(res))}, "scopeSpans": [{"scope": {"name": "test"}, "spans": [
            {"traceId": r["trace_id"], "spanId": r["span_id"], "parentSpanId": r["parent_span_id"] or "",
             "name": r["name"], "kind": SPAN_KINDS.index(r["kind"]),
             "startTimeUnixNano": str(r["start_ns"]), "endTimeUnixNano": str(r["end_ns"]),
             "attributes": _kv(json.loads(r["attributes"])), "status": {}}
            for r in spans]}]}
        for res, spans in by_resource.items()]}


def jaeger_tag(key: str, v: object) -> dict:
    kind = "bool" if isinstance(v, bool) else "int64" if isinstance(v, int) else "float64" if isinstance(
        v, float) else "string"
    return {"key": key, "type": kind, "value": v}


def jaeger(rows: list[dict]) -> dict:
    """A Jaeger UI download of ``rows`` (microseconds; lists, which Jaeger tags cannot hold, as JSON text)."""
    traces: dict[str, dict] = {}
    for r in rows:
        trace = traces.setdefault(r["trace_id"], {"traceID": r["trace_id"], "spans": [], "processes": {}})
        resource = json.loads(r["resource"])
        pid = f"p{list(traces).index(r['trace_id'])}-{resource.get('host.name')}-{r['service']}"
        trace["processes"][pid] = {"serviceName": r["service"],
                                   "tags": [jaeger_tag(k, v) for k, v in resource.items() if k != "service.name"]}
        attrs = json.loads(r["attributes"])
        trace["spans"].append({
            "traceID": r["trace_id"], "spanID": r["span_id"], "operationName": r["name"],
            "references": [{"refType": "CHILD_OF", "traceID": r["trace_id"], "spanID": r["parent_span_id"]}]
            if r["parent_span_id"] else [],
            "startTime": r["start_ns"] // 1000, "duration": (r["end_ns"] - r["start_ns"]) // 1000,
            "tags": [jaeger_tag("span.kind", r["kind"].lower())]
            + [jaeger_tag(k, json.dumps(v) if isinstance(v, list) else v) for k, v in attrs.items() if v is not None],
            "processID": pid})
    return {"data": list(traces.values()), "total": 0, "limit": 0, "offset": 0, "errors": None}


def zipkin(rows: list[dict]) -> list[dict]:
    """A Zipkin v2 JSON list of ``rows`` (microseconds; tags are strings, arrays as JSON text; the endpoint's
    ipv4 is the resource's host.ip)."""
    spans = []
    for r in rows:
        resource = json.loads(r["resource"])
        tags = {k: json.dumps(v) if isinstance(v, list) else str(v).lower() if isinstance(v, bool) else str(v)
                for k, v in json.loads(r["attributes"]).items() if v is not None}
        span = {"traceId": r["trace_id"], "id": r["span_id"], "name": r["name"],
                "timestamp": r["start_ns"] // 1000, "duration": (r["end_ns"] - r["start_ns"]) // 1000,
                "localEndpoint": {"serviceName": r["service"], "ipv4": resource.get("host.ip")}, "tags": tags}
        if r["kind"] in ("CLIENT", "SERVER"):
            span["kind"] = r["kind"]
        if r["parent_span_id"]:
            span["parentId"] = r["parent_span_id"]
        spans.append(span)
    return spans
