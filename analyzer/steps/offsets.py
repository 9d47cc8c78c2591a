"""The clock model: ``clock_edges`` (tightest causality constraints per pair of domains and time bucket) ->
``clock_offsets`` (each domain's offset and rate against the reference, in segments, with a bound at every instant).

Clocks drift, step and slew (NTP), links are asymmetric, and every token time is corrected with these offsets. Each
pair of domains is fitted alone (the convex-hull synchronisation of traces: Duda et al.; Poirier, Roy and Dagenais):
segments of lines through its constraints (``fit_pair``). The pairs are then fused on the reference's clock: their
intervals are difference constraints, whose shortest paths bound each domain (``_fuse``); a step is placed by every
pair that saw it, and the estimate follows the domain's own pair with the reference where it has one (a link's
asymmetry costs half of it once, not per hop), kept inside the bound. The reference is the issuer's domain; a group
with no pair to it is solved against the median of its clocks (``consensus``). Rows are segments: offset_s, lower_s,
upper_s at the middle, rate_ppm the slope, the bound's distances the widest over the segment (a side nothing bounds
SPAN away). Pure Python on a few thousand rows (importing numpy would cost more than the fit).
"""

from __future__ import annotations

import heapq
import itertools
import math
from bisect import bisect_right
from collections import defaultdict
from dataclasses import dataclass, field

import duckdb

CONSENSUS = "consensus"
MAX_RATE = 5e-4  # the largest rate difference of two clocks (NTP slews at most 500 ppm): bounds beyond the data
USUAL_RATE = 2e-4  # the rate difference of two clocks (each within 100 ppm) the fit prefers when constraints allow more
EPS = 1e-9  # slack for constraints that hold with equality (span times are whole nanoseconds)
SPAN = 1e4  # the fit's search range around a segment's first constraint; a bound's side nothing limits (s)
MIN_WIDTH = 1e-6  # a pair's weight in the path search: its median constraint width, at least this
MAX_GRID = 200_000  # consensus: rows of the median's grid (domains x breakpoints) past which it is one constant
KINK = 1e-4  # a bend of a pair's offset this far from a line is seen as one (s)
WINDOW = 8  # constraints per window where a link's quickest delays are read
MIN_STRETCH = 4  # constraints the shortest segment a bend makes holds (fewer: the delays were read too short)
OUTLIER = 3  # a narrowed constraint no line meets while it meets this many next ones is one odd call's
MAX_GAPS = 3  # pairs of a path whose side of a step is chosen jointly (2**this combinations at most)

COLUMNS = ["domain", "reference", "window_start", "window_end", "offset_s", "error_s", "samples", "lower_s",
           "upper_s", "rate_ppm"]
EDGE_COLUMNS = ("domain_a", "domain_b", "lo_s", "t_lo_s", "hi_s", "t_hi_s", "samples")
Edge = tuple[str, str, float, float, float, float, int]
# (t, value, sign: +1 lower / -1 upper, samples, and the instant on each clock of the pair: t_a, t_b)
Point = tuple[float, float, float, int, float, float]
Key = tuple[str, str]


def issuer_domain(con: duckdb.DuckDBPyConnection) -> str | None:
    """The clock domain that issued most tokens (``jit.issue`` spans), or None when the issuer is not traced."""
    row = con.execute(
        "SELECT domain FROM rpc_spans WHERE name = 'jit.issue' GROUP BY domain ORDER BY count(*) DESC, domain LIMIT 1"
    ).fetchone()
    return row[0] if row else None


# ---- one pair: segments of lines between the lower and upper constraints -------------------------------------


@dataclass
class Tile:
    """One segment of a pair's model: d(t) = base + a + b (t - x0) for t in [start, end), fitted to constraints
    from ``first`` to ``last``. Its bound needs no line: a constraint l <= d(t_j) still holds at t as
    l - MAX_RATE |t - t_j| (and so for the upper ones), so the truth is within f(t) = min_j (r_j + k |t - t_j|) of the
    line, r_j the line's distance to constraint j and k the drift room (MAX_RATE plus the line's own slope). Per side
    (0 below, 1 above) the tile keeps f's peak between its constraints and f at its first and last one, from where it
    grows by k outwards; a side without constraints is unbounded."""
    start: float
    end: float
    first: float
    last: float
    x0: float
    base: float
    a: float
    b: float
    samples: int
    clocks: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # first and last constraint on a's, b's clock
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


def _extent(poly: list[tuple[float, float]], b: float) -> tuple[float, float]:
    """The intercepts of the polygon's lines of slope b: their range (empty: inf, -inf)."""
    low, high = math.inf, -math.inf
    n = len(poly)
    for k in range(n):
        (a1, b1), (a2, b2) = poly[k], poly[k + 1 - n]
        if b1 == b:
            low, high = min(low, a1), max(high, a1)
        if (b1 - b) * (b2 - b) < 0.0:
            a = a1 + (b - b1) / (b2 - b1) * (a2 - a1)
            low, high = min(low, a), max(high, a)
    return low, high


def _resistant(xy: list[tuple[float, float]]) -> float | None:
    """A resistant slope: the median of the slopes from each constraint of the first third to each of the last
    (Theil and Sen's, between the thirds; at most 40 of each, evenly spread), None under three points. One
    constraint much tighter than the rest (a call over a quicker link) does not tilt it."""
    n = len(xy) // 3
    if n < 1:
        return None
    step = -(-n // 40)
    slopes = [(y2 - y1) / (x2 - x1) for x1, y1 in xy[:n:step] for x2, y2 in xy[-n::step] if x2 > x1]
    return _median(slopes) if slopes else None


def _slope(poly: list[tuple[float, float]], points: list[Point], x0: float) -> float:
    """The slope of the line: the mean of the resistant slopes of the lower and of the upper constraints (each
    follows the truth, a link's delay away), kept among the slopes the polygon allows. With too few constraints
    for that, the middle of those slopes, where a side only the search range limits (MAX_RATE: a few calls in a
    second leave it open) is taken at the rate two clocks usually differ by instead."""
    bs = [b for _, b in poly]
    low, high = min(bs), max(bs)
    if low <= -MAX_RATE * (1 - 1e-6):
        low = max(low, min(-USUAL_RATE, high))
    if high >= MAX_RATE * (1 - 1e-6):
        high = min(high, max(USUAL_RATE, low))
    sides = [_resistant([(t - x0, v) for t, v, s, *_ in points if s == sign]) for sign in (1.0, -1.0)]
    known = [b for b in sides if b is not None]
    if not known:
        return (low + high) / 2
    return min(max(sum(known) / len(known), low), high)


def _middle(poly: list[tuple[float, float]], points: list[Point], x0: float) -> tuple[float, float]:
    """The line in the middle of the polygon: its slope (``_slope``), then the middle intercept at that slope."""
    b = _slope(poly, points, x0)
    low, high = _extent(poly, b)
    if low > high:  # a degenerate polygon: its first vertex
        return poly[0]
    return (low + high) / 2, b


def _one_sided(poly: list[tuple[float, float]], points: list[Point], x0: float, base: float) -> tuple[float, float]:
    """A segment with constraints of one kind only: the usual slope, at the edge the constraints allow (the polygon's
    other side is only the search range)."""
    b = _slope(poly, points, x0)
    sign = points[0][2]
    a = sign * max(sign * (v - base - b * (t - x0)) for t, v, *_ in points)
    return a, b


def _bounded(tile: Tile, points: list[Point]) -> Tile:
    """``tile`` with its bound's terms from its constraints."""
    k = MAX_RATE + abs(tile.b)
    c, b, x0 = tile.base + tile.a, tile.b, tile.x0
    for side, sign in ((0, 1.0), (1, -1.0)):
        near = [(p[0], max(0.0, sign * (c + b * (p[0] - x0) - p[1]))) for p in points if p[2] == sign]
        if not near:  # no constraint on this side: nothing bounds it
            tile.peak[side] = math.inf
            tile.edge.append((tile.first, math.inf, tile.last, math.inf))
            continue
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


def _start(v: float) -> list[tuple[float, float]]:
    """The lines a segment's first constraint (value v at x = 0) leaves: the search range."""
    return [(v - SPAN, -MAX_RATE), (v + SPAN, -MAX_RATE), (v + SPAN, MAX_RATE), (v - SPAN, MAX_RATE)]


def _tile(own: list[Point], base: float, poly: list[tuple[float, float]] | None,
          fit: list[Point] | None = None) -> Tile:
    """The segment of the constraints ``own``: its line from ``fit`` (them narrowed, else them), whose polygon is
    ``poly`` when known; its bound from them as they are."""
    fit = own if fit is None else fit
    x0 = own[0][0]
    if poly is None:
        poly = _start(fit[0][1] - base)
        for t, v, sign, *_ in fit:
            poly = _clip(poly, t - x0, v - base, sign) or poly
    if len({p[2] for p in own}) == 1:
        a, b = _one_sided(poly, own, x0, base)
    else:
        a, b = _middle(poly, own, x0)
    last = own[-1][0]
    samples = max(sum(p[3] for p in own if p[2] == sign) for sign in (1.0, -1.0))  # a bucket: a lower and an upper
    tile = Tile(x0, last, x0, last, x0, base, a, b, samples,
                (own[0][4], own[0][5], own[-1][4], own[-1][5]))
    return _bounded(tile, own)


def _segments(points: list[Point], base: float,
              bend: bool = False) -> tuple[list[list[int]], list[list[tuple[float, float]] | None], set[int]]:
    """[first, end) of each stretch of ``points`` (sorted) one line meets, and its polygon (None where a stretch lost
    constraints). The last constraints of a stretch that the next one's line meets too and that lie more than twice
    as far from its own line as its constraints usually do (loose bounds from after a step) may lie on either side
    of the change: they are left to neither. With ``bend`` (narrowed constraints, which a call quicker than the
    link's usual can make too tight) a constraint the line misses while it meets the next OUTLIER ones is skipped
    (the third set returned), and so is the first of a stretch that ends before MIN_STRETCH; the constraints both
    lines meet closely are shared out at their middle: a bend is about where the two lines cross, not where the
    first stops fitting."""
    cuts: list[list[int]] = []
    polys: list[list[tuple[float, float]] | None] = []
    skipped: set[int] = set()
    i, n = 0, len(points)
    while i < n:
        x0 = points[i][0]
        poly = _start(points[i][1] - base)
        j, held = i, 0
        while j < n:
            t, v, sign = points[j][:3]
            clipped = _clip(poly, t - x0, v - base, sign)
            if clipped is None:
                if not bend or not _meets(poly, points[j + 1:j + 1 + OUTLIER], x0, base):
                    break
                skipped.add(j)
            else:
                poly, held = clipped, held + 1
            j += 1
        if bend and j < n and held < MIN_STRETCH:  # an odd constraint first: skipped, the stretch started again
            skipped.add(i)
            i += 1
            continue
        cuts.append([i, j])
        polys.append(poly)
        i = j
    for k in range(1, len(cuts)):
        poly, x0 = polys[k], points[cuts[k][0]][0]
        left = [p for q, p in enumerate(points[cuts[k - 1][0]:cuts[k - 1][1]], cuts[k - 1][0]) if q not in skipped]
        if len({p[2] for p in left}) == 2 and polys[k - 1] is not None:
            a, b = _middle(polys[k - 1], left, left[0][0])
            slack = {q: sign * (base + a + b * (t - left[0][0]) - v)
                     for q, (t, v, sign, *_) in enumerate(points[cuts[k - 1][0]:cuts[k - 1][1]], cuts[k - 1][0])}
            usual = {sign: _median([slack[q] for q in range(*cuts[k - 1]) if q not in skipped
                                    and points[q][2] == sign]) for sign in (1.0, -1.0)}
            for q in range(cuts[k][0] - 1, cuts[k - 1][0], -1):
                t, v, sign = points[q][:3]
                clipped = _clip(poly, t - x0, v - base, sign)
                if clipped is None or slack[q] <= 2 * usual[sign] + EPS:
                    break
                poly, cuts[k - 1][1], polys[k - 1] = clipped, q, None  # fewer constraints: fitted again
        if bend:
            first = end = cuts[k - 1][1]
            for q in range(end - 1, cuts[k - 1][0] + MIN_STRETCH - 1, -1):
                if q in skipped:
                    continue
                t, v, sign = points[q][:3]
                poly = _clip(poly, t - x0, v - base, sign)
                if poly is None:
                    break
                first = q
            if first < end:
                cuts[k - 1][1] = cuts[k][0] = (first + end + 1) // 2
                polys[k - 1] = polys[k] = None
    return cuts, polys, skipped


def _meets(poly: list[tuple[float, float]], points: list[Point], x0: float, base: float) -> bool:
    """Whether some line of ``poly`` meets every one of ``points`` (true for none)."""
    for t, v, sign, *_ in points:
        clipped = _clip(poly, t - x0, v - base, sign)
        if clipped is None:
            return False
        poly = clipped
    return True


def _narrowed(own: list[Point], tile: Tile, scale: float) -> list[tuple[int, Point]] | None:
    """The constraints of a stretch each moved in as far as a line could still meet them if the offset is a line.
    A lower constraint and the upper one nearest it in time are the link's way there and back: per window of WINDOW
    constraints, the narrowest such gap is the link's quickest round trip and its middle the link's asymmetry, both
    the same in every window while the link is. So a window's constraints move in by half that gap (at most the
    usual one: a slower window's constraints still hold the usual middle) less a tolerance (KINK, or three sigmas
    of the middles, from the round trips' scatter) times ``scale``, and what then no line meets is a bend of the
    offset (a slew, a step smaller than the link's delays) that the constraints as they are would hide. A window
    quicker than the usual by more than twice the tolerance (another kind of call, another path) is left out; one
    quicker call in a window is not read as the window's (the second narrowest gap is), its two constraints are left
    out, and ``_segments`` skips any other odd one. Returns (index in ``own``, constraint) of those kept; None when
    the stretch's line meets them all so narrowed (no bend)."""
    if math.isinf(tile.peak[0]) or math.isinf(tile.peak[1]):
        return None
    uppers = [j for j, p in enumerate(own) if p[2] < 0]
    times = [own[j][0] for j in uppers]
    windows: list[tuple[float, float] | None] = []
    paired: list[tuple[float, int, int]] = []  # (round trip, lower's index, upper's index)
    for g in range(0, len(own), WINDOW):
        pairs = []
        for j in range(g, min(g + WINDOW, len(own))):
            t, v, sign = own[j][:3]
            if sign < 0:
                continue
            k = bisect_right(times, t)
            u = min(uppers[max(k - 1, 0):k + 1], key=lambda x, t=t: abs(own[x][0] - t))
            th, vh = own[u][:2]
            pairs.append((vh - v - tile.b * (th - t), (vh + v) / 2 - tile.line((th + t) / 2)))
            paired.append((pairs[-1][0], j, u))
        pairs.sort()
        windows.append(pairs[min(1, len(pairs) - 1)] if pairs else None)  # the second narrowest: not one odd call
    seen = [w for w in windows if w is not None]
    if len(seen) < 3:
        return None
    usual = _median([w for w, _ in seen])
    # a middle scatters half as much as a round trip (each is the two ways' delays, halved or added); a bend moves
    # the middles, not the round trips
    tolerance = max(KINK, 1.5 * _median([abs(w - usual) for w, _ in seen]) / 0.6745)
    other = 2 * tolerance
    quick = {x for width, j, u in paired if width < usual - other for x in (j, u)}  # a quicker call's pair
    out: list[tuple[int, Point]] = []
    bend = False
    for k, window in enumerate(windows):
        for j in range(k * WINDOW, min((k + 1) * WINDOW, len(own))):
            t, v, sign, n, ta, tb = own[j]
            if j in quick:
                continue
            if window is None:
                out.append((j, own[j]))
            elif window[0] >= usual - other:
                shift = scale * max(0.0, min(window[0], usual) / 2 - tolerance)
                out.append((j, (t, v + sign * shift, sign, n, ta, tb)))
                bend = bend or sign * (tile.line(t) - v) < shift - EPS
    return out if bend else None


def fit_pair(points: list[Point]) -> list[Tile]:
    """Segments of lines for one pair from its constraints, any order. The lines a + b t that meet every constraint
    of a stretch form a convex polygon in (a, b), clipped by one half-plane per constraint (``_clip``); a stretch
    ends where it is empty (a step, a change of rate), and again where no line meets its constraints narrowed to the
    link's own delays (``_narrowed``: a bend the link's delays would hide). Each segment's line: ``_middle``.
    A stretch's last constraints that its narrowed line misses, too few for a line of their own, were after the
    change the next stretch starts with (loose enough to be met by the first line as they are): they go to it."""
    points = sorted(points)
    base = sorted(p[1] for p in points)[len(points) // 2]  # values near 0: no precision lost on large offsets
    tiles: list[Tile] = []
    cuts, polys, _ = _segments(points, base)
    carry: list[Point] = []
    for k, ((i, j), poly) in enumerate(zip(cuts, polys, strict=True)):
        own, poly, carry = carry + points[i:j], poly if not carry else None, []
        tile = _tile(own, base, poly)
        scale = 1.0
        while (kept := _narrowed(own, tile, scale)) is not None:
            narrowed = [p for _, p in kept]
            parts, shapes, skipped = _segments(narrowed, base, bend=True)
            tail = 0  # how many last constraints go to the next stretch
            if len(parts) > 1 and k + 1 < len(cuts) and parts[-1][1] - parts[-1][0] < MIN_STRETCH:
                tail = len(own) - kept[parts[-1][0]][0]
                parts, shapes = parts[:-1], shapes[:-1]
            if all(e - s >= MIN_STRETCH for s, e in parts):
                mine, carry = own[:len(own) - tail], own[len(own) - tail:]
                # each segment's own constraints for its bound: from its first kept one to its last (those left out
                # before the first segment and after the last going to them)
                spans = [[kept[s][0], kept[e - 1][0] + 1] for s, e in parts]
                spans[0][0], spans[-1][1] = 0, len(mine)
                tiles += [_tile(mine[a:b], base, q if narrowed[s][0] == mine[a][0] else None,  # a polygon at its x0
                                [narrowed[x] for x in range(s, e) if x not in skipped])
                          for (a, b), (s, e), q in zip(spans, parts, shapes, strict=True)]
                break
            scale /= 2  # a stretch too short for a line: a delay seen once, narrowed less
            if scale < 0.1:
                tiles.append(tile)
                break
        else:
            tiles.append(tile)
    for left, right in zip(tiles, tiles[1:], strict=False):  # segments meet halfway between their data
        left.end = right.start = (left.last + right.first) / 2
    return tiles


def _sides(tiles: list[Tile], firsts: list[float], m: float) -> list[Tile]:
    """The pair's segments that may hold at instant m: one inside (or beyond) the data, two between two segments'
    data (the change lies somewhere in between), the nearer one first."""
    k = bisect_right(firsts, m) - 1
    if k < 0:
        return [tiles[0]]
    if k == len(tiles) - 1 or m <= tiles[k].last:
        return [tiles[k]]
    left, right = tiles[k], tiles[k + 1]
    return [left, right] if m < (left.last + right.first) / 2 else [right, left]


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
    doubt: list[tuple[float, float]] = field(default_factory=list)  # where a step of its path lies, not known when
    _starts: list[float] | None = None

    def piece(self, t: float) -> Piece:
        return self.pieces[max(bisect_right([p.start for p in self.pieces], t) - 1, 0)]

    def to_reference(self, local: float) -> float:
        """The reference's time when this domain's clock read ``local``: found as denials finds a call's
        segment (each segment from its start's reading on), then that segment's line."""
        if self._starts is None:
            self._starts = [p.start + p.at(p.start) for p in self.pieces]
        p = self.pieces[max(bisect_right(self._starts, local) - 1, 0)]
        return local - p.at(local - p.off)

    def doubtful(self, t: float) -> bool:
        return any(lo < t < hi for lo, hi in self.doubt)


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


def _paths(pairs: list[Key], widths: dict[Key, float], root: str) -> dict[str, list[tuple[Key, float]]]:
    """The shortest path from ``root`` to every domain it reaches (fewest pairs: each link's asymmetry, which no
    constraint reveals, adds up to half its width to the error; then the least sum of widths): signed pair keys."""
    neighbours: dict[str, list[tuple[str, Key, float]]] = defaultdict(list)
    for a, b in pairs:
        neighbours[a].append((b, (a, b), 1.0))
        neighbours[b].append((a, (a, b), -1.0))
    best = {root: (0, 0.0)}
    path: dict[str, list[tuple[Key, float]]] = {root: []}
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


def _on_root_clock(key: Key, points: list[tuple[float, float, float, float, int]], root: str,
                   coarse: dict[str, Model]) -> list[Point]:
    """A pair's constraints (time in a's clock, in b's, value, sign, samples) with their time in the root's clock:
    exact on a pair with the root; else through the model of either end (a first), avoiding an end whose model's
    step is not placed yet at that instant (near it, a reading maps to the wrong side of the step)."""
    a, b = key
    if root in key:
        return [(ta if a == root else tb, v, s, n, ta, tb) for ta, tb, v, s, n in points]
    ma, mb = coarse.get(a), coarse.get(b)
    if ma is not None and not ma.doubt:
        return [(ma.to_reference(ta), v, s, n, ta, tb) for ta, tb, v, s, n in points]
    out = []
    for ta, tb, v, s, n in points:
        ra = ma.to_reference(ta) if ma is not None else None
        rb = mb.to_reference(tb) if mb is not None else None
        if ra is None or (rb is not None and (ma.doubtful(ra) or ma.doubtful(rb))
                          and not (mb.doubtful(ra) or mb.doubtful(rb))):
            out.append((rb, v, s, n, ta, tb))
        else:
            out.append((ra, v, s, n, ta, tb))
    return out


def _shortest(n: int, root: int, arcs: list[tuple[int, int, float]]) -> list[float] | None:
    """Bellman-Ford from ``root``: the least sum of weights to every node; None with a negative cycle (constraints
    that contradict each other)."""
    dist = [math.inf] * n
    dist[root] = 0.0
    for _ in range(n):
        changed = False
        for u, v, w in arcs:
            d = dist[u] + w
            if d < dist[v] - EPS:
                dist[v], changed = d, True
        if not changed:
            return dist
    return None


def _fuse(group: list[str], root: str, tiles: dict[Key, list[Tile]],
          paths: dict[str, list[tuple[Key, float]]]) -> dict[str, list[Piece]]:
    """Every domain of ``group`` against ``root``: pieces between the instants where any pair changes segment,
    each with the fused bound (at both ends and the middle: the bound of a sum of lines is concave or convex between)
    and the estimate along the domain's path, clamped into it."""
    index = {d: i for i, d in enumerate(group)}
    keys = sorted(tiles)
    firsts = {key: [t.first for t in tiles[key]] for key in keys}
    lo_t = min(ts[0].first for ts in tiles.values())
    hi_t = max(ts[-1].last for ts in tiles.values())
    extent: dict[str, tuple[float, float]] = {}
    cuts = {lo_t, hi_t}
    for (a, b), ts in sorted(tiles.items()):
        for d in (a, b):
            s, e = extent.get(d, (math.inf, -math.inf))
            extent[d] = (min(s, ts[0].first), max(e, ts[-1].last))
        for left, right in zip(ts, ts[1:], strict=False):
            cuts.update(c for c in (left.last, (left.last + right.first) / 2, right.first) if lo_t < c < hi_t)
    bounds = sorted(cuts)
    if len(bounds) == 1:
        bounds = bounds * 2
    out: dict[str, list[Piece]] = {d: [] for d in group}
    for s, e in zip(bounds, bounds[1:], strict=False):
        m = (s + e) / 2
        sides = {key: _sides(tiles[key], firsts[key], m) for key in keys}
        fused = [_fused_at(t, s, e, sides, index, root) for t in (s, m, e)]
        for d in group:
            if d == root or not (extent[d][0] <= e and s <= extent[d][1]):
                continue
            out[d].append(_estimate(paths[d], sides, fused, index[d], s, e))
    for d in group:
        if d == root:
            out[d] = [Piece(lo_t, hi_t, 0.0, 0.0, 0.0, 0.0, sum(t.samples for k in keys if d in k for t in tiles[k]))]
        else:
            out[d] = _merge(_clipped(out[d], *extent[d]))
    return out


def _fused_at(t: float, s: float, e: float, sides: dict[Key, list[Tile]], index: dict[str, int],
              root: str) -> tuple[list[float], list[float]] | None:
    """The tightest [lower, upper] of every domain against the root that the pairs allow at t (over [s, e] their
    rooms are the widest there). A pair between two segments allows either; where that contradicts the others (two
    steps in its gap: a third offset neither segment has), only the pairs inside a segment count. None when those
    contradict each other too."""
    for keep in (None, 1):
        up: list[tuple[int, int, float]] = []  # x_v - x_u <= w
        down: list[tuple[int, int, float]] = []  # the same arcs reversed: x_u - x_v >= -w, from the root outwards
        for (a, b), cands in sides.items():
            if keep is not None and len(cands) > keep:
                continue
            lo = min(c.line(t) - c.room(0, s, e) for c in cands)
            hi = max(c.line(t) + c.room(1, s, e) for c in cands)
            ia, ib = index[a], index[b]
            if hi < math.inf:
                up.append((ia, ib, hi))
                down.append((ib, ia, hi))
            if lo > -math.inf:
                up.append((ib, ia, -lo))
                down.append((ia, ib, -lo))
        r = index[root]
        upper = _shortest(len(index), r, up)
        lower = _shortest(len(index), r, down)
        if upper is not None and lower is not None:
            return [-x for x in lower], upper
        if all(len(c) == 1 for c in sides.values()):
            break
    return None


def _estimate(path: list[tuple[Key, float]], sides: dict[Key, list[Tile]],
              fused: list[tuple[list[float], list[float]] | None], i: int, s: float, e: float) -> Piece:
    """Domain i's piece on [s, e]: its path's line (each pair on the side of a step the fused bound agrees with,
    else on the nearer one), clamped into the fused bound at both ends; the bound's distances are the widest at the
    ends and the middle. Where the pairs contradict each other, the path's own bound."""
    m = (s + e) / 2
    choices, open_pairs = [], 0
    for key, _ in path:
        both = len(sides[key]) > 1 and open_pairs < MAX_GAPS
        open_pairs += both
        choices.append(sides[key] if both else sides[key][:1])
    best: tuple[float, list[float], tuple[Tile, ...]] | None = None
    for combo in itertools.product(*choices):
        values = [sum(sign * c.line(t) for c, (_, sign) in zip(combo, path, strict=True)) for t in (s, m, e)]
        miss = sum(max(0.0, f[0][i] - v, v - f[1][i]) for v, f in zip(values, fused, strict=True) if f is not None)
        if best is None or miss < best[0]:
            best = (miss, values, combo)
    assert best is not None
    _, values, used = best
    signs = [sign for _, sign in path]
    slope = sum(sign * c.b for c, sign in zip(used, signs, strict=True))
    if any(f is None for f in fused):  # the constraints disagree here: the path's own bound
        below = sum(c.room(0 if sign > 0 else 1, s, e) for c, sign in zip(used, signs, strict=True))
        above = sum(c.room(1 if sign > 0 else 0, s, e) for c, sign in zip(used, signs, strict=True))
        return Piece(s, e, values[1], slope, below, above, used[-1].samples)
    ends = [min(max(v, f[0][i]), f[1][i]) if f[0][i] <= f[1][i] else v
            for v, f in zip((values[0], values[2]), (fused[0], fused[2]), strict=True)]
    mid = (ends[0] + ends[1]) / 2
    below = max(0.0, *(v - f[0][i] for v, f in zip((ends[0], mid, ends[1]), fused, strict=True)))
    above = max(0.0, *(f[1][i] - v for v, f in zip((ends[0], mid, ends[1]), fused, strict=True)))
    return Piece(s, e, mid, (ends[1] - ends[0]) / (e - s) if e > s else slope, below, above, used[-1].samples)


def _clipped(pieces: list[Piece], lo: float, hi: float) -> list[Piece]:
    """The pieces within [lo, hi] (a domain's own data), cut at its ends."""
    out = []
    for p in pieces:
        s, e = max(p.start, lo), min(p.end, hi)
        if s > e or (s == e and p.start < p.end and out):
            continue
        out.append(Piece(s, e, p.at((s + e) / 2), p.rate, p.below, p.above, p.samples))
    return out


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
    """Consecutive pieces on one line (another domain's change cuts every domain there) as one, with the wider bound,
    unless that more than doubles the longer one's: a short stretch's bound is widened rather than a row added, but a
    step's unresolved stretch does not widen the long segment beside it."""
    out: list[Piece] = []
    for p in pieces:
        q = out[-1] if out else None
        if q is not None and abs(q.at(p.start) - p.at(p.start)) <= EPS and abs(q.at(p.end) - p.at(p.end)) <= EPS:
            longer = q if q.end - q.start >= p.end - p.start else p
            below, above = max(q.below, p.below), max(q.above, p.above)
            if below <= 2 * longer.below + EPS and above <= 2 * longer.above + EPS:
                out[-1] = Piece(q.start, p.end, q.at((q.start + p.end) / 2), q.rate, below, above,
                                max(q.samples, p.samples))
                continue
        out.append(p)
    return out


def _median(values: list[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def _group(root: str, paths: dict[str, list[tuple[Key, float]]],
           by_pair: dict[Key, list[tuple[float, float, float, float, int]]]) -> tuple[dict[str, Model], list[tuple]]:
    """The models of the domains ``root`` reaches: each pair's constraints on the root's clock (through the model
    of its path, built outwards from the root: ``coarse``), fitted, then fused. Also each change of segment of a
    pair: (a, b, the last and first constraint around it on a's clock, then on b's, the time between them)."""
    coarse = {root: Model(root, [Piece(-math.inf, math.inf, 0.0, 0.0, 0.0, 0.0, 0)])}
    tiles: dict[Key, list[Tile]] = {}
    for domain in sorted(paths, key=lambda d: (len(paths[d]), d)):  # parents before their children
        if domain == root:
            continue
        key, sign = paths[domain][-1]
        parent = coarse[key[0] if sign > 0 else key[1]]
        tiles[key] = fit_pair(_on_root_clock(key, by_pair[key], root, coarse))
        ts = tiles[key]
        extent = (ts[0].first, ts[-1].last)
        if math.isfinite(parent.pieces[0].start):
            extent = (min(parent.pieces[0].start, extent[0]), max(parent.pieces[-1].end, extent[1]))
        doubt = parent.doubt + [(x.last, y.first) for x, y in zip(ts, ts[1:], strict=False)]
        coarse[domain] = Model(root, _compose([(parent.pieces, 1.0), (ts, sign)], extent), sorted(doubt))
    for key in sorted(by_pair):
        if key not in tiles and key[0] in paths:
            tiles[key] = fit_pair(_on_root_clock(key, by_pair[key], root, coarse))
    breaks = [(a, b, x.clocks[2], y.clocks[0], x.clocks[3], y.clocks[1], y.first - x.last)
              for (a, b), ts in sorted(tiles.items()) for x, y in zip(ts, ts[1:], strict=False)]
    fused = _fuse(sorted(paths), root, tiles, paths)
    return {d: Model(root, pieces) for d, pieces in fused.items()}, breaks


def _models(edges: list[Edge], reference: str | None) -> tuple[dict[str, Model], list[tuple]]:
    by_pair: dict[Key, list[tuple[float, float, float, float, int]]] = defaultdict(list)
    widths_of: dict[Key, list[float]] = defaultdict(list)
    samples: dict[str, int] = defaultdict(int)
    for a, b, lo, t_lo, hi, t_hi, n in edges:  # each constraint at its instant on both clocks
        by_pair[(a, b)].append((t_lo, t_lo + lo, lo, 1.0, n))
        by_pair[(a, b)].append((t_hi, t_hi + hi, hi, -1.0, n))
        widths_of[(a, b)].append(hi - lo)
        samples[a] += n
        samples[b] += n
    widths = {key: max(MIN_WIDTH, _median(w)) for key, w in widths_of.items()}
    models: dict[str, Model] = {}
    breaks: list[tuple] = []
    left = set(samples)
    roots = [reference] if reference in left else []
    while left:
        # the reference first; each group it does not reach is anchored at its best-sampled domain
        root = roots.pop() if roots else min(left, key=lambda d: (-samples[d], d))
        paths = _paths(sorted(by_pair), widths, root)
        group, changes = _group(root, paths, {k: v for k, v in by_pair.items() if k[0] in paths})
        breaks += changes
        if root != reference:
            _consensus(group, root)
        models.update(group)
        left -= set(paths)
    return models, breaks


def solve(edges: list[Edge], reference: str | None) -> list[tuple]:
    """The model of every domain: rows of COLUMNS (times in seconds of the reference's clock). ``edges`` are
    clock_edges rows (EDGE_COLUMNS), times in domain_a's clock."""
    return _solve(edges, reference)[0]


def _solve(edges: list[Edge], reference: str | None) -> tuple[list[tuple], list[tuple]]:
    models, breaks = _models(edges, reference)
    rows = []
    for domain, m in sorted(models.items()):
        for p in m.pieces:
            below, above = min(p.below, SPAN), min(p.above, SPAN)  # a side nothing bounds: SPAN away, finite
            rows.append((domain, m.reference, p.start, p.end, p.off, max(below, above), int(p.samples),
                         p.off - below, p.off + above, p.rate * 1e6))
    return rows, breaks


def near_changes(con: duckdb.DuckDBPyConnection, breaks: list[tuple]) -> list[Edge]:
    """The constraints between the last and the first bucket around each pair's change of segment, in buckets of a
    256th of that time: clock_edges keeps one per bucket, which places a step only to a bucket; all of them place it
    to the calls around it, which every pair of the stepping domain narrows further."""
    if not breaks:
        return []
    a, b, ta0, ta1, tb0, tb1, gap = zip(*breaks, strict=True)
    windows = [list(a), list(b), [min(x, y) for x, y in zip(ta0, ta1, strict=True)],
               [max(x, y) for x, y in zip(ta0, ta1, strict=True)], [min(x, y) for x, y in zip(tb0, tb1, strict=True)],
               [max(x, y) for x, y in zip(tb0, tb1, strict=True)], [max(g / 256, 1e-4) for g in gap],
               list(range(len(breaks)))]
    return con.execute(
        "WITH w AS (SELECT unnest($1) AS a, unnest($2) AS b, unnest($3) AS a_lo, unnest($4) AS a_hi, "
        "unnest($5) AS b_lo, unnest($6) AS b_hi, unnest($7) AS fine, unnest($8) AS id) "
        "SELECT s.domain_a, s.domain_b, max(s.lo_s), arg_max(s.t_lo_s, (s.lo_s, -s.t_lo_s)), min(s.hi_s), "
        "arg_min(s.t_hi_s, (s.hi_s, s.t_hi_s)), count(*) "
        "FROM clock_samples AS s JOIN w ON s.domain_a = w.a AND s.domain_b = w.b "
        "WHERE s.t_hi_s BETWEEN w.a_lo AND w.a_hi OR s.t_lo_s BETWEEN w.a_lo AND w.a_hi "
        "OR s.t_hi_s + s.hi_s BETWEEN w.b_lo AND w.b_hi OR s.t_lo_s + s.lo_s BETWEEN w.b_lo AND w.b_hi "
        "GROUP BY s.domain_a, s.domain_b, w.id, floor(s.t_hi_s / w.fine) ORDER BY ALL",
        windows,
    ).fetchall()


def write_offsets(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    """Read ``clock_edges``, solve, and (re)create the ``clock_offsets`` table; returns the solved rows."""
    # a fixed row order: the fit then meets the constraints in the same order on every run (bit-identical re-runs)
    edges = con.execute(f"SELECT {', '.join(EDGE_COLUMNS)} FROM clock_edges "
                        "ORDER BY domain_a, domain_b, bucket").fetchall()
    return store(con, model(edges, issuer_domain(con), con))


def model(edges: list[Edge], reference: str | None, samples: duckdb.DuckDBPyConnection) -> list[tuple]:
    """``solve``, then again with the finer constraints around each change of segment that ``samples`` (a
    connection with ``clock_samples``) holds: clock_edges places a step only to its bucket."""
    offsets, breaks = _solve(edges, reference)
    extra = near_changes(samples, breaks) if breaks else []
    return solve(edges + extra, reference) if extra else offsets


def changes(edges: list[Edge], reference: str | None) -> list[tuple]:
    """The pairs' changes of segment ``model`` narrows (for an engine that holds clock_samples elsewhere)."""
    return _solve(edges, reference)[1]


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
