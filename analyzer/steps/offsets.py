"""The clock model: ``clock_edges`` (tightest causality constraints per pair of domains and time bucket) ->
``clock_offsets`` (each domain's offset and rate against the reference, in segments, with a bound at every instant).

Each pair of domains is fitted on its own first (the convex-hull synchronisation of traces: Duda et al.; Poirier,
Roy and Dagenais): the lines offset(t) = a + b t that satisfy every constraint of a stretch of time form a convex
polygon in (a, b), clipped by one half-plane per constraint (O'Rourke's on-line fit of a line between data ranges).
A stretch ends where the polygon becomes empty: no single line fits, the clock stepped or changed its rate (NTP), so
a new segment starts. Each segment's line is the middle of its polygon (the middle slope, then the middle
intercept at that slope), so the estimate always satisfies every constraint. Its bound assumes no line, only that
two clocks' rates differ by at most MAX_RATE: each constraint then holds near its instant, widened by that rate
per second away from it (Tile), so a rate change the line smooths over stays inside.

Each domain is then tied to the reference along the shortest path of pairs (fewest pairs, then the tightest),
adding the pairs' lines and bounds. The reference is the issuer's domain (tokens and grants are in its
clock); a group of domains with no path to it is solved relative to the median of its own clocks (``consensus``,
weaker evidence for attribution). Pairs are fitted on the clock of their first domain; going out from the
reference, each pair's times are moved to the reference's clock through its parent's model, and fitted again.

Output rows are segments: ``offset_s`` and ``lower_s``/``upper_s`` at the segment's middle, ``rate_ppm`` its slope;
at any instant t of the segment the offset is offset_s + rate_ppm * 1e-6 * (t - middle) and the bound keeps its
distances below and above it (the widest they get over the segment). ``error_s`` is the larger of those distances.
Pure Python on a few thousand rows (importing numpy would cost more than the fit).
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_right
from collections import defaultdict
from dataclasses import dataclass, field

import duckdb

CONSENSUS = "consensus"
MAX_RATE = 5e-4  # the largest rate difference of two clocks (NTP slews at most 500 ppm): bounds beyond the data
USUAL_RATE = 1e-4  # the rate difference of two clocks the fit prefers when the constraints allow more
EPS = 1e-9  # slack for constraints that hold with equality (span times are whole nanoseconds)
SPAN = 1e4  # the initial intercept range around a segment's first constraint (seconds)
MIN_WIDTH = 1e-6  # a pair's weight in the path search: its median constraint width, at least this
MAX_GRID = 200_000  # consensus: rows of the median's grid (domains x breakpoints) past which it is one constant

COLUMNS = ["domain", "reference", "window_start", "window_end", "offset_s", "error_s", "samples", "lower_s",
           "upper_s", "rate_ppm"]
EDGE_COLUMNS = ("domain_a", "domain_b", "lo_s", "t_lo_s", "hi_s", "t_hi_s", "samples")
Edge = tuple[str, str, float, float, float, float, int]


def issuer_domain(con: duckdb.DuckDBPyConnection) -> str | None:
    """The clock domain that issued most tokens (``jit.issue`` spans), or None when the issuer is not traced."""
    row = con.execute(
        "SELECT domain FROM rpc_spans WHERE name = 'jit.issue' GROUP BY domain ORDER BY count(*) DESC, domain LIMIT 1"
    ).fetchone()
    return row[0] if row else None


# ---- one pair: segments of lines between the lower and upper constraints -------------------------------------


@dataclass
class Tile:
    """One segment of a pair's model: d(t) = base + a + b (t - x0) for t in [start, end). Its bound needs no line:
    a constraint l <= d(t_j) still holds at t as l - MAX_RATE |t - t_j| (and so for the upper ones), so the truth
    is within f(t) = min_j (r_j + k |t - t_j|) of the line, r_j the line's distance to constraint j and k the drift
    room (MAX_RATE plus the line's own slope). Per side (0 below, 1 above) the tile keeps f's peak between its
    constraints and f at its first and last one, from where it grows by k outwards."""
    start: float
    end: float
    x0: float
    base: float
    a: float
    b: float
    samples: int
    peak: list[float] = field(default_factory=lambda: [0.0, 0.0])
    edge: list[tuple[float, float, float, float]] = field(default_factory=list)  # (first t, f there, last t, f)

    def line(self, t: float) -> float:
        return self.base + self.a + self.b * (t - self.x0)

    def room(self, side: int, s: float, e: float) -> float:
        """How far below (side 0) or above (1) the line the truth may be on [s, e]."""
        first, f_first, last, f_last = self.edge[side]
        k = MAX_RATE + abs(self.b)
        return max(self.peak[side], f_first + k * (first - s), f_last + k * (e - last))


def _clip(poly: list[tuple[float, float]], x: float, v: float, sign: float) -> list[tuple[float, float]] | None:
    """``poly`` cut by sign * (a + b x - v) >= 0; None when nothing is left (a degenerate rest within EPS stays)."""
    vals = [sign * (a + b * x - v) for a, b in poly]
    if min(vals) >= 0.0:
        return poly
    top = max(vals)
    if top < -EPS:
        return None
    if top <= 0.0:
        return [poly[vals.index(top)]]
    out = []
    n = len(poly)
    for k in range(n):
        p, fp = poly[k], vals[k]
        q, fq = poly[k + 1 - n], vals[k + 1 - n]
        if fp >= 0.0:
            out.append(p)
        if (fp >= 0.0) != (fq >= 0.0):
            r = fp / (fp - fq)
            out.append((p[0] + r * (q[0] - p[0]), p[1] + r * (q[1] - p[1])))
    return out


def _middle(poly: list[tuple[float, float]], xc: float) -> tuple[float, float]:
    """The line in the middle of the polygon: the middle slope (of those a clock usually has, when the constraints
    leave more: a few calls in a second must not make a rate of 500 ppm), then the middle value at xc."""
    bs = [b for _, b in poly]
    low, high = min(bs), max(bs)
    if max(low, -USUAL_RATE) <= min(high, USUAL_RATE):
        low, high = max(low, -USUAL_RATE), min(high, USUAL_RATE)
    b = (low + high) / 2
    cs = []
    n = len(poly)
    for k in range(n):
        (a1, b1), (a2, b2) = poly[k], poly[k + 1 - n]
        if b1 == b:
            cs.append(a1 + b1 * xc)
        if (b1 - b) * (b2 - b) < 0.0:
            r = (b - b1) / (b2 - b1)
            cs.append(a1 + r * (a2 - a1) + b * xc)
    if not cs:  # a degenerate polygon: its first vertex
        a1, b1 = poly[0]
        return a1, b1
    c = (min(cs) + max(cs)) / 2
    return c - b * xc, b


def _bounded(tile: Tile, points: list[tuple[float, float, float, int]]) -> Tile:
    """``tile`` with its bound's terms from its constraints (t, value, sign: +1 lower / -1 upper, samples)."""
    k = MAX_RATE + abs(tile.b)
    for side, sign in ((0, 1.0), (1, -1.0)):
        near = [(t, max(0.0, sign * (tile.line(t) - v))) for t, v, s, _ in points if s == sign]
        if not near:  # one kind only: that side has no bound but the first constraint's range
            mid = (points[0][0] + points[-1][0]) / 2
            near = [(mid, SPAN)]
        f = [r for _, r in near]
        for j in range(1, len(f)):  # f at each constraint: the lowest cone over it, from the left then the right
            f[j] = min(f[j], f[j - 1] + k * (near[j][0] - near[j - 1][0]))
        for j in range(len(f) - 2, -1, -1):
            f[j] = min(f[j], f[j + 1] + k * (near[j + 1][0] - near[j][0]))
        peak = max(f)
        for j in range(len(f) - 1):  # between two constraints the two cones meet
            peak = max(peak, min(max(f[j], f[j + 1]), (f[j] + f[j + 1] + k * (near[j + 1][0] - near[j][0])) / 2))
        tile.peak[side] = peak
        tile.edge.append((near[0][0], f[0], near[-1][0], f[-1]))
    return tile


def fit_pair(edges: list[tuple[float, float, float, float, int]]) -> list[Tile]:
    """Segments of lines for one pair from its buckets (lo, t_lo, hi, t_hi, samples), any order."""
    points: list[tuple[float, float, float, int]] = []  # (t, value, sign: +1 lower / -1 upper, samples)
    for lo, t_lo, hi, t_hi, n in edges:
        points.append((t_lo, lo, 1.0, 0))
        points.append((t_hi, hi, -1.0, n))
    points.sort()
    base = sorted(p[1] for p in points)[len(points) // 2]  # values near 0: no precision lost on large offsets
    tiles: list[Tile] = []
    i, n = 0, len(points)
    while i < n:
        x0, v0 = points[i][0], points[i][1] - base
        poly: list[tuple[float, float]] = [(v0 - SPAN, -MAX_RATE), (v0 + SPAN, -MAX_RATE), (v0 + SPAN, MAX_RATE),
                                           (v0 - SPAN, MAX_RATE)]
        j, samples = i, 0
        while j < n:
            t, v, sign, k = points[j]
            clipped = _clip(poly, t - x0, v - base, sign)
            if clipped is None:
                break
            poly, samples, j = clipped, samples + k, j + 1
        last = points[j - 1][0]
        a, b = _middle(poly, (last - x0) / 2)
        tiles.append(_bounded(Tile(x0, last, x0, base, a, b, samples), points[i:j]))
        i = j
    for left, right in zip(tiles, tiles[1:], strict=False):  # segments meet halfway between their data
        left.end = right.start = (left.end + right.start) / 2
    return tiles


# ---- domains: pieces of lines with bounds, relative to the reference --------------------------------------------


@dataclass
class Piece:
    """A domain's offset on [start, end]: offset(t) = off + rate (t - mid); the bound is [offset - below,
    offset + above] everywhere on it."""
    start: float
    end: float
    off: float
    rate: float
    below: float
    above: float
    samples: int

    @property
    def mid(self) -> float:
        return (self.start + self.end) / 2

    def at(self, t: float) -> float:
        return self.off + self.rate * (t - self.mid) if self.rate else self.off

    # as a tile of a path (_compose): its line, slope and bound, which widens beyond its ends as a tile's does
    line = at

    @property
    def b(self) -> float:
        return self.rate

    def room(self, side: int, s: float, e: float) -> float:
        way = max(0.0, self.start - s, e - self.end)
        return (self.above if side else self.below) + (MAX_RATE + abs(self.rate)) * way


@dataclass
class Model:
    reference: str
    pieces: list[Piece] = field(default_factory=list)

    def piece(self, t: float) -> Piece:
        return self.pieces[max(bisect_right([p.start for p in self.pieces], t) - 1, 0)]

    def to_reference(self, local: float) -> float:
        """The reference's time when this domain's clock read ``local``: found as denials finds a call's
        segment (each segment from its start's reading on), then that segment's line."""
        starts = [p.start + p.at(p.start) for p in self.pieces]
        p = self.pieces[max(bisect_right(starts, local) - 1, 0)]
        return local - p.at(local - p.off)


def _tile_at(tiles: list[Tile], t: float) -> Tile:
    if len(tiles) == 1:
        return tiles[0]
    return tiles[max(bisect_right([x.start for x in tiles], t) - 1, 0)]


def _compose(path: list[tuple[list[Tile], float]], extent: tuple[float, float]) -> list[Piece]:
    """Pieces of the sum of signed pair models along ``path`` over ``extent``; each piece lies inside one tile of
    every pair, so lines add and so do the bounds' distances."""
    cuts = {extent[0], extent[1]}
    for tiles, _ in path:
        cuts.update(t.start for t in tiles[1:] if extent[0] < t.start < extent[1])
    bounds = sorted(cuts)
    if len(bounds) == 1:
        bounds = bounds * 2
    pieces = []
    for s, e in zip(bounds, bounds[1:], strict=False):
        m = (s + e) / 2
        used = [(_tile_at(tiles, m), sign) for tiles, sign in path]
        lines = [sum(sign * tile.line(t) for tile, sign in used) for t in (s, e)]
        rate = (lines[1] - lines[0]) / (e - s) if e > s else sum(sign * tile.b for tile, sign in used)
        below = sum(tile.room(0 if sign > 0 else 1, s, e) for tile, sign in used)
        above = sum(tile.room(1 if sign > 0 else 0, s, e) for tile, sign in used)
        pieces.append(Piece(s, e, (lines[0] + lines[1]) / 2, rate, below, above, used[-1][0].samples))
    return pieces


def _paths(pairs: dict[tuple[str, str], list[Tile]], widths: dict[tuple[str, str], float],
           root: str) -> dict[str, list[tuple[tuple[str, str], float]]]:
    """The shortest path from ``root`` to every domain it reaches (fewest pairs: each link's asymmetry, which no
    constraint reveals, adds up to half its width to the error; then the least sum of widths): signed pair keys."""
    neighbours: dict[str, list[tuple[str, tuple[str, str], float]]] = defaultdict(list)
    for a, b in pairs:
        neighbours[a].append((b, (a, b), 1.0))
        neighbours[b].append((a, (a, b), -1.0))
    best = {root: (0, 0.0)}
    path: dict[str, list[tuple[tuple[str, str], float]]] = {root: []}
    heap = [(0, 0.0, root)]
    while heap:
        hops, cost, node = heapq.heappop(heap)
        if (hops, cost) > best[node]:
            continue
        for other, key, sign in sorted(neighbours[node]):
            c = (hops + 1, cost + widths[key])
            if c < best.get(other, (math.inf, math.inf)):
                best[other], path[other] = c, [*path[node], (key, sign)]
                heapq.heappush(heap, (*c, other))
    return path


def _consensus(models: dict[str, Model], anchor: str) -> None:
    """Re-express ``models`` (relative to ``anchor``) relative to the median of all their clocks, in place."""
    grid = sorted({p.start for m in models.values() for p in m.pieces} | {p.end for m in models.values()
                                                                          for p in m.pieces})
    if len(grid) * len(models) > MAX_GRID or len(grid) < 2:  # one constant: the median of the domains' medians
        centre = _median([_median([p.off for p in m.pieces]) for m in models.values()])
        spread = _median([_median([p.below + p.above for p in m.pieces]) for m in models.values()]) / 2
        for m in models.values():
            m.reference = CONSENSUS
            m.pieces = [Piece(p.start, p.end, p.off - centre, p.rate, p.below + spread, p.above + spread, p.samples)
                        for p in m.pieces]
        return
    medians = []  # per grid interval: the median offset and the medians of the bounds, at both ends
    for s, e in zip(grid, grid[1:], strict=False):
        used = [m.piece((s + e) / 2) for m in models.values()]
        ends = []
        for t in (s, e):
            at = [(p.at(t), p) for p in used]
            ends.append((_median([v for v, _ in at]), _median([v - p.below for v, p in at]),
                         _median([v + p.above for v, p in at])))
        medians.append(ends)
    for m in models.values():
        pieces = []
        for (s, e), ends in zip(zip(grid, grid[1:], strict=False), medians, strict=True):
            if e < m.pieces[0].start or s > m.pieces[-1].end:
                continue
            own = m.piece((s + e) / 2)
            rel = [(own.at(t) - centre, own.at(t) - own.below - high, own.at(t) + own.above - low)
                   for t, (centre, low, high) in zip((s, e), ends, strict=True)]
            pieces.append(Piece(s, e, (rel[0][0] + rel[1][0]) / 2, (rel[1][0] - rel[0][0]) / (e - s),
                                max(max(0.0, x[0] - x[1]) for x in rel), max(max(0.0, x[2] - x[0]) for x in rel),
                                own.samples))
        m.pieces, m.reference = _merge(pieces), CONSENSUS


def _merge(pieces: list[Piece]) -> list[Piece]:
    """Consecutive pieces on one line (the consensus grid cuts every domain where any other changes) as one."""
    out: list[Piece] = []
    for p in pieces:
        q = out[-1] if out else None
        if q is not None and abs(q.rate - p.rate) <= 1e-12 and abs(q.at(p.mid) - p.off) <= EPS:
            out[-1] = Piece(q.start, p.end, q.at((q.start + p.end) / 2), q.rate, max(q.below, p.below),
                            max(q.above, p.above), q.samples + p.samples)
        else:
            out.append(p)
    return out


def _median(values: list[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def _models(edges: list[Edge], reference: str | None) -> dict[str, Model]:
    by_pair: dict[tuple[str, str], list[tuple[float, float, float, float, int]]] = defaultdict(list)
    for a, b, lo, t_lo, hi, t_hi, n in edges:
        by_pair[(a, b)].append((lo, t_lo, hi, t_hi, n))
    pairs = {key: fit_pair(rows) for key, rows in by_pair.items()}  # each on its domain_a's clock
    widths = {key: max(MIN_WIDTH, _median([hi - lo for lo, _, hi, _, _ in rows])) for key, rows in by_pair.items()}
    samples: dict[str, int] = defaultdict(int)
    for (a, b), rows in by_pair.items():
        for *_, n in rows:
            samples[a] += n
            samples[b] += n
    models: dict[str, Model] = {}
    left = set(samples)
    roots = [reference] if reference in left else []
    while left:
        # the reference first; each group it does not reach is anchored at its best-sampled domain
        root = roots.pop() if roots else min(left, key=lambda d: (-samples[d], d))
        paths = _paths(pairs, widths, root)
        zero = Piece(-math.inf, math.inf, 0.0, 0.0, 0.0, 0.0, samples[root])  # its extent: its group's, below
        group = {root: Model(root, [zero])}
        for domain in sorted(paths, key=lambda d: (len(paths[d]), d)):  # parents before their children
            if domain == root:
                continue
            key, sign = paths[domain][-1]
            parent = group[key[0] if sign > 0 else key[1]]
            tiles = pairs[key]
            if key[0] != root:  # the pair's times to the reference's clock (through the parent's), fitted again
                if key[0] == domain:  # on the child's clock: to the parent's by the pair's own fit first
                    def convert(t: float, own: list[Tile] = tiles, to: Model = parent) -> float:
                        return to.to_reference(t + _tile_at(own, t).line(t))
                else:
                    convert = parent.to_reference
                tiles = fit_pair([(lo, convert(t_lo), hi, convert(t_hi), n) for lo, t_lo, hi, t_hi, n in by_pair[key]])
            extent = (min(parent.pieces[0].start, tiles[0].start), max(parent.pieces[-1].end, tiles[-1].end))
            if parent.pieces[0] is zero:
                extent = (tiles[0].start, tiles[-1].end)
            group[domain] = Model(root, _compose([(parent.pieces, 1.0), (tiles, sign)], extent))
        others = [p for d, m in group.items() if d != root for p in m.pieces]
        zero.start = min((p.start for p in others), default=0.0)
        zero.end = max((p.end for p in others), default=0.0)
        if root != reference:
            _consensus(group, root)
        models.update(group)
        left -= set(paths)
    return models


def solve(edges: list[Edge], reference: str | None) -> list[tuple]:
    """The model of every domain: rows of COLUMNS (times in seconds of the reference's clock). ``edges`` are
    clock_edges rows (EDGE_COLUMNS), times in domain_a's clock."""
    rows = []
    for domain, m in sorted(_models(edges, reference).items()):
        for p in m.pieces:
            rows.append((domain, m.reference, p.start, p.end, p.off, max(p.below, p.above), int(p.samples),
                         p.off - p.below, p.off + p.above, p.rate * 1e6))
    return rows


def write_offsets(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    """Read ``clock_edges``, solve, and (re)create the ``clock_offsets`` table; returns the solved rows."""
    # a fixed row order: the fit then meets the constraints in the same order on every run (bit-identical re-runs)
    edges = con.execute(f"SELECT {', '.join(EDGE_COLUMNS)} FROM clock_edges "
                        "ORDER BY domain_a, domain_b, bucket").fetchall()
    return store(con, solve(edges, issuer_domain(con)))


def store(con: duckdb.DuckDBPyConnection, offsets: list[tuple]) -> list[tuple]:
    """(Re)create the ``clock_offsets`` table holding ``solve``'s rows; returns them."""
    con.execute(
        "CREATE OR REPLACE TABLE clock_offsets (domain VARCHAR, reference VARCHAR, window_start TIMESTAMP, "
        "window_end TIMESTAMP, offset_s DOUBLE, error_s DOUBLE, samples BIGINT, lower_s DOUBLE, upper_s DOUBLE, "
        "rate_ppm DOUBLE)"
    )
    if not offsets:
        return offsets
    # the columns as list parameters, zipped back by unnest (a Python object read by name would make DuckDB import
    # pandas to check its type)
    columns = [list(c) for c in zip(*offsets, strict=True)]
    con.execute(
        "INSERT INTO clock_offsets SELECT domain, reference, make_timestamp((window_start * 1e6)::BIGINT), "
        "make_timestamp((window_end * 1e6)::BIGINT), offset_s, error_s, samples, lower_s, upper_s, rate_ppm FROM ("
        "SELECT " + ", ".join(f"unnest(${i + 1}) AS {name}" for i, name in enumerate(COLUMNS))
        + ") ORDER BY domain, window_start",
        columns,
    )
    return offsets
