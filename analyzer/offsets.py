"""Solve the clock-offset graph: ``clock_edges`` (one estimate per pair of hosts and window) -> ``clock_offsets``.

SQL computes the per-span work (pairs, samples, the lowest-delay filter, intersected bounds); what is left is a
small table, one row per pair of clock domains and time window, and a weighted least-squares problem per window:
each edge says ``x[server] - x[client] = offset`` with weight ``1 / error**2``, and the reference clock is fixed
at 0. The reference is the issuer's domain (the host of the ``jit.issue`` spans), because token and grant times are
in the issuer's clock. A group of hosts with no path to the issuer is solved relative to the mean of its own
clocks (``reference = 'consensus'``), which attribution treats as weaker evidence.
"""

from __future__ import annotations

import importlib
import threading
from collections import defaultdict
from itertools import groupby
from typing import TYPE_CHECKING

import duckdb

if TYPE_CHECKING:
    import numpy as np

CONSENSUS = "consensus"
MIN_ERROR_S = 1e-6  # a perfectly consistent edge still gets a finite weight

COLUMNS = ["domain", "reference", "window_start", "window_end", "offset_s", "error_s", "samples"]
# clock_edges' columns the solver reads, in this order (the table is small: one row per pair of hosts and window)
EDGE_COLUMNS = ("window_start", "window_end", "client_domain", "server_domain", "offset_s", "error_s", "samples")
Edge = tuple[float, float, str, str, float, float, int]


def prefetch_numpy() -> None:
    """Start importing numpy (the solver's, 0.04 s of CPU) on another thread: it then loads while DuckDB reads and
    pairs the spans, with the GIL released, instead of inside the run. The solver's own import waits for it."""
    threading.Thread(target=importlib.import_module, args=("numpy",), daemon=True).start()


def issuer_domain(con: duckdb.DuckDBPyConnection) -> str | None:
    """The clock domain that issued most tokens (``jit.issue`` spans), or None when the issuer is not traced."""
    row = con.execute(
        "SELECT domain FROM rpc_spans WHERE name = 'jit.issue' GROUP BY domain ORDER BY count(*) DESC, domain LIMIT 1"
    ).fetchone()
    return row[0] if row else None


def _components(nodes: list[str], edges: list[Edge]) -> list[list[str]]:
    parent = {n: n for n in nodes}

    def find(n: str) -> str:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for _, _, a, b, *_ in edges:
        parent[find(a)] = find(b)
    groups: dict[str, list[str]] = {}
    for n in nodes:
        groups.setdefault(find(n), []).append(n)
    return list(groups.values())


def _solve_component(nodes: list[str], edges: list[Edge], anchor: str) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least squares with x[anchor] = 0; returns offsets and their propagated standard errors."""
    import numpy as np
    index = {n: i for i, n in enumerate(nodes)}
    free = [n for n in nodes if n != anchor]
    col = {n: i for i, n in enumerate(free)}
    a = np.zeros((len(edges), len(free)))
    for row, (_, _, c, s, *_) in enumerate(edges):
        if s in col:
            a[row, col[s]] += 1.0
        if c in col:
            a[row, col[c]] -= 1.0
    y = np.array([e[4] for e in edges], dtype=float)
    w = 1.0 / np.maximum(np.array([e[5] for e in edges], dtype=float), MIN_ERROR_S)
    x_free, *_ = np.linalg.lstsq(a * w[:, None], y * w, rcond=None)
    cov = np.linalg.pinv((a * w[:, None]).T @ (a * w[:, None]))
    x = np.zeros(len(nodes))
    err = np.zeros(len(nodes))
    for n, i in col.items():
        x[index[n]] = x_free[i]
        err[index[n]] = float(np.sqrt(max(cov[i, i], 0.0)))
    return x, err


def solve(edges: list[Edge], reference: str | None) -> list[tuple]:
    """Offsets of every domain in every window, relative to ``reference`` where connected to it: rows of COLUMNS,
    window bounds in seconds. ``edges`` are clock_edges rows (EDGE_COLUMNS) sorted by window.

    A group of hosts that has no path to the reference inside one window (say the issuer was not called in those
    five minutes) is tied to it through the nearest window where one of its hosts was: offsets drift slowly, so
    that is better evidence than the group's own mean. Only a group never connected falls back to the consensus.
    """
    import numpy as np
    solved: list[tuple] = []  # (domain, reference, start, end, offset, error, samples)
    pending: list[tuple] = []  # (start, end, group, x, err, samples) not yet tied to the reference
    for (start, end), rows in groupby(edges, key=lambda e: (e[0], e[1])):
        window = list(rows)
        nodes = sorted({e[2] for e in window} | {e[3] for e in window})
        samples: dict[str, int] = defaultdict(int)  # a host's samples: those of every edge it is an end of
        for _, _, c, s, _, _, k in window:
            samples[c] += k
            samples[s] += k
        for group in _components(nodes, window):
            members = set(group)
            sub = [e for e in window if e[2] in members]
            anchored = reference in members
            x, err = _solve_component(group, sub, reference if anchored else group[0])
            counts = [int(samples[n]) for n in group]
            if anchored:
                solved += [(n, reference, start, end, xi, ei, k) for n, xi, ei, k in zip(group, x, err, counts,
                                                                                          strict=True)]
            else:
                pending.append((start, end, group, x, err, counts))
    known: dict[str, list[tuple[float, float, float]]] = {}
    for n, _, start, _, xi, ei, _ in solved:
        known.setdefault(n, []).append((start, xi, ei))
    for start, end, group, x, err, counts in pending:
        ties = [(abs(ws - start), i, xi, ei) for i, n in enumerate(group) for ws, xi, ei in known.get(n, [])]
        if ties:
            _, i, xi, ei = min(ties)
            shifted, errs, ref = x - x[i] + xi, np.sqrt(err**2 + err[i] ** 2 + ei**2), reference
        else:
            shifted, errs, ref = x - x.mean(), err, CONSENSUS  # relative to the mean of the group's clocks
        solved += [(n, ref, start, end, xi, ei, k) for n, xi, ei, k in zip(group, shifted, errs, counts, strict=True)]
    return [(n, ref, float(ws), float(we), float(x), float(e), int(k)) for n, ref, ws, we, x, e, k in solved]


def write_offsets(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    """Read ``clock_edges``, solve, and (re)create the ``clock_offsets`` table; returns the solved rows."""
    # a fixed row order: the solver's sums then add in the same order on every run (bit-identical re-runs)
    edges = con.execute(f"SELECT {', '.join(EDGE_COLUMNS)} FROM clock_edges "
                        "ORDER BY window_start, window_end, client_domain, server_domain").fetchall()
    offsets = solve(edges, issuer_domain(con))
    con.execute(
        "CREATE OR REPLACE TABLE clock_offsets (domain VARCHAR, reference VARCHAR, window_start TIMESTAMP, "
        "window_end TIMESTAMP, offset_s DOUBLE, error_s DOUBLE, samples BIGINT)"
    )
    if not offsets:
        return offsets
    # the columns as list parameters, zipped back by unnest (a Python object read by name would make DuckDB import
    # pandas to check its type: 0.25 s)
    columns = [list(c) for c in zip(*offsets, strict=True)]
    con.execute(
        "INSERT INTO clock_offsets SELECT domain, reference, make_timestamp((window_start * 1e6)::BIGINT), "
        "make_timestamp((window_end * 1e6)::BIGINT), offset_s, error_s, samples FROM (SELECT "
        + ", ".join(f"unnest(${i + 1}) AS {name}" for i, name in enumerate(COLUMNS))
        + ") ORDER BY domain, window_start",
        columns,
    )
    return offsets
