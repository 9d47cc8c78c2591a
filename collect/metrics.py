"""``jitrace collect --watch --metrics HOST:PORT --metrics-otlp URL``: the watch's figures as metrics to alert on.

Made with the OpenTelemetry SDK's own metrics API, on a MeterProvider of this module's (never the global one: a
receiver inside an instrumented process must not mix its metrics with the service's), read by the SDK's exporters:
``opentelemetry-exporter-prometheus`` serves them for Prometheus to scrape, the OTLP exporter pushes them (gRPC, or
HTTP for a URL whose path is ``/v1/metrics``). No encoder is written here.

The names (docs/contract.md, "Live"): ``jitrace_denials_total{cause,service,method}`` (the live attributions, counted
by their current cause), ``jitrace_denial_corrections_total``, ``jitrace_spans_received_total``,
``jitrace_attribution_lag_seconds`` (a histogram), ``jitrace_clock_offset_seconds{domain}`` with
``jitrace_clock_offset_lower_seconds`` and ``jitrace_clock_offset_upper_seconds`` (the bound).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable
from urllib.parse import urlsplit

from jitrace.analyzer.errors import UserError

__all__ = ["LAG_BUCKETS", "Metrics", "check_otlp_url"]

# the lag histogram's bucket bounds, seconds: around the 2 s the watch aims at
LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
DEFAULT_INTERVAL_S = 10.0


def check_otlp_url(url: str) -> tuple[str, str]:
    """``(protocol, endpoint)`` of ``--metrics-otlp URL``: ``http/protobuf`` when the path is ``/v1/metrics``, else
    ``grpc``; anything but an http(s) URL with a host is a one-line error."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        raise UserError(f"--metrics-otlp {url[:80]!r}: expected http(s)://HOST:PORT (OTLP/gRPC) or "
                        "http(s)://HOST:PORT/v1/metrics (OTLP/HTTP)")
    if parts.path.rstrip("/").endswith("/v1/metrics"):
        return "http/protobuf", url
    if parts.path not in ("", "/"):
        raise UserError(f"--metrics-otlp {url[:80]!r}: an OTLP/HTTP URL ends in /v1/metrics; an OTLP/gRPC one has "
                        "no path")
    return "grpc", url


class Metrics:
    """The watch's instruments; ``start()`` serves or pushes them, ``shutdown()`` exports the last values."""

    def __init__(self, prometheus: str | None = None, otlp: str | None = None, *,
                 interval_s: float = DEFAULT_INTERVAL_S) -> None:
        self.prometheus_addr, self.otlp_url, self.interval_s = prometheus, otlp, interval_s
        self.prometheus_port: int | None = None
        self._lock = threading.Lock()
        self._denials: Counter[tuple[str, str, str]] = Counter()
        self._offsets: dict[str, tuple[float, float, float]] = {}
        self._provider = self._http = None

    def start(self) -> int | None:
        """Build the provider and its readers; returns the Prometheus port (None without ``prometheus``)."""
        from opentelemetry.metrics import CallbackOptions, Observation
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.resources import Resource

        readers = []
        if self.prometheus_addr is not None:
            try:
                from opentelemetry.exporter.prometheus import PrometheusMetricReader
                from prometheus_client import CollectorRegistry, start_http_server
            except ImportError:
                raise UserError("--metrics needs opentelemetry-exporter-prometheus, which is not installed: "
                                "pip install 'jitrace[analyzer]'") from None

            host, _, port = self.prometheus_addr.rpartition(":")
            registry = CollectorRegistry()  # this receiver's own, not prometheus_client's global one
            readers.append(PrometheusMetricReader(registry=registry))
            try:
                self._http, _ = start_http_server(int(port), addr=host.strip("[]"), registry=registry)
            except OSError as exc:
                raise UserError(f"--metrics {self.prometheus_addr}: cannot listen: {exc.strerror or exc}") from None
            self.prometheus_port = self._http.server_port
        if self.otlp_url is not None:
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

            protocol, endpoint = check_otlp_url(self.otlp_url)
            if protocol == "grpc":
                from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

                exporter = OTLPMetricExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"))
            else:
                from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                    OTLPMetricExporter as OTLPHTTPMetricExporter,
                )

                exporter = OTLPHTTPMetricExporter(endpoint=endpoint)
            readers.append(PeriodicExportingMetricReader(exporter, export_interval_millis=self.interval_s * 1000))
        self._provider = MeterProvider(metric_readers=readers,
                                       resource=Resource.create({"service.name": "jitrace-collect"}))
        meter = self._provider.get_meter("jitrace.collect.watch")

        def denials(_: CallbackOptions) -> Iterable[Observation]:
            with self._lock:
                counts = list(self._denials.items())
            return [Observation(n, {"cause": c, "service": s, "method": m}) for (c, s, m), n in counts]

        def offsets(which: int):
            def observe(_: CallbackOptions) -> Iterable[Observation]:
                with self._lock:
                    rows = list(self._offsets.items())
                return [Observation(values[which], {"domain": domain}) for domain, values in rows]
            return observe

        meter.create_observable_counter(
            "jitrace_denials_total", [denials],
            description="denied gRPC calls attributed by the watch, by their current cause")
        self._corrections = meter.create_counter(
            "jitrace_denial_corrections_total", description="attributions a later span changed")
        self._spans = meter.create_counter(
            "jitrace_spans_received_total", description="spans acknowledged by the receiver")
        self._lag = meter.create_histogram(
            "jitrace_attribution_lag_seconds", unit="s", explicit_bucket_boundaries_advisory=list(LAG_BUCKETS),
            description="from the acknowledgement of a denial's last span to its printed line")
        for which, name, what in ((0, "jitrace_clock_offset_seconds", "the host's clock minus the reference's"),
                                  (1, "jitrace_clock_offset_lower_seconds", "the offset's lower bound"),
                                  (2, "jitrace_clock_offset_upper_seconds", "the offset's upper bound")):
            meter.create_observable_gauge(name, [offsets(which)], unit="s",
                                          description=f"{what}, at the latest segment of the clock model")
        return self.prometheus_port

    def spans(self, n: int) -> None:
        if self._provider is not None and n:
            self._spans.add(n)

    def denial(self, key: tuple[str, str, str], was: tuple[str, str, str] | None = None) -> None:
        """A denial attributed (cause, service, method); ``was``: the key it had before a correction."""
        with self._lock:
            self._denials[key] += 1
            if was is not None:
                self._denials[was] -= 1
        if was is not None and self._provider is not None:
            self._corrections.add(1)

    def lag(self, seconds: float) -> None:
        if self._provider is not None:
            self._lag.record(max(0.0, seconds))

    def set_offsets(self, rows: Iterable[tuple[str, float, float, float]]) -> None:
        with self._lock:
            self._offsets = {domain: (offset, lower, upper) for domain, offset, lower, upper in rows}

    def denial_counts(self) -> dict[tuple[str, str, str], int]:
        with self._lock:
            return {k: n for k, n in self._denials.items() if n}

    def shutdown(self) -> None:
        """Export the last values (OTLP) and stop serving."""
        if self._provider is not None:
            self._provider.shutdown()
            self._provider = None
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
