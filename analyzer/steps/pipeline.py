"""The declared pipeline: queries/steps.toml read into steps, and the statements that make each step's object.

The manifest says what each step reads, what it makes and how that is stored; the SQL files hold only their query.
So how a step is stored (a view, a table, a TEMP table that becomes a plain table past memory) is decided here from
the declaration, never by rewriting SQL text.
"""

from __future__ import annotations

import functools
import importlib
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import duckdb

INPUTS = ("spans", "logs", "log_patterns")  # what the loader and the session make before the first step
STORED = ("view", "table", "temp")


@dataclass(frozen=True)
class Seed:
    name: str
    csv: str
    columns: dict[str, str]

    def path(self) -> Path:
        return _folder() / self.csv


@dataclass(frozen=True)
class Step:
    name: str
    reads: tuple[str, ...]
    stored: str
    sql: str | None = None
    python: str | None = None
    compression: str | None = None

    def query(self) -> str:
        """The step's query, without a trailing semicolon (it is wrapped in a CREATE statement)."""
        assert self.sql is not None, self.name
        return (_folder() / self.sql).read_text().rstrip().removesuffix(";")

    def function(self) -> Callable[..., object]:
        """The step's function: ``f(con)`` makes the object; with ``sql`` too, ``f(con, kind)`` makes it as
        ``kind`` (``kind()``) holding the query's rows."""
        assert self.python is not None, self.name
        module, _, name = self.python.partition(":")
        return getattr(importlib.import_module(module), name)

    def kind(self, *, temp_ok: bool) -> str:
        """What the object is made as: VIEW, TABLE or TEMP TABLE (a "temp" step is a plain table when TEMP tables
        would not fit)."""
        return {"view": "VIEW", "table": "TABLE", "temp": "TEMP TABLE" if temp_ok else "TABLE"}[self.stored]

    def create(self, *, temp_ok: bool) -> str:
        """The statement that makes the object from its query."""
        return f"CREATE OR REPLACE {self.kind(temp_ok=temp_ok)} {self.name} AS\n{self.query()}"

    def keeping_view(self) -> str:
        """A "temp" step's view in the database file: the same query, computed when read."""
        return f"CREATE OR REPLACE VIEW main.{self.name} AS\n{self.query()}"


def _folder() -> Path:
    return Path(str(resources.files("jitrace.queries")))


@functools.cache
def manifest() -> tuple[tuple[Seed, ...], tuple[Step, ...]]:
    """The seeds and the steps of queries/steps.toml, checked: every step reads only inputs, seeds and earlier
    steps, and is stored in a known way."""
    data = tomllib.loads((_folder() / "steps.toml").read_text())
    seeds = tuple(Seed(s["name"], s["csv"], dict(s["columns"])) for s in data.get("seed", []))
    steps = tuple(Step(s["name"], tuple(s["reads"]), s["stored"], s.get("sql"), s.get("python"),
                       s.get("compression")) for s in data["step"])
    known = set(INPUTS) | {s.name for s in seeds}
    for step in steps:
        if (step.sql is None and step.python is None) or step.stored not in STORED:
            raise ValueError(f"queries/steps.toml: step {step.name}: sql or python, stored in {STORED}")
        unknown = [name for name in step.reads if name not in known]
        if unknown:
            raise ValueError(f"queries/steps.toml: step {step.name} reads {unknown[0]}, made by no earlier step")
        known.add(step.name)
    return seeds, steps


def steps() -> tuple[Step, ...]:
    return manifest()[1]


def macros() -> str:
    return (_folder() / "macros.sql").read_text()


def load_seeds(con: duckdb.DuckDBPyConnection) -> None:
    """Each seed as a table of its declared columns (the CSV's header must name them, in order)."""
    for seed in manifest()[0]:
        columns = "{" + ", ".join(f"'{k}': '{v}'" for k, v in seed.columns.items()) + "}"
        con.execute(f"CREATE OR REPLACE TABLE {seed.name} AS FROM read_csv(?, header = true, columns = {columns})",
                    [str(seed.path())])
