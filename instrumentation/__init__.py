"""jitrace instrumentation: JIT-access facts on every gRPC span.

Importing this package is cheap and needs neither grpc nor the OpenTelemetry SDK; the instrumentor loads them
when it is used. See README.md for the ``JITRACE_*`` settings.
"""
