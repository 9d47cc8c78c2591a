"""Links from a denial to its trace in the team's trace viewer: ``--trace-url`` / ``JITRACE_TRACE_URL``.

A template is an http(s) URL with ``{trace_id}`` (and optionally ``{span_id}``) where the ids go, for example
``http://jaeger:16686/trace/{trace_id}``. Ids come from the wire: each is percent-encoded (every byte but ASCII
letters, digits and ``-._~``) before it goes in, the same way in Python (the terminal), in SQL (attributions.csv)
and in the report's JavaScript (``JS_FILL``), so the three give the same URL for the same denial.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

from jitrace.analyzer.errors import UserError
from jitrace.analyzer.steps.spans_view import sql_string

ENV = "JITRACE_TRACE_URL"
OPTION = "--trace-url"
PLACEHOLDERS = ("trace_id", "span_id")
MAX_CHARS = 4096
# {name}: a placeholder. Braces around anything that is not a bare name (JSON in a Grafana Explore URL) are text.
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_USERINFO = re.compile(r"//[^/?#@]*@")
_FORBIDDEN = re.compile(r"[\x00-\x20\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")

# The report's fill, the same as TraceUrl.fill: encodeURIComponent leaves !'()* as they are, quote(safe="") does not.
JS_FILL = r"""(template, traceId, spanId) => {
  const enc = s => encodeURIComponent(s == null ? "" : String(s))
    .replace(/[!'()*]/g, c => "%" + c.charCodeAt(0).toString(16).toUpperCase());
  return template.replace(/\{(trace_id|span_id)\}/g, (_, name) => enc(name === "trace_id" ? traceId : spanId));
}"""


def encode(value: str | None) -> str:
    """An id as it goes into a URL: percent-encoded UTF-8, only ASCII letters, digits and ``-._~`` left as they are."""
    return urllib.parse.quote("" if value is None else str(value), safe="")


@dataclass(frozen=True)
class TraceUrl:
    """A checked template (``parse``)."""

    template: str

    @property
    def uses_span_id(self) -> bool:
        return "{span_id}" in self.template

    def fill(self, trace_id: str | None, span_id: str | None = None) -> str:
        ids = {"trace_id": encode(trace_id), "span_id": encode(span_id)}
        return _PLACEHOLDER.sub(lambda m: ids[m.group(1)], self.template)

    def sql(self, trace_id: str = "trace_id", span_id: str = "span_id") -> str:
        """A SQL expression of the link for the row's columns ``trace_id`` and ``span_id`` (url_encode is DuckDB's
        percent-encoding, byte for byte ``encode``'s). The trace id goes in first: once encoded it holds no brace,
        so the second replace sees only the template's own placeholders."""
        return (f"replace(replace({sql_string(self.template)}, '{{trace_id}}', url_encode(coalesce({trace_id}, ''))),"
                f" '{{span_id}}', url_encode(coalesce({span_id}, '')))")


def parse(text: str, source: str = OPTION) -> TraceUrl:
    """``text`` checked as a template, or a one-line UserError naming ``source`` (the option or the variable)."""
    visible = _USERINFO.sub("//***@", text)  # a password in the template stays out of the message
    shown = repr(visible[:80] + ("..." if len(visible) > 80 else ""))

    def bad(why: str) -> UserError:
        return UserError(f"{source} {shown}: {why}")

    template = text.strip()
    if not template:
        raise bad("empty; expected a URL such as http://jaeger:16686/trace/{trace_id}")
    if len(template) > MAX_CHARS:
        raise bad(f"longer than {MAX_CHARS} characters")
    if _FORBIDDEN.search(template):
        raise bad("holds a space or a control character (write them percent-encoded, %20)")
    unknown = sorted({m.group(1) for m in _PLACEHOLDER.finditer(template)} - set(PLACEHOLDERS))
    if unknown:
        raise bad(f"unknown placeholder {{{unknown[0]}}} (only {{trace_id}} and {{span_id}})")
    if "{trace_id}" not in template:
        raise bad("has no {trace_id} placeholder")
    parts = urllib.parse.urlsplit(template)
    if parts.scheme.lower() not in ("http", "https"):
        raise bad("expected an http:// or https:// URL")
    if not parts.hostname or "{" in parts.netloc or "}" in parts.netloc:
        raise bad("expected a host name after the scheme (placeholders go in the path or the query)")
    if "@" in parts.netloc:
        raise bad("carries credentials (user@ or user:password@): every report and CSV would hold them")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise bad("the port is not a number") from None
    return TraceUrl(template)


def from_settings(option: str | None, environ: Mapping[str, str] = os.environ) -> TraceUrl | None:
    """The template ``--trace-url`` gives, else ``JITRACE_TRACE_URL`` (unset or empty: no links), checked."""
    if option is not None:
        return parse(option, OPTION)
    value = environ.get(ENV, "")
    return parse(value, ENV) if value.strip() else None
