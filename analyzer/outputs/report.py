"""The human side of the output: the terminal table and report.html (plots as inline SVG drawn by _svg.py: no
plotting library and no network needed). Every count behind a plot is made in SQL; Python only sees the few rows a
plot draws (buckets, bins, hosts), never one row per span or denial."""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path

import duckdb

from jitrace.analyzer.outputs import _svg, denials_table
from jitrace.analyzer.outputs.trace_links import TraceUrl
from jitrace.instrumentation import contract

CAUSE_ORDER = {c: i for i, c in enumerate(contract.CAUSES)}


def _top(con: duckdb.DuckDBPyConnection, cause: str, dimension: str, n: int = 3) -> str:
    rows = con.execute(
        "SELECT value, denials FROM top_offenders WHERE cause = ? AND dimension = ? ORDER BY rank LIMIT ?",
        [cause, dimension, n],
    ).fetchall()
    return ", ".join(f"{v} ({k})" for v, k in rows)


def _top_services(con: duckdb.DuckDBPyConnection, cause: str, n: int = 3) -> str:
    """The RPC services most denied for ``cause``, each with the service.name of the process that served it (else
    that called it) in brackets: ``jitlab.Inventory [backend-r1] (5)``."""
    rows = con.execute(
        "SELECT coalesce(service, '(unknown)') AS rpc, coalesce(server_service, client_service) AS name, count(*) AS n "
        "FROM attributions WHERE cause = ? GROUP BY ALL ORDER BY n DESC, rpc, name LIMIT ?", [cause, n]).fetchall()
    return ", ".join(f"{rpc}{f' [{name}]' if name and name != rpc else ''} ({k})" for rpc, name, k in rows)


def script_json(value: object) -> str:
    """JSON for a ``<script type="application/json">`` element: a script's text is not HTML (entities stay as they
    are, so JSON.parse must read it as written), and no ``<``, ``>`` or ``&`` in it can end the element."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


# Control characters (C0 but the newline, DEL, C1) and bidirectional overrides: strings from the wire (a claim, a
# service name) must not drive the terminal (colours, titles, the clipboard) or reorder what it shows.
_UNPRINTABLE = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0)) if c != 0x0A}
_UNPRINTABLE |= {c: f"\\u{c:04x}" for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))}


def printable(text: str) -> str:
    """``text`` with every control character shown as an escape instead of acting on the terminal."""
    return text.translate(_UNPRINTABLE)


def terminal(con: duckdb.DuckDBPyConnection, summary: dict, trace_url: TraceUrl | None = None) -> str:
    """Causes, counts, top services/methods/principals, the suggested fix and an example denial (its trace id, and
    its link with ``trace_url``), as plain text (escaped: printable)."""
    return printable(_terminal(con, summary, trace_url))


def _examples(con: duckdb.DuckDBPyConnection) -> dict[str, tuple[str, str]]:
    """cause -> (trace id, span id) of its first denial by time."""
    rows = con.execute("SELECT cause, trace_id, span_id FROM attributions QUALIFY row_number() OVER "
                       "(PARTITION BY cause ORDER BY time NULLS LAST, trace_id, span_id) = 1").fetchall()
    return {cause: (trace_id, span_id) for cause, trace_id, span_id in rows}


def _terminal(con: duckdb.DuckDBPyConnection, summary: dict, trace_url: TraceUrl | None = None) -> str:
    rows = con.execute("SELECT cause, denials, share, mean_confidence, fix FROM cause_summary").fetchall()
    rows.sort(key=lambda r: (-r[1], CAUSE_ORDER.get(r[0], 99)))
    lines = [
        f"{summary['spans']} spans, {summary['logs']} logs, {summary['denials']} denials"
        + (f", {summary['bad_records']} bad records" if summary.get("bad_records") else "")
        + (f"; clocks relative to {summary.get('clock_reference')}" if summary.get("clock_reference") else ""),
    ]
    if not rows:
        lines.append("no PERMISSION_DENIED or UNAUTHENTICATED calls found")
        return "\n".join(lines)
    head = f"{'cause':<24} {'denials':>7} {'share':>6} {'conf':>5}  top services [service.name] / methods / principals"
    lines += [head, "-" * len(head)]
    examples = _examples(con)
    for cause, n, share, conf, fix in rows:
        lines.append(f"{cause:<24} {n:>7} {share:>6.1%} {conf:>5.2f}  services:   {_top_services(con, cause)}")
        lines.append(f"{'':<47}methods:    {_top(con, cause, 'method')}")
        lines.append(f"{'':<47}principals: {_top(con, cause, 'principal')}")
        lines.append(f"{'':<47}fix:        {fix}")
        if cause in examples:
            trace_id, span_id = examples[cause]
            link = f"  {trace_url.fill(trace_id, span_id)}" if trace_url is not None else ""
            lines.append(f"{'':<47}example:    trace {trace_id}{link}")
    return "\n".join(lines)


def cause_color(cause: str) -> str:
    """One colour per cause, the same in every plot: the palette in contract.CAUSES order, grey for others."""
    i = CAUSE_ORDER.get(cause)
    return _svg.PALETTE[i % len(_svg.PALETTE)] if i is not None else "#999999"


def _by_cause(causes: set[str]) -> list[str]:
    return sorted(causes, key=lambda c: (CAUSE_ORDER.get(c, 99), c))


# Bucket widths for "denials over time", smallest first: the first giving fewer than MAX_BUCKETS buckets is used.
BUCKET_WIDTHS_S = (1, 5, 10, 30, 60, 300, 600, 1800, 3600, 6 * 3600, 86400, 7 * 86400)
MAX_BUCKETS = 60
_UNITS = ((86400, "d"), (3600, "h"), (60, "min"), (1, "s"))


def bucket_width(span_s: float) -> float:
    """The bucket width (seconds) for denials spread over ``span_s`` seconds: the smallest of BUCKET_WIDTHS_S giving
    fewer than MAX_BUCKETS buckets, else the span cut evenly (longer than MAX_BUCKETS weeks)."""
    width = next((w for w in BUCKET_WIDTHS_S if span_s / w < MAX_BUCKETS), None)
    return float(width if width is not None else span_s / (MAX_BUCKETS - 1))


def denial_counts(con: duckdb.DuckDBPyConnection) -> tuple[float, datetime, list[tuple[int, str, int]]] | None:
    """(bucket width in seconds, time of the first denial, [(bucket, cause, denials)]) over ``attributions``, or
    None when no denial has a time. Only min and max reach Python; DuckDB groups every row by bucket and cause, in
    whole microseconds (a TIMESTAMP's unit)."""
    first, lo_us, hi_us = con.execute(
        "SELECT min(time), epoch_us(min(time)), epoch_us(max(time)) FROM attributions WHERE time IS NOT NULL"
    ).fetchone()
    if first is None:
        return None
    width = bucket_width((hi_us - lo_us) / 1e6)
    if width.is_integer():
        bucket = f"(epoch_us(time) - {int(lo_us)}) // {int(width) * 1_000_000}"
    else:
        bucket = f"floor((epoch_us(time) - {int(lo_us)}) / {width * 1e6!r})::BIGINT"
    rows = con.execute(f"""
        SELECT {bucket} AS bucket, coalesce(cause, '?') AS cause, count(*) AS n FROM attributions
        WHERE time IS NOT NULL GROUP BY ALL ORDER BY bucket""").fetchall()
    return width, first, [(int(b), str(c), int(n)) for b, c, n in rows]


def plot_denials_over_time(con: duckdb.DuckDBPyConnection) -> str:
    """Stacked bars of denials per time bucket and cause, the bucket width from the data's span (denial_counts);
    the <svg> says its number of buckets and their width (data-buckets, data-bucket-s)."""
    canvas = _svg.Canvas(820, 300, "Denials over time by cause")
    counted = denial_counts(con)
    if counted is None:
        canvas.message("no denials")
        return canvas.render(buckets=0)
    width, first, rows = counted
    n = max(b for b, _, _ in rows) + 1
    unit_s, unit = next((u, name) for u, name in _UNITS if width >= u or u == 1)
    step = width / unit_s  # bar width in axis units
    causes = _by_cause({c for _, c, _ in rows})
    heights = {c: [0] * n for c in causes}
    for b, c, k in rows:
        heights[c][b] += k
    stacks = [sum(heights[c][i] for c in causes) for i in range(n)]
    legend = _svg.legend_width(causes)
    _, ymax, ystep = _svg.nice_range(0, max(stacks), integer=True)
    xmax = n * step
    plot = canvas.panel(60, 34, legend + 24, 50, xlim=(0, xmax), ylim=(0, ymax))
    plot.y_axis(ystep, f"denials per {step:g} {unit}")
    starts = [i * step for i in range(n)]
    plot.stacked_bars(starts, step, [(c, cause_color(c), heights[c]) for c in causes],
                      where=[f"{x:g}–{x + step:g} {unit}" for x in starts])
    plot.x_axis(_svg.nice_step(xmax, 6), f"{unit} since {first:%Y-%m-%d %H:%M:%S} UTC (first denial)")
    canvas.legend(plot.right + 16, plot.top + 6, [(c, cause_color(c)) for c in causes])
    return canvas.render(buckets=n, bucket_s=f"{width:g}")


def clock_reference(con: duckdb.DuckDBPyConnection) -> str | None:
    """The clock the offsets are relative to: the reference most offsets name (the issuer's, or 'consensus'); the
    first by name on a tie. summary.json's clock_reference and the offsets plot both say this one."""
    row = con.execute("SELECT reference FROM clock_offsets WHERE reference IS NOT NULL GROUP BY reference "
                      "ORDER BY count(*) DESC, reference LIMIT 1").fetchone()
    return row[0] if row else None


def plot_offsets(con: duckdb.DuckDBPyConnection) -> str:
    """Offset of each host (clock domain) against the reference, with its bound: one bar per host when each has one
    segment that barely drifts, else each host's line over time (one piece per segment of its clock model) over the
    band its bound allows, with a mark where the line jumps (a step of the clock)."""
    rows = con.execute("SELECT domain, reference, window_start, window_end, offset_s, error_s, lower_s, upper_s, "
                       "rate_ppm FROM clock_offsets WHERE offset_s IS NOT NULL ORDER BY domain, window_start"
                       ).fetchall()
    title = "Clock offset per host, with its bound"
    if not rows:
        canvas = _svg.Canvas(820, 300, title)
        canvas.message("no client/server pairs across hosts")
        return canvas.render(series=0)
    reference = clock_reference(con)
    segments: dict[str, list[tuple]] = {}
    for domain, _, start, end, off, err, lower, upper, rate in rows:
        if start is None:
            continue
        end = end or start
        err = err or 0.0
        below = off - lower if lower is not None else err
        above = upper - off if upper is not None else err
        segments.setdefault(str(domain), []).append((start, end, off, below, above, (rate or 0.0) * 1e-6))

    def drift(s: tuple) -> float:
        return abs(s[5]) * (s[1] - s[0]).total_seconds()

    if all(len(s) == 1 and drift(s[0]) <= max(s[0][3], s[0][4], 1e-6) for s in segments.values()):
        return _offset_bars(rows, title, reference)
    first = min(s[0] for ss in segments.values() for s in ss)
    last = max(s[1] for ss in segments.values() for s in ss)

    def minutes(t) -> float:
        return (t - first).total_seconds() / 60

    drawn: dict[str, list[tuple]] = {}
    steps: dict[str, list[tuple[float, str]]] = {}
    for host, ss in segments.items():
        pieces = []
        for start, end, off, below, above, rate in ss:
            half = (end - start).total_seconds() / 2
            pieces.append((minutes(start), minutes(end), (off - rate * half) * 1e3, (off + rate * half) * 1e3,
                           below * 1e3, above * 1e3))
        drawn[host] = pieces
        # a jump between two segments wider than both bands: the clock stepped there
        steps[host] = [(b[0], f"step of {b[2] - a[3]:+.3f} ms at {first + timedelta(minutes=b[0]):%H:%M:%S}")
                       for a, b in zip(pieces, pieces[1:], strict=False)
                       if abs(b[2] - a[3]) > max(a[4], a[5]) + max(b[4], b[5])]
    hosts = sorted(drawn)
    ylo, yhi, ystep = _svg.padded_range(min(min(p[2], p[3]) - p[4] for ps in drawn.values() for p in ps),
                                        max(max(p[2], p[3]) + p[5] for ps in drawn.values() for p in ps))
    xlo, xhi, xstep = _svg.nice_range(0.0, max(minutes(last), 1e-3), 6)
    colors = {h: _svg.PALETTE[i % len(_svg.PALETTE)] for i, h in enumerate(hosts)}
    canvas = _svg.Canvas(820, max(300, 100 + 17 * len(hosts)), title)
    canvas.subtitle(f"positive = clock ahead of {reference}; bands: the bound; triangles: steps")
    plot = canvas.panel(72, 46, _svg.legend_width(hosts) + 24, 50, xlim=(xlo, xhi), ylim=(ylo, yhi))
    plot.y_axis(ystep, f"offset vs {reference} (ms)")
    plot.hline(0, "#999")
    for host in hosts:
        plot.band_line(host, colors[host], drawn[host], steps[host])
    plot.x_axis(xstep, f"minutes since {first:%Y-%m-%d %H:%M} UTC")
    canvas.legend(plot.right + 16, plot.top + 6, [(h, colors[h]) for h in hosts], marker="line")
    return canvas.render(series=len(hosts))


def _offset_bars(rows: list[tuple], title: str, reference: str) -> str:
    """One horizontal bar per host (largest offset on top) with its error bar and "+1.2 ± 0.3 ms"."""
    rows = sorted(rows, key=lambda r: (-r[4], str(r[0])))
    hosts = [str(r[0]) for r in rows]
    offs = [r[4] * 1e3 for r in rows]
    errs = [(r[5] or 0.0) * 1e3 for r in rows]
    labels = [f"{o:+.1f} ± {e:.1f} ms" for o, e in zip(offs, errs, strict=True)]
    lo, hi, step = _svg.nice_range(min(0.0, *(o - e for o, e in zip(offs, errs, strict=True))),
                                   max(0.0, *(o + e for o, e in zip(offs, errs, strict=True))), 6, slack=0.1)
    canvas = _svg.Canvas(820, max(150, 90 + 28 * len(rows)), title)
    left = min(max(60, 14 + max(_svg.text_width(h) for h in hosts)), 260)
    plot = canvas.panel(left, 34, 30, 52, xlim=(lo, hi))
    plot.x_axis(step, f"offset vs {reference} (ms; positive = ahead)", grid=True)
    centres = plot.categories(hosts)
    plot.hbars(centres, offs, errors=errs, labels=labels, names=hosts, colors=["#4c72b0"] * len(rows))
    plot.vline(0)
    return canvas.render(series=len(rows))


TTL_BINS = 40
_TTL_SIDES = (("CLIENT", "at send (client clock)"), ("SERVER", "at check (server clock)"))
_ALLOWED, _DENIED = "#7fa7d9", "#d9534f"


def ttl_counts(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    """plot_ttl's counts: rows (kind, lo, hi, denied, bin, n), TTL_BINS equal bins between each side's min and max of
    jit.token.ttl_s, counted in SQL over every span (no sample, and millions of spans never reach Python). It reads
    only the spans, so ``analyze`` runs it beside the steps (two scans of the spans: each side's range, then the
    counts in bins of it; one query would keep every span's ttl until it knew the range)."""
    spans = ("FROM rpc_spans WHERE jit_token_ttl_s IS NOT NULL AND isfinite(jit_token_ttl_s) "
             "AND kind IN ('CLIENT', 'SERVER')")
    ranges = {kind: (lo, hi) for kind, lo, hi in con.execute(
        f"SELECT kind, min(jit_token_ttl_s), max(jit_token_ttl_s) {spans} GROUP BY kind").fetchall()}
    if not ranges:
        return []
    kinds = sorted(ranges)
    lo, hi = ("CASE kind " + " ".join("WHEN ? THEN ?::DOUBLE" for _ in kinds) + " END" for _ in range(2))
    params = [v for k in kinds for v in (k, ranges[k][0])] + [v for k in kinds for v in (k, ranges[k][1])]
    rows = con.execute(f"""
        SELECT kind, denied, least(floor((ttl - lo) / nullif(hi - lo, 0) * {TTL_BINS}), {TTL_BINS} - 1)::INTEGER AS bin,
               count(*) AS n
        FROM (SELECT kind, jit_token_ttl_s AS ttl, denied, {lo} AS lo, {hi} AS hi {spans}) AS t
        GROUP BY ALL
    """, params).fetchall()
    return [(kind, *ranges[kind], denied, b, n) for kind, denied, b, n in rows]


def plot_ttl(rows: list[tuple]) -> str:
    """Histograms of jit.token.ttl_s per side (``ttl_counts``' rows), allowed and denied stacked."""
    canvas = _svg.Canvas(820, 300)
    canvas.legend(canvas.width / 2 - 70, 14, [("allowed", _ALLOWED), ("denied", _DENIED)], horizontal=True)
    half = canvas.width / 2
    for i, (kind, label) in enumerate(_TTL_SIDES):
        side = [r for r in rows if r[0] == kind]
        with canvas.group(kind=kind):
            _ttl_side(canvas.panel(60 + i * half, 52, 16 + (1 - i) * half, 50), label, side)
    return canvas.render()


def _ttl_side(plot: _svg.Panel, label: str, side: list[tuple]) -> None:
    """One side's histogram: rows (kind, lo, hi, denied, bin, n) of plot_ttl's query."""
    plot.title(f"token ttl {label}")
    if not side:
        plot.message("no jit.token.ttl_s")
        return
    lo, hi = float(side[0][1]), float(side[0][2])
    width = (hi - lo) / TTL_BINS if hi > lo else 1.0
    counts = {False: [0] * TTL_BINS, True: [0] * TTL_BINS}
    for _, _, _, denied, b, n in side:
        counts[bool(denied)][int(b or 0)] += int(n)
    stacks = [a + d for a, d in zip(counts[False], counts[True], strict=True)]
    xlo, xhi, xstep = _svg.nice_range(min(lo, 0.0), max(lo + TTL_BINS * width, 0.0), 5)  # 0 s always shown
    plot.xlim = (xlo, xhi)
    _, ymax, ystep = _svg.nice_range(0, max(stacks), integer=True)
    plot.ylim = (0, ymax)
    plot.y_axis(ystep, "spans")
    starts = [lo + k * width for k in range(TTL_BINS)]
    plot.stacked_bars(starts, width, [("allowed", _ALLOWED, counts[False]), ("denied", _DENIED, counts[True])],
                      where=[f"{x:.4g}–{x + width:.4g} s" for x in starts])
    plot.vline(0)
    plot.x_axis(xstep, "seconds left")


def plot_offenders(con: duckdb.DuckDBPyConnection) -> str:
    """The top 3 services and principals of each cause, one bar each in the cause's colour."""
    rows = con.execute(
        "SELECT cause, dimension, value, denials FROM top_offenders WHERE rank <= 3 AND dimension IN "
        "('service', 'principal') ORDER BY cause, dimension, rank"
    ).fetchall()
    rows.sort(key=lambda r: (CAUSE_ORDER.get(r[0], 99), r[0], r[1]))  # stable: rank order kept within a group
    title = "Top offenders per cause"
    canvas = _svg.Canvas(820, max(150, 80 + 22 * len(rows)), title)
    if not rows:
        canvas.message("no denials")
        return canvas.render(bars=0)
    labels = [f"{c} · {d}: {'' if v is None else v}" for c, d, v, _ in rows]
    values = [int(r[3]) for r in rows]
    _, hi, step = _svg.nice_range(0, max(values), 6, integer=True)
    left = min(max(80, 14 + max(_svg.text_width(label) for label in labels)), 420)
    plot = canvas.panel(left, 34, 30, 52, xlim=(0, hi))
    plot.x_axis(step, "denials", grid=True)
    centres = plot.categories(labels)
    plot.hbars(centres, values, labels=[str(v) for v in values], names=[str(r[0]) for r in rows],
               colors=[cause_color(r[0]) for r in rows])
    return canvas.render(bars=len(rows))


def html_table(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """An HTML table of query results (NULL shows as an empty cell); every value is escaped."""
    if not rows:
        return "<p><em>none</em></p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape('' if v is None else str(v))}</td>" for v in row) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _query_table(con: duckdb.DuckDBPyConnection, sql: str) -> str:
    cursor = con.execute(sql)
    columns = [d[0] for d in cursor.description]
    return html_table(columns, cursor.fetchall())


def logs_by_cause(con: duckdb.DuckDBPyConnection, per_cause: int = 10, trace_url: TraceUrl | None = None) -> str:
    """Under each cause, the log lines of its first denials that have any (the lines are already bounded and cut
    by the SQL; the loaders redacted bearer tokens). A cause decided from logs shows the line that decided it. With
    ``trace_url`` each trace id links to its trace."""
    rows = con.execute(
        """SELECT cause, time, trace_id, span_id, rule, CAST(json_extract(evidence, '$.logs') AS VARCHAR[]) AS lines,
                  json_extract_string(evidence, '$.log_line') AS decisive
           FROM (SELECT a.*, row_number() OVER (PARTITION BY cause ORDER BY time, trace_id) AS n
                 FROM attributions AS a  -- a denial has evidence.logs when it has lines in denial_logs: only
                                         -- those are read (not every evidence is scanned)
                 SEMI JOIN denial_logs AS l ON l.denial_trace_id = a.trace_id AND l.denial_span_id = a.span_id)
           WHERE n <= ? ORDER BY cause, time, trace_id""", [per_cause]).fetchall()
    if not rows:
        return "<p><em>no log records joined to any denial</em></p>"
    parts: list[str] = []
    for cause in sorted({r[0] for r in rows}, key=lambda c: CAUSE_ORDER.get(c, 99)):
        parts.append(f'<h3 id="logs-{html.escape(cause)}">{html.escape(cause)}</h3>')
        for _, when, trace_id, span_id, rule, lines, decisive in (r for r in rows if r[0] == cause):
            trace = html.escape(str(trace_id))
            if trace_url is not None:
                trace = (f'<a href="{html.escape(trace_url.fill(trace_id, span_id))}" target="_blank" '
                         f'rel="noopener noreferrer">{trace}</a>')
            head = f"{html.escape(str(when))} · trace {trace} · rule {html.escape(str(rule))}"
            body = "\n".join(("» " if line == decisive else "  ") + line for line in lines or [])
            parts.append(f'<div class="logs"><div>{head}</div><pre>{html.escape(body)}</pre></div>')
    return "".join(parts)


# The pages' style sheet (report.html of analyze and of replay).
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 12px; margin-bottom: 1.5em; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: left; vertical-align: top; }
td { max-width: 40em; overflow-wrap: anywhere; }
figure { display: inline-block; margin: 0.5em 0.5em 1.5em; vertical-align: top; max-width: 100%; }
figure svg { display: block; max-width: 100%; height: auto; }
figcaption { font-size: 13px; color: #555; margin-top: 4px; }
.logs pre { font-size: 11px; background: #f6f6f6; padding: 4px; margin: 2px 0 10px; white-space: pre-wrap; }
.hint { font-size: 13px; color: #555; max-width: 60em; }
"""


def write_html(con: duckdb.DuckDBPyConnection, path: Path, summary: dict, *,
               max_rows: int = denials_table.MAX_ROWS, ttl_rows: list[tuple] | None = None,
               trace_url: TraceUrl | None = None, denials_data: Callable[[], str] | None = None) -> None:
    """A self-contained report.html: summary, the four plots (inline SVG), the cause table, the denials (up to
    ``max_rows``: sortable, filterable, each trace a link with ``trace_url``), the log lines under each cause and the
    clock offsets. ``ttl_rows``: ``ttl_counts``' rows, if already counted; ``denials_data``: gives the denials
    table's data (denials_table.data_json) when it is built elsewhere."""
    plots = [
        ("denials-over-time", "Denials over time", plot_denials_over_time(con)),
        ("clock-offsets", "Clock offsets", plot_offsets(con)),
        ("token-ttl", "Token ttl at send and at check", plot_ttl(ttl_counts(con) if ttl_rows is None else ttl_rows)),
        ("top-offenders", "Top offenders", plot_offenders(con)),
    ]
    causes = _query_table(con, "SELECT cause, denials, round(share * 100, 1) AS percent, round(mean_confidence, 2) "
                               "AS confidence, fix FROM cause_summary")
    offsets = _query_table(con, "SELECT domain, reference, window_start, window_end, round(offset_s * 1e3, 3) AS "
                                "offset_ms, round(lower_s * 1e3, 3) AS lower_ms, round(upper_s * 1e3, 3) AS upper_ms, "
                                "round(rate_ppm, 3) AS rate_ppm, samples FROM clock_offsets ORDER BY "
                                "domain, window_start LIMIT 200")
    denials = denials_table.section(con, trace_url, max_rows, data=denials_data)
    figures = "".join(
        f'<figure id="{pid}">{svg}<figcaption>{html.escape(title)}</figcaption></figure>' for pid, title, svg in plots
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>jitrace report</title>
<style>{STYLE}{denials_table.STYLE}</style></head><body>
<h1>Why were these calls denied?</h1>
<p id="summary">{summary['spans']} spans, {summary['logs']} logs, <strong>{summary['denials']} denials</strong>,
{summary['bad_records']} bad records. Clock reference: {html.escape(str(summary.get('clock_reference')))}.</p>
<h2>Causes</h2>{causes}
<h2>Plots</h2>{figures}
{denials}
<h2 id="logs">Log lines under each cause</h2>
<p>Time (the logging host's clock, UTC), service, severity, message; » marks the line a log pattern decided by.</p>
{logs_by_cause(con, trace_url=trace_url)}
<h2>Clock offsets</h2>{offsets}
<script>
// lets a headless browser (and a test) see that every plot rendered: <body data-plots-loaded="N"> counts the figures'
// <svg> elements that were laid out with a size and have at least one drawn shape or text
window.addEventListener("load", () => {{
  const drawn = svg => {{
    const box = svg.getBoundingClientRect();
    return box.width > 0 && box.height > 0 && [...svg.querySelectorAll("rect, line, polyline, circle, path, text")]
      .some(e => {{ const b = e.getBBox(); return b.width > 0 || b.height > 0; }});
  }};
  document.body.dataset.plotsLoaded = [...document.querySelectorAll("figure > svg")].filter(drawn).length;
}});
</script>
<script type="application/json" id="summary-json">{script_json(summary)}</script>
</body></html>
"""
    Path(path).write_text(page)
