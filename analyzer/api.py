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

from jitrace.analyzer import errors


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
        """A read-only connection to jitrace.duckdb (tables spans, logs, rpc_spans, pairs, denials, ...)."""
        return duckdb.connect(str(self.folder / "jitrace.duckdb"), read_only=True)

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


def open_output(out_dir: str | Path | None = None) -> Output:
    """The output folder ``out_dir``, else $JITRACE_OUT, else ./jitrace-demo."""
    return Output(out_dir or os.environ.get("JITRACE_OUT", "./jitrace-demo"))
