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


def plot_denials_over_time(con: duckdb.DuckDBPyConnection) -> str:
    df = con.execute("SELECT time, cause FROM attributions").df()
    fig, ax = plt.subplots(figsize=(8, 3.2))
    if df.empty:
        _empty(ax, "no denials")
    else:
        span = (df["time"].max() - df["time"].min()).total_seconds()
        freq = "1s" if span < 120 else "1min" if span < 7200 else "1h" if span < 3 * 86400 else "1D"
        counts = df.groupby([pd.Grouper(key="time", freq=freq), "cause"]).size().unstack(fill_value=0)
        counts = counts[sorted(counts.columns, key=lambda c: CAUSE_ORDER.get(c, 99))]
        counts.plot(ax=ax, kind="area", stacked=True, linewidth=0)
        ax.set_ylabel(f"denials per {freq}")
        ax.legend(fontsize=7, loc="upper left")
    ax.set_title("Denials over time by cause")
    return _png(fig)


def plot_offsets(con: duckdb.DuckDBPyConnection) -> str:
    df = con.execute("SELECT domain, reference, window_start, window_end, offset_s, error_s FROM clock_offsets").df()
    fig, ax = plt.subplots(figsize=(8, 3.2))
    if df.empty:
        _empty(ax, "no client/server pairs across hosts")
    else:
        for domain, g in df.groupby("domain"):
            mid = g["window_start"] + (g["window_end"] - g["window_start"]) / 2
            ax.errorbar(mid, g["offset_s"] * 1e3, yerr=g["error_s"] * 1e3, marker="o", capsize=3, label=domain)
        ax.set_ylabel(f"offset vs {df['reference'].mode().iat[0]} (ms)")
        ax.legend(fontsize=7)
    ax.set_title("Clock offset per host, with its error bound")
    return _png(fig)


def plot_ttl(con: duckdb.DuckDBPyConnection) -> str:
    df = con.execute(
        "SELECT kind, jit_token_ttl_s AS ttl, grpc_status IN (7, 16) AS denied FROM rpc_spans "
        "WHERE jit_token_ttl_s IS NOT NULL AND kind IN ('CLIENT', 'SERVER') USING SAMPLE 200000 ROWS"
    ).df()
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), sharey=False)
    sides = ((axes[0], "CLIENT", "at send (client clock)"), (axes[1], "SERVER", "at check (server clock)"))
    for ax, kind, label in sides:
        sub = df[df["kind"] == kind]
        if sub.empty:
            _empty(ax, "no jit.token.ttl_s")
        else:
            ax.hist([sub.loc[~sub["denied"], "ttl"], sub.loc[sub["denied"], "ttl"]], bins=40, stacked=True,
                    label=["allowed", "denied"], color=["#7fa7d9", "#d9534f"])
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
</style></head><body>
<h1>Why were these calls denied?</h1>
<p id="summary">{summary['spans']} spans, {summary['logs']} logs, <strong>{summary['denials']} denials</strong>,
{summary['bad_records']} bad records. Clock reference: {html.escape(str(summary.get('clock_reference')))}.</p>
<h2>Causes</h2>{_table(causes)}
<h2>Plots</h2>{figures}
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
