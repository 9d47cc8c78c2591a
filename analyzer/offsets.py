"""Solve the clock-offset graph: ``clock_edges`` (one estimate per pair of hosts and window) -> ``clock_offsets``.

SQL computes the per-span work (pairs, samples, the lowest-delay filter, intersected bounds); what is left is a
small table, one row per pair of clock domains and time window, and a weighted least-squares problem per window:
each edge says ``x[server] - x[client] = offset`` with weight ``1 / error**2``, and the reference clock is fixed
at 0. The reference is the issuer's domain (the host of the ``jit.issue`` spans), because token and grant times are
in the issuer's clock. A group of hosts with no path to the issuer is solved relative to the mean of its own
clocks (``reference = 'consensus'``), which attribution treats as weaker evidence.
"""

from __future__ import annotations

import math
from collections import defaultdict
from itertools import groupby

import duckdb

CONSENSUS = "consensus"
MIN_ERROR_S = 1e-6  # a perfectly consistent edge still gets a finite weight
# Clock graphs of a few dozen hosts are solved in Python: importing numpy costs 0.07 s of CPU, a sixth of a small
# analysis. Past this many rows x unknowns² over all windows (about 45 ms of Python), numpy solves them.
PYTHON_WORK = 2_000_000

COLUMNS = ["domain", "reference", "window_start", "window_end", "offset_s", "error_s", "samples"]
# clock_edges' columns the solver reads, in this order (the table is small: one row per pair of hosts and window)
EDGE_COLUMNS = ("window_start", "window_end", "client_domain", "server_domain", "offset_s", "error_s", "samples")
Edge = tuple[float, float, str, str, float, float, int]


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


def _solve_component(nodes: list[str], edges: list[Edge], anchor: str,
                     in_python: bool) -> tuple[list[float], list[float]]:
    """Weighted least squares with x[anchor] = 0; returns offsets and their propagated standard errors. Each edge is
    a row of the weighted system: 1/error at its server's unknown, -1/error at its client's, offset/error = the
    right-hand side (the anchor's offset is known, so it has no unknown)."""
    free = {n: i for i, n in enumerate(n for n in nodes if n != anchor)}
    rows = []
    for _, _, client, server, offset, error, _ in edges:
        w = 1.0 / max(error, MIN_ERROR_S)
        coefficients = {free[n]: sign * w for n, sign in ((server, 1.0), (client, -1.0)) if n in free}
        rows.append((coefficients, offset * w))
    x_free, variances = _least_squares(rows, len(free), in_python)
    x = [x_free[free[n]] if n in free else 0.0 for n in nodes]
    err = [math.sqrt(max(variances[free[n]], 0.0)) if n in free else 0.0 for n in nodes]
    return x, err


def _least_squares(rows: list[tuple[dict[int, float], float]], size: int,
                   in_python: bool) -> tuple[list[float], list[float]]:
    """x minimising the sum of squared residuals of ``rows`` ({unknown: coefficient}, right-hand side), and the
    variances of x (the diagonal of (AᵀA)⁻¹). ``in_python``: by Givens rotations (QR), as accurate as numpy's
    SVD-based lstsq (the normal equations lost milliseconds when the errors spanned 1 µs to 100 ms); else numpy."""
    if not in_python:
        import numpy as np
        a = np.zeros((len(rows), size))
        for row, (coefficients, _) in enumerate(rows):
            for i, value in coefficients.items():
                a[row, i] = value
        y = np.array([rhs for _, rhs in rows], dtype=float)
        x, *_ = np.linalg.lstsq(a, y, rcond=None)
        return x.tolist(), np.diag(np.linalg.pinv(a.T @ a)).tolist()
    r = [[0.0] * size for _ in range(size)]  # upper triangular: A = QR
    z = [0.0] * size  # Qᵀy
    for coefficients, rhs in rows:
        v = [0.0] * size
        for i, value in coefficients.items():
            v[i] = value
        for i in range(size):  # rotate the row into R, one unknown at a time
            if v[i] == 0.0:
                continue
            ri = r[i]
            norm = math.hypot(ri[i], v[i])
            c, s = ri[i] / norm, v[i] / norm
            for j in range(i, size):
                ri[j], v[j] = c * ri[j] + s * v[j], c * v[j] - s * ri[j]
            z[i], rhs = c * z[i] + s * rhs, c * rhs - s * z[i]
    x = [0.0] * size
    for i in reversed(range(size)):
        x[i] = (z[i] - math.fsum(r[i][j] * x[j] for j in range(i + 1, size))) / r[i][i]
    inverse = [[0.0] * size for _ in range(size)]  # R⁻¹, upper triangular; (AᵀA)⁻¹ = R⁻¹R⁻ᵀ
    for j in range(size):
        for i in reversed(range(j + 1)):
            known = math.fsum(r[i][k] * inverse[k][j] for k in range(i + 1, j + 1))
            inverse[i][j] = ((1.0 if i == j else 0.0) - known) / r[i][i]
    return x, [math.fsum(value * value for value in row) for row in inverse]


def solve(edges: list[Edge], reference: str | None) -> list[tuple]:
    """Offsets of every domain in every window, relative to ``reference`` where connected to it: rows of COLUMNS,
    window bounds in seconds. ``edges`` are clock_edges rows (EDGE_COLUMNS) sorted by window.

    A group of hosts that has no path to the reference inside one window (say the issuer was not called in those
    five minutes) is tied to it through the nearest window where one of its hosts was: offsets drift slowly, so
    that is better evidence than the group's own mean. Only a group never connected falls back to the consensus.
    """
    solved: list[tuple] = []  # (domain, reference, start, end, offset, error, samples)
    pending: list[tuple] = []  # (start, end, group, x, err, samples) not yet tied to the reference
    windows = [(bounds, list(rows)) for bounds, rows in groupby(edges, key=lambda e: (e[0], e[1]))]
    hosts = [sorted({e[2] for e in window} | {e[3] for e in window}) for _, window in windows]
    # the rotations of every window's problem (at most rows x hosts² each) in Python, or numpy for them all
    work = sum(len(window) * len(nodes) ** 2 for (_, window), nodes in zip(windows, hosts, strict=True))
    in_python = work <= PYTHON_WORK
    for ((start, end), window), nodes in zip(windows, hosts, strict=True):
        samples: dict[str, int] = defaultdict(int)  # a host's samples: those of every edge it is an end of
        for _, _, c, s, _, _, k in window:
            samples[c] += k
            samples[s] += k
        for group in _components(nodes, window):
            members = set(group)
            sub = [e for e in window if e[2] in members]
            anchored = reference in members
            x, err = _solve_component(group, sub, reference if anchored else group[0], in_python)
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
            shifted = [v - x[i] + xi for v in x]
            errs, ref = [math.sqrt(e**2 + err[i] ** 2 + ei**2) for e in err], reference
        else:
            mean = math.fsum(x) / len(x)
            shifted, errs, ref = [v - mean for v in x], err, CONSENSUS  # relative to the mean of the group's clocks
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
