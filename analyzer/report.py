"""The human side of the output: the terminal table and report.html (plots as base64 PNGs, no network needed)."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import duckdb
import matplotlib

matplotlib.use("Agg")  # headless: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from jitrace.instrumentation import contract  # noqa: E402

CAUSE_ORDER = {c: i for i, c in enumerate(contract.CAUSES)}


def _top(con: duckdb.DuckDBPyConnection, cause: str, dimension: str, n: int = 3) -> str:
    rows = con.execute(
        "SELECT value, denials FROM top_offenders WHERE cause = ? AND dimension = ? ORDER BY rank LIMIT ?",
        [cause, dimension, n],
    ).fetchall()
    return ", ".join(f"{v} ({k})" for v, k in rows)


def terminal(con: duckdb.DuckDBPyConnection, summary: dict) -> str:
    """Causes, counts, top services/methods/principals and the suggested fix, as plain text."""
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
    head = f"{'cause':<24} {'denials':>7} {'share':>6} {'conf':>5}  top services / methods / principals"
    lines += [head, "-" * len(head)]
    for cause, n, share, conf, fix in rows:
        lines.append(f"{cause:<24} {n:>7} {share:>6.1%} {conf:>5.2f}  services:   {_top(con, cause, 'service')}")
        lines.append(f"{'':<47}methods:    {_top(con, cause, 'method')}")
        lines.append(f"{'':<47}principals: {_top(con, cause, 'principal')}")
        lines.append(f"{'':<47}fix:        {fix}")
    return "\n".join(lines)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


# Bucket widths for "denials over time", smallest first: the first giving at most MAX_BUCKETS buckets is used.
BUCKET_WIDTHS_S = (1, 5, 10, 30, 60, 300, 600, 1800, 3600, 6 * 3600, 86400, 7 * 86400)
MAX_BUCKETS = 60
_UNITS = ((86400, "d"), (3600, "h"), (60, "min"), (1, "s"))


def time_buckets(seconds: list[float] | pd.Series) -> tuple[float, list[int]]:
    """(bucket width in seconds, bucket index of each instant counted from the first). The width follows the data's
    time span, so a burst in one second and a week of traffic both give a few dozen bars at most."""
    values = pd.Series(seconds, dtype="float64")
    first, span = values.min(), values.max() - values.min()
    width = next((w for w in BUCKET_WIDTHS_S if span / w < MAX_BUCKETS), None)
    if width is None:  # longer than MAX_BUCKETS weeks: widen evenly
        width = span / (MAX_BUCKETS - 1)
    return float(width), [int(i) for i in ((values - first) // width)]


def draw_denials_over_time(ax, df: pd.DataFrame) -> int:
    """Stacked bars of denials per bucket and cause on plain numeric axes (no date locators: their tick placement
    took minutes on a single-second burst); returns the number of buckets."""
    seconds = df["time"].astype("int64") / 1e9 if pd.api.types.is_datetime64_any_dtype(df["time"]) else df["time"]
    seconds = pd.Series(seconds, dtype="float64").reset_index(drop=True)
    width, index = time_buckets(seconds)
    n = max(index) + 1
    unit_s, unit = next((u, name) for u, name in _UNITS if width >= u or u == 1)
    causes = sorted(set(df["cause"]), key=lambda c: CAUSE_ORDER.get(c, 99))
    counts = pd.crosstab(pd.Series(index, name="bucket"), df["cause"].reset_index(drop=True))
    counts = counts.reindex(index=range(n), columns=causes, fill_value=0)
    x = [i * width / unit_s for i in range(n)]
    bottom = [0] * n
    for cause in causes:
        heights = counts[cause].tolist()
        ax.bar(x, heights, width=width / unit_s, bottom=bottom, align="edge", label=cause, linewidth=0)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    start = pd.Timestamp(seconds.min(), unit="s").strftime("%Y-%m-%d %H:%M:%S")
    ax.set_xlim(0, max(x[-1] + width / unit_s, 1e-9))
    ax.set_xlabel(f"{unit} since {start} UTC (first denial)")
    ax.set_ylabel(f"denials per {width / unit_s:g} {unit}")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)  # beside the bars
    return n


def plot_denials_over_time(con: duckdb.DuckDBPyConnection) -> str:
    df = con.execute("SELECT epoch_ns(time) / 1e9 AS time, cause FROM attributions").df()
    fig, ax = plt.subplots(figsize=(8, 3.2))
    if df.empty:
        _empty(ax, "no denials")
    else:
        draw_denials_over_time(ax, df)
    ax.set_title("Denials over time by cause")
    return _png(fig)


def plot_offsets(con: duckdb.DuckDBPyConnection) -> str:
    """Offset of each host (clock domain) against the reference, with its bound: one bar per host when there is one
    time window, else a line per host over windows on numeric axes (a lone window under date locators spans years)."""
    df = con.execute("SELECT domain, reference, window_start, window_end, offset_s, error_s FROM clock_offsets "
                     "ORDER BY domain, window_start").df()
    fig, ax = plt.subplots(figsize=(8, 3.2))
    if df.empty:
        _empty(ax, "no client/server pairs across hosts")
    elif df["window_start"].nunique() == 1:
        df = df.sort_values("offset_s", ignore_index=True)
        y = list(range(len(df)))
        ax.barh(y, df["offset_s"] * 1e3, xerr=df["error_s"] * 1e3, capsize=3, color="#4c72b0")
        ax.set_yticks(y, df["domain"], fontsize=7)
        for yi, off, err in zip(y, df["offset_s"], df["error_s"], strict=True):
            ax.annotate(f"{off * 1e3:+.1f} ± {err * 1e3:.1f} ms", (0, yi), xytext=(4, 0), textcoords="offset points",
                        va="center", fontsize=7)
        ax.axvline(0, color="black", lw=0.6)
        ax.set_xlabel(f"offset vs {df['reference'].mode().iat[0]} (ms; positive = ahead)")
    else:
        first = df["window_start"].min()
        for domain, g in df.groupby("domain"):
            mid = (g["window_start"] + (g["window_end"] - g["window_start"]) / 2 - first).dt.total_seconds() / 60
            ax.errorbar(mid, g["offset_s"] * 1e3, yerr=g["error_s"] * 1e3, marker="o", capsize=3, label=domain)
        ax.set_xlabel(f"minutes since {first:%Y-%m-%d %H:%M} UTC")
        ax.set_ylabel(f"offset vs {df['reference'].mode().iat[0]} (ms)")
        ax.legend(fontsize=7)
    ax.set_title("Clock offset per host, with its error bound")
    return _png(fig)


TTL_BINS = 40


def plot_ttl(con: duckdb.DuckDBPyConnection) -> str:
    """Histograms of jit.token.ttl_s per side, allowed and denied stacked: counted in SQL over every span (no
    sample, and millions of spans never reach Python), TTL_BINS equal bins between each side's min and max."""
    df = con.execute(f"""
        WITH t AS (
            SELECT kind, jit_token_ttl_s AS ttl, coalesce(grpc_status IN (7, 16), false) AS denied FROM rpc_spans
            WHERE jit_token_ttl_s IS NOT NULL AND isfinite(jit_token_ttl_s) AND kind IN ('CLIENT', 'SERVER')
        ),
        r AS (SELECT kind, min(ttl) AS lo, max(ttl) AS hi FROM t GROUP BY kind)
        SELECT t.kind, r.lo, r.hi, t.denied,
               least(floor((t.ttl - r.lo) / nullif(r.hi - r.lo, 0) * {TTL_BINS}), {TTL_BINS} - 1)::INTEGER AS bin,
               count(*) AS n
        FROM t JOIN r USING (kind)
        GROUP BY ALL
    """).df()
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), sharey=False)
    sides = ((axes[0], "CLIENT", "at send (client clock)"), (axes[1], "SERVER", "at check (server clock)"))
    for ax, kind, label in sides:
        sub = df[df["kind"] == kind]
        if sub.empty:
            _empty(ax, "no jit.token.ttl_s")
        else:
            lo, hi = float(sub["lo"].iat[0]), float(sub["hi"].iat[0])
            width = (hi - lo) / TTL_BINS if hi > lo else 1.0
            bottom = [0.0] * TTL_BINS
            for denied, name, color in ((False, "allowed", "#7fa7d9"), (True, "denied", "#d9534f")):
                counts = [0.0] * TTL_BINS
                part = sub[sub["denied"] == denied]
                for b, n in zip(part["bin"].fillna(0), part["n"], strict=True):
                    counts[int(b)] += float(n)
                ax.bar([lo + i * width for i in range(TTL_BINS)], counts, width=width, bottom=bottom, align="edge",
                       label=name, color=color)
                bottom = [x + c for x, c in zip(bottom, counts, strict=True)]
            ax.axvline(0, color="black", linewidth=0.8)
            ax.legend(fontsize=7)
        ax.set_title(f"token ttl {label}", fontsize=9)
        ax.set_xlabel("seconds left")
    return _png(fig)


def plot_offenders(con: duckdb.DuckDBPyConnection) -> str:
    df = con.execute(
        "SELECT cause, dimension, value, denials FROM top_offenders WHERE rank <= 3 AND dimension IN "
        "('service', 'principal') ORDER BY cause, dimension, rank"
    ).df()
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.25 * len(df) + 1)))
    if df.empty:
        _empty(ax, "no denials")
    else:
        labels = [f"{c} · {d}: {v}" for c, d, v in zip(df["cause"], df["dimension"], df["value"], strict=True)]
        ax.barh(range(len(df)), df["denials"], color="#d9534f")
        ax.set_yticks(range(len(df)), labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("denials")
    ax.set_title("Top offenders per cause")
    return _png(fig)


def _table(df: pd.DataFrame) -> str:
    if df.empty:
        return "<p><em>none</em></p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape('' if pd.isna(v) else str(v))}</td>" for v in row) + "</tr>"
        for row in df.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def logs_by_cause(con: duckdb.DuckDBPyConnection, per_cause: int = 10) -> str:
    """Under each cause, the log lines of its first denials that have any (the lines are already bounded and cut
    by the SQL; the loaders redacted bearer tokens). A cause decided from logs shows the line that decided it."""
    rows = con.execute(
        """SELECT cause, time, trace_id, rule, CAST(json_extract(evidence, '$.logs') AS VARCHAR[]) AS lines,
                  json_extract_string(evidence, '$.log_line') AS decisive
           FROM (SELECT *, row_number() OVER (PARTITION BY cause ORDER BY time, trace_id) AS n FROM attributions
                 WHERE json_extract(evidence, '$.logs') IS NOT NULL)
           WHERE n <= ? ORDER BY cause, time, trace_id""", [per_cause]).fetchall()
    if not rows:
        return "<p><em>no log records joined to any denial</em></p>"
    parts: list[str] = []
    for cause in sorted({r[0] for r in rows}, key=lambda c: CAUSE_ORDER.get(c, 99)):
        parts.append(f'<h3 id="logs-{html.escape(cause)}">{html.escape(cause)}</h3>')
        for _, when, trace_id, rule, lines, decisive in (r for r in rows if r[0] == cause):
            head = f"{when} · trace {trace_id} · rule {rule}"
            body = "\n".join(("» " if line == decisive else "  ") + line for line in lines or [])
            parts.append(f'<div class="logs"><div>{html.escape(head)}</div><pre>{html.escape(body)}</pre></div>')
    return "".join(parts)


def write_html(con: duckdb.DuckDBPyConnection, path: Path, summary: dict, *, max_rows: int = 500) -> None:
    """A self-contained report.html: summary, the four plots, the cause table and the first denials."""
    plots = [
        ("denials-over-time", "Denials over time", plot_denials_over_time(con)),
        ("clock-offsets", "Clock offsets", plot_offsets(con)),
        ("token-ttl", "Token ttl at send and at check", plot_ttl(con)),
        ("top-offenders", "Top offenders", plot_offenders(con)),
    ]
    causes = con.execute("SELECT cause, denials, round(share * 100, 1) AS percent, round(mean_confidence, 2) "
                         "AS confidence, fix FROM cause_summary").df()
    offsets = con.execute("SELECT domain, reference, window_start, window_end, round(offset_s * 1e3, 3) AS offset_ms, "
                          "round(error_s * 1e3, 3) AS error_ms, samples FROM clock_offsets ORDER BY domain, "
                          "window_start LIMIT 200").df()
    rows = con.execute(f"SELECT time, trace_id, service, method, principal, status_code, cause, rule, confidence, "
                       f"evidence, fix FROM attributions ORDER BY time LIMIT {int(max_rows)}").df()
    figures = "".join(
        f'<figure id="{pid}"><img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(title)}</figcaption></figure>"
        for pid, title, data in plots
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>jitrace report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 12px; margin-bottom: 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 3px 6px; text-align: left; vertical-align: top; }}
td {{ max-width: 40em; overflow-wrap: anywhere; }}
figure {{ display: inline-block; margin: 0.5em; }}
figure img {{ max-width: 100%; }}
.logs pre {{ font-size: 11px; background: #f6f6f6; padding: 4px; margin: 2px 0 10px; white-space: pre-wrap; }}
</style></head><body>
<h1>Why were these calls denied?</h1>
<p id="summary">{summary['spans']} spans, {summary['logs']} logs, <strong>{summary['denials']} denials</strong>,
{summary['bad_records']} bad records. Clock reference: {html.escape(str(summary.get('clock_reference')))}.</p>
<h2>Causes</h2>{_table(causes)}
<h2>Plots</h2>{figures}
<h2 id="logs">Log lines under each cause</h2>
<p>Time (the logging host's clock, UTC), service, severity, message; » marks the line a log pattern decided by.</p>
{logs_by_cause(con)}
<h2>Clock offsets</h2>{_table(offsets)}
<h2>Denials (first {int(max_rows)})</h2>{_table(rows)}
<script>
// lets a headless browser (and a test) see that every plot decoded: <body data-plots-loaded="N">
window.addEventListener("load", () => {{
  document.body.dataset.plotsLoaded = [...document.images].filter(i => i.complete && i.naturalWidth > 0).length;
}});
</script>
<script type="application/json" id="summary-json">{html.escape(json.dumps(summary))}</script>
</body></html>
"""
    Path(path).write_text(page)
