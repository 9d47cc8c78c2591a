"""Open an analyze output folder from Python (the notebooks' way in): every table as a pandas DataFrame.

    from jitrace.analyzer.api import open_output
    out = open_output("./jitrace-demo")
    out.attributions[out.attributions.cause == "clock_drift"]
    out.sql("SELECT cause, count(*) FROM attributions GROUP BY cause")
"""

from __future__ import annotations

import json
import os
from functools import cached_property
from pathlib import Path

import duckdb
import pandas as pd

from jitrace.analyzer import errors, spans_view


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
