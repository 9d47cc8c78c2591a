"""The notebooks' API: open an analyze output folder as pandas DataFrames, and the investigations the notebooks share.

    from jitrace.analyzer import notebook as nb
    out = nb.open_output("./jitrace-demo")
    out.attributions[out.attributions.cause == "clock_drift"]
    out.sql("SELECT cause, count(*) FROM attributions GROUP BY cause")
    nb.denials_by(out, "service", "cause")

Each investigation answers one question about an output and returns a DataFrame, so a notebook cell is one call
plus a plot, and the logic is tested (tests/analyzer/test_investigate.py) rather than copied between cells.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from functools import cached_property
from pathlib import Path

import duckdb
import pandas as pd

from jitrace.analyzer import errors
from jitrace.analyzer.steps import spans_view


class Output:
    """One output folder of ``jitrace analyze``. Tables are read lazily; the database is opened read-only."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if not (self.folder / "summary.json").is_file():
            raise errors.UserError(f"{self.folder}: not a jitrace analyze output folder (no summary.json)")

    @cached_property
    def summary(self) -> dict:
        return json.loads((self.folder / "summary.json").read_text())

    @cached_property
    def attributions(self) -> pd.DataFrame:
        """One row per denied call; ``evidence`` parsed into dicts."""
        df = pd.read_parquet(self.folder / "attributions.parquet")
        df["evidence"] = df["evidence"].map(json.loads)
        return df

    @cached_property
    def clock_offsets(self) -> pd.DataFrame:
        return pd.read_parquet(self.folder / "clock_offsets.parquet")

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A read-only connection to jitrace.duckdb (tables spans, logs, rpc_spans, pairs, denials, ...).

        The file may come from anyone, and its views and macros run when read: the connection reaches no file but
        the database and the Parquet files its spans are read from, and no network; its settings are locked; and
        ``spans`` is jitrace's own view, not whatever the file stores under that name."""
        con = duckdb.connect(str(self.folder / "jitrace.duckdb"), read_only=True)
        try:
            con.execute("SET allowed_paths = ?", [_span_files(con)])
            con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
            spans_view.define(con, temp=True)
        except duckdb.Error as exc:
            con.close()
            raise errors.UserError(f"{self.folder / 'jitrace.duckdb'}: not a database jitrace wrote "
                                   f"({str(exc).splitlines()[0]})") from None
        return con

    def sql(self, query: str, params: list | None = None) -> pd.DataFrame:
        with self.connect() as con:
            return con.execute(query, params or []).df()

    def table(self, name: str) -> pd.DataFrame:
        with self.connect() as con:
            return con.table(name).df()

    @property
    def spans(self) -> pd.DataFrame:
        return self.table("spans")

    @property
    def logs(self) -> pd.DataFrame:
        return self.table("logs")

    @property
    def denials(self) -> pd.DataFrame:
        return self.table("denials")

    @property
    def cause_summary(self) -> pd.DataFrame:
        return self.table("cause_summary")


def _span_files(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The Parquet files the database's spans are read from: regular files named .parquet, nothing else."""
    listed = con.execute(f"SELECT path FROM {spans_view.FILES_TABLE}").fetchall()
    return [path for (path,) in listed if isinstance(path, str) and path.endswith(".parquet")
            and not Path(path).is_symlink() and Path(path).is_file()]


def open_output(out_dir: str | Path | None = None) -> Output:
    """The output folder ``out_dir``, else $JITRACE_OUT, else ./jitrace-demo."""
    return Output(out_dir or os.environ.get("JITRACE_OUT", "./jitrace-demo"))


# ---------------------------------------------------------------- the investigations: one question a call

LIFETIME_CAUSES = ("token_expired", "token_expired_in_flight", "middleware_latency")


def denials_by(out: Output, *dims: str) -> pd.DataFrame:
    """Denial counts grouped by attribution columns (e.g. ``"cause"``, ``"service"``), largest first."""
    dims = dims or ("cause",)
    df = out.attributions
    if df.empty:
        return pd.DataFrame(columns=[*dims, "denials"])
    return df.groupby(list(dims), dropna=False).size().rename("denials").reset_index().sort_values(
        "denials", ascending=False, ignore_index=True)


def denials_over_time(out: Output, freq: str = "1s") -> pd.DataFrame:
    """Denials per time bucket (rows) and cause (columns)."""
    df = out.attributions
    if df.empty:
        return pd.DataFrame()
    times = pd.to_datetime(df["time"])
    return df.assign(bucket=times.dt.floor(freq)).pivot_table(
        index="bucket", columns="cause", values="trace_id", aggfunc="count", fill_value=0)


def evidence_table(out: Output, cause: str | None = None) -> pd.DataFrame:
    """Attributions with their evidence spread into columns (one column per number the rule looked at)."""
    df = out.attributions
    if cause is not None:
        df = df[df["cause"] == cause]
    evidence = pd.json_normalize(df["evidence"].tolist()).set_index(df.index)
    return pd.concat([df.drop(columns=["evidence"]), evidence.add_prefix("ev.")], axis=1)


def trace_spans(out: Output, trace_id: str) -> pd.DataFrame:
    """Every span of one trace, in start order, with the jit facts an investigator reads first."""
    return out.sql(
        """
        SELECT kind, service, domain, name, grpc_status,
               (start_ns - min(start_ns) OVER ()) / 1e6 AS start_ms, (end_ns - start_ns) / 1e6 AS duration_ms,
               jit_token_verdict AS verdict, jit_token_ttl_s AS ttl_s, jit_auth_wait_s AS wait_s,
               jit_policy_decision AS decision, jit_policy_version AS policy_version, jit_denial_reason AS reason,
               span_id, parent_span_id
        FROM rpc_spans WHERE trace_id = ? ORDER BY start_ns
        """,
        [trace_id],
    )


def clock_offsets(out: Output) -> pd.DataFrame:
    """Offset of each clock domain per time window, with its bound (``offset_s ± error_s``), in milliseconds too."""
    df = out.clock_offsets.sort_values(["domain", "window_start"], ignore_index=True)
    return df.assign(offset_ms=df["offset_s"] * 1e3, error_ms=df["error_s"] * 1e3)


def drifting_hosts(out: Output, threshold_s: float = 0.0) -> pd.DataFrame:
    """Domains whose offset exceeds ``threshold_s`` beyond its error bound in some window, worst first."""
    df = clock_offsets(out)
    df = df[(df["offset_s"].abs() - df["error_s"]) > threshold_s]
    if df.empty:
        return pd.DataFrame(columns=["domain", "worst_offset_s", "since", "windows"])
    return (df.assign(abs_offset=df["offset_s"].abs())
              .groupby("domain")
              .agg(worst_offset_s=("offset_s", lambda s: s.loc[s.abs().idxmax()]), since=("window_start", "min"),
                   windows=("window_start", "count"))
              .reset_index().sort_values("worst_offset_s", key=abs, ascending=False, ignore_index=True))


def flipped_by_correction(out: Output) -> pd.DataFrame:
    """The denials whose decision flips when clocks are corrected to true time (cause ``clock_drift``)."""
    return evidence_table(out, "clock_drift")


def ttl_at_send_and_check(out: Output) -> pd.DataFrame:
    """Token ttl on every gRPC call: at send (client spans) and at the check (server spans), and whether denied."""
    return out.sql(
        """
        SELECT CASE kind WHEN 'CLIENT' THEN 'at send' ELSE 'at check' END AS seen, service, jit_token_ttl_s AS ttl_s,
               denied, trace_id
        FROM rpc_spans
        WHERE kind IN ('CLIENT', 'SERVER') AND jit_token_ttl_s IS NOT NULL AND name <> 'jit.issue'
        """
    )


def refresh_what_if(out: Output, thresholds_s: Iterable[float]) -> pd.DataFrame:
    """What a proactive refresh threshold would have done, per threshold T (seconds before expiry).

    A client that refreshes when the ttl it sees is below T would have sent a fresh token on each call whose ttl at
    send was below T: ``prevented`` counts the lifetime denials (token expired before or during the call) among those,
    ``refreshes`` counts every call that would have refreshed (the cost: issuer load).
    """
    calls = out.sql(
        "SELECT trace_id, jit_token_ttl_s AS ttl_s FROM rpc_spans "
        "WHERE kind = 'CLIENT' AND jit_token_ttl_s IS NOT NULL"
    )
    attributions = out.attributions
    lifetime = attributions[attributions["cause"].isin(LIFETIME_CAUSES)][["trace_id"]]
    denied = lifetime.merge(calls, on="trace_id", how="left")
    rows = []
    for t in thresholds_s:
        rows.append({
            "threshold_s": float(t),
            "lifetime_denials": len(denied),
            "prevented": int((denied["ttl_s"] < t).sum()),
            "refreshes": int((calls["ttl_s"] < t).sum()),
            "calls": len(calls),
        })
    return pd.DataFrame(rows)


def policy_denials(out: Output) -> pd.DataFrame:
    """Policy denials by policy version and rule, with the permission required and the roles granted."""
    return out.sql(
        """
        SELECT policy_version, policy_rule, policy_required AS required,
               array_to_string(policy_granted, ',') AS granted, count(*) AS denials
        FROM denials WHERE policy_decision = 'deny'
        GROUP BY ALL ORDER BY denials DESC
        """
    )


def same_request_two_revisions(out: Output) -> pd.DataFrame:
    """Requests (principal, method) denied under one policy version and allowed under another."""
    return out.sql(
        """
        SELECT principal, method, policy_version AS denied_under,
               array_to_string(allowed_versions, ',') AS allowed_under, count(*) AS denials
        FROM denials WHERE len(allowed_versions) > 0
        GROUP BY ALL ORDER BY denials DESC
        """
    )


def top(df: pd.DataFrame, column: str, n: int = 10) -> Sequence[str]:
    """The ``n`` most frequent values of a column (for drill-down pickers)."""
    return df[column].value_counts().head(n).index.tolist()
