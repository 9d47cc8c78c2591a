"""Small inline-SVG chart primitives for report.html: no plotting library, no font metrics, no network.

A :class:`Canvas` is one ``<svg>``; it holds :class:`Panel` plot areas that map data coordinates to pixels and draw
axes with a few "nice" ticks, stacked vertical bars, horizontal bars with error bars, and lines of points with error
bars. Every text drawn here is HTML-escaped, so callers pass raw data (service names, causes) as they are. Bars
carry ``data-series`` and ``data-count`` attributes and a ``<title>`` tooltip: a test can read back what was drawn
and a reader can hover over a bar for its exact number.

The SVG has no ``xmlns``: it is meant to sit inline in an HTML page, where the parser puts it in the SVG namespace.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from html import escape

FONT = "system-ui, -apple-system, Segoe UI, Roboto, sans-serif"
INK = "#333"  # axis lines, titles
MUTED = "#666"  # tick labels, messages
GRID = "#e8e8e8"
# matplotlib's tab10, which the report used before: ten distinct colours, one per cause in contract.CAUSES.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
TICK_SIZE = 10
LABEL_SIZE = 11
TITLE_SIZE = 13
LEGEND_TEXT_PX = 190  # longer legend names are cut with an ellipsis


def text_width(text: str, size: float = LABEL_SIZE) -> float:
    """A generous estimate of the rendered width of ``text`` in a sans-serif font (no metrics in a report writer)."""
    return 0.6 * size * len(text)


def fit(text: str, max_px: float, size: float = LABEL_SIZE) -> str:
    """``text`` cut with an ellipsis to about ``max_px`` pixels wide."""
    room = max(1, int(max_px / (0.6 * size)))
    return text if len(text) <= room else text[: room - 1] + "…"


def _n(v: float) -> str:
    """A pixel coordinate, short: one decimal at most."""
    s = f"{v:.1f}"
    return s[:-2] if s.endswith(".0") else s


def nice_step(span: float, target: int = 5) -> float:
    """The 1, 2 or 5 times a power of ten that cuts ``span`` into about ``target`` steps."""
    if not span > 0 or not math.isfinite(span):
        return 1.0
    raw = span / target
    mag = 10.0 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw * (1 - 1e-9))


def nice_range(lo: float, hi: float, target: int = 5, *, integer: bool = False,
               slack: float | None = None) -> tuple[float, float, float]:
    """(lo, hi, step): the range widened to whole steps, so the axis ends on a labelled tick. ``integer`` keeps the
    step at 1 or more (counts). With ``slack``, an end that whole steps would leave emptier than that share of the
    axis gets a small margin instead (offsets of -0.8 .. 20,001 ms: -400 .. 20,401, not -5,000 .. 25,000)."""
    if not hi > lo:  # one value: a unit around it (or from 0)
        lo, hi = (lo - 1, hi + 1) if lo != 0 else (0.0, 1.0)
    step = nice_step(hi - lo, target)
    if integer:
        step = max(step, 1.0)
    a, b = math.floor(lo / step + 1e-9) * step, math.ceil(hi / step - 1e-9) * step
    if slack is not None:
        margin, a0, b0 = 0.02 * (hi - lo), a, b
        if lo - a0 > slack * (b0 - a0):
            a = lo - margin
        if b0 - hi > slack * (b0 - a0):
            b = hi + margin
        if len(ticks(a, b, step)) < 2:  # keep at least two labelled ticks
            a, b = a0, b0
    return a, b, step


def padded_range(lo: float, hi: float, target: int = 5, pad: float = 0.06) -> tuple[float, float, float]:
    """(lo, hi, step) for points and lines: the data range with a small margin on each side, ticks inside it (a
    range widened to whole steps could be mostly empty: -0.7 .. 20,024 would become -5,000 .. 25,000)."""
    if not hi > lo:
        return nice_range(lo, hi, target)
    margin = (hi - lo) * pad
    return lo - margin, hi + margin, nice_step(hi - lo, target)


def ticks(lo: float, hi: float, step: float) -> list[float]:
    """The multiples of ``step`` within [lo, hi] (rounded, so 0.1 * 3 prints as 0.3)."""
    first, last = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
    return [round(k * step, 12) for k in range(first, last + 1)]


def fmt(v: float, step: float) -> str:
    """A tick label with as many decimals as the step needs and thousands separators: 0.2, 5, 20,000."""
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step > 0 else 0
    s = f"{v:,.{decimals}f}"
    return "0" if s.lstrip("-").strip("0.,") == "" else s


def _text(x: float, y: float, text: str, *, size: float = LABEL_SIZE, anchor: str = "start", fill: str = INK,
          baseline: str = "middle", extra: str = "") -> str:
    return (f'<text x="{_n(x)}" y="{_n(y)}" font-size="{size:g}" text-anchor="{anchor}" '
            f'dominant-baseline="{baseline}" fill="{fill}"{extra}>{escape(text)}</text>')


def _line(x1: float, y1: float, x2: float, y2: float, stroke: str = INK, width: float = 1) -> str:
    return (f'<line x1="{_n(x1)}" y1="{_n(y1)}" x2="{_n(x2)}" y2="{_n(y2)}" stroke="{stroke}" '
            f'stroke-width="{width:g}"/>')


def _rect(x: float, y: float, w: float, h: float, fill: str, *, series: str = "", count: float | None = None,
          tip: str = "") -> str:
    data = f' data-series="{escape(series)}"' if series else ""
    if count is not None:
        data += f' data-count="{count:.10g}"'
    end = f"><title>{escape(tip)}</title></rect>" if tip else "/>"
    return f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(max(w, 0))}" height="{_n(max(h, 0))}" fill="{fill}"{data}{end}'


def _data(data: dict[str, object]) -> str:
    """``data-*`` attributes: ``bucket_s=1`` -> `` data-bucket-s="1"``."""
    return "".join(f' data-{k.replace("_", "-")}="{escape(str(v))}"' for k, v in data.items())


class Panel:
    """A plot area of a canvas: the pixel box (left, top, width, height) shows data x in ``xlim`` and y in
    ``ylim``. Everything it draws goes into its canvas, in call order (later calls paint over earlier ones)."""

    def __init__(self, canvas: Canvas, box: tuple[float, float, float, float],
                 xlim: tuple[float, float] = (0.0, 1.0), ylim: tuple[float, float] = (0.0, 1.0)) -> None:
        self.canvas = canvas
        self.left, self.top, self.width, self.height = box
        self.xlim, self.ylim = xlim, ylim

    @property
    def right(self) -> float:
        return self.left + self.width

    @property
    def bottom(self) -> float:
        return self.top + self.height

    def px(self, x: float) -> float:
        lo, hi = self.xlim
        return self.left + (x - lo) / ((hi - lo) or 1.0) * self.width

    def py(self, y: float) -> float:
        lo, hi = self.ylim
        return self.bottom - (y - lo) / ((hi - lo) or 1.0) * self.height

    def _add(self, part: str) -> None:
        self.canvas.parts.append(part)

    def title(self, text: str) -> None:
        """A title centred over the plot area."""
        self._add(_text(self.left + self.width / 2, self.top - 12, text, size=LABEL_SIZE + 1, anchor="middle",
                        extra=' font-weight="600"'))

    def x_axis(self, step: float, label: str, *, grid: bool = False) -> None:
        """The bottom axis line, a tick and label at each multiple of ``step`` in ``xlim``, and the axis label."""
        self._add(_line(self.left, self.bottom, self.right, self.bottom))
        for t in ticks(*self.xlim, step):
            x = self.px(t)
            if grid:
                self._add(_line(x, self.top, x, self.bottom, GRID))
            self._add(_line(x, self.bottom, x, self.bottom + 4))
            self._add(_text(x, self.bottom + 7, fmt(t, step), size=TICK_SIZE, anchor="middle", fill=MUTED,
                            baseline="hanging"))
        self._add(_text(self.left + self.width / 2, self.bottom + 34, label, anchor="middle"))

    def y_axis(self, step: float, label: str, *, grid: bool = True) -> None:
        """The left axis line with ticks at each multiple of ``step`` in ``ylim``, light grid lines across the plot
        (under the data when called before drawing it) and the label written upwards."""
        widest = 0.0
        for t in ticks(*self.ylim, step):
            y = self.py(t)
            if grid and t != self.ylim[0]:
                self._add(_line(self.left, y, self.right, y, GRID))
            self._add(_line(self.left - 4, y, self.left, y))
            text = fmt(t, step)
            widest = max(widest, text_width(text, TICK_SIZE))
            self._add(_text(self.left - 7, y, text, size=TICK_SIZE, anchor="end", fill=MUTED))
        self._add(_line(self.left, self.top, self.left, self.bottom))
        x, y = self.left - widest - 16, self.top + self.height / 2
        shown = fit(label, self.height + 20)
        self._add(f'<text transform="translate({_n(x)},{_n(y)}) rotate(-90)" font-size="{LABEL_SIZE}" '
                  f'text-anchor="middle" fill="{INK}">{escape(shown)}</text>')

    def categories(self, labels: Sequence[str]) -> list[float]:
        """A left axis of one row per label, top to bottom; returns each row's centre (pixels). Labels longer than
        the left margin are cut, the full text stays in a tooltip."""
        row = self.height / max(len(labels), 1)
        centres = [self.top + (i + 0.5) * row for i in range(len(labels))]
        self._add(_line(self.left, self.top, self.left, self.bottom))
        for label, y in zip(labels, centres, strict=True):
            shown = fit(label, self.left - 12)
            tip = f"<title>{escape(label)}</title>" if shown != label else ""
            self._add(f'<text x="{_n(self.left - 6)}" y="{_n(y)}" font-size="{LABEL_SIZE}" text-anchor="end" '
                      f'dominant-baseline="middle" fill="{INK}">{tip}{escape(shown)}</text>')
        return centres

    def hline(self, y: float, stroke: str = INK) -> None:
        """A horizontal line across the plot at data ``y`` (when it is strictly inside the range)."""
        if self.ylim[0] < y < self.ylim[1]:
            self._add(_line(self.left, self.py(y), self.right, self.py(y), stroke, 1))

    def vline(self, x: float, stroke: str = INK) -> None:
        """A vertical line across the plot at data ``x`` (when it is in range)."""
        if self.xlim[0] <= x <= self.xlim[1]:
            self._add(_line(self.px(x), self.top, self.px(x), self.bottom, stroke, 1.2))

    def stacked_bars(self, starts: Sequence[float], width: float,
                     series: Sequence[tuple[str, str, Sequence[float]]], *, where: Sequence[str] = ()) -> None:
        """Vertical bars from x = start to start + width, one layer per (name, colour, heights) stacked in order.
        Zero heights draw nothing. Each rect says its series and count (``data-*`` and a tooltip that adds
        ``where[i]``, e.g. the bar's time range)."""
        bottom = [0.0] * len(starts)
        for name, color, heights in series:
            for i, (x, h) in enumerate(zip(starts, heights, strict=True)):
                if h <= 0:
                    continue
                x0, x1 = self.px(x), self.px(x + width)
                gap = 1.0 if x1 - x0 > 4 else 0.0  # a hairline between neighbours when there is room
                y0, y1 = self.py(bottom[i] + h), self.py(bottom[i])
                tip = f"{name}: {h:g}" + (f" · {where[i]}" if where else "")
                self._add(_rect(x0 + gap / 2, y0, x1 - x0 - gap, y1 - y0, color, series=name, count=h, tip=tip))
                bottom[i] += h

    def hbars(self, centres: Sequence[float], values: Sequence[float], *, colors: Sequence[str],
              errors: Sequence[float] | None = None, labels: Sequence[str] | None = None,
              names: Sequence[str] | None = None, thickness: float = 0.62) -> None:
        """Horizontal bars from 0 to each value at the given row centres (pixels), with an optional error bar
        (value ± error) and a text label beside the bar end, inside the bar in white when there is no room."""
        row = self.height / max(len(values), 1)
        half = row * thickness / 2
        zero = self.px(0.0)
        for i, (y, v) in enumerate(zip(centres, values, strict=True)):
            end = self.px(v)
            name = names[i] if names else ""
            label = labels[i] if labels else ""
            self._add(_rect(min(zero, end), y - half, abs(end - zero), 2 * half, colors[i], series=name, count=v,
                            tip=f"{name}: {label or f'{v:g}'}" if name else label))
            outer = end
            if errors and errors[i] > 0:
                lo, hi = self.px(v - errors[i]), self.px(v + errors[i])
                cap = min(half * 0.6, 5)
                self._add(_line(lo, y, hi, y, INK, 1.2))
                self._add(_line(lo, y - cap, lo, y + cap, INK, 1.2))
                self._add(_line(hi, y - cap, hi, y + cap, INK, 1.2))
                outer = hi if v >= 0 else lo
            if not label:
                continue
            w = text_width(label, LABEL_SIZE - 1)
            if v >= 0 and outer + 5 + w <= self.right:
                self._add(_text(outer + 5, y, label, size=LABEL_SIZE - 1))
            elif v < 0 and outer - 5 - w >= self.left:
                self._add(_text(outer - 5, y, label, size=LABEL_SIZE - 1, anchor="end"))
            elif abs(end - zero) > w + 10:  # no room outside: inside the bar end
                inside = end - 5 if v >= 0 else end + 5
                self._add(_text(inside, y, label, size=LABEL_SIZE - 1, anchor="end" if v >= 0 else "start",
                                fill="#fff"))
            else:  # a short bar at the edge: beside zero, on the other side
                self._add(_text(zero + (-5 if v >= 0 else 5), y, label, size=LABEL_SIZE - 1,
                                anchor="end" if v >= 0 else "start"))

    def series(self, name: str, color: str, xs: Sequence[float], ys: Sequence[float],
               errors: Sequence[float] | None = None) -> None:
        """One line of points (sorted by x) with vertical error bars (y ± error)."""
        points = sorted(zip(xs, ys, errors or [0.0] * len(xs), strict=True))
        path = " ".join(f"{_n(self.px(x))},{_n(self.py(y))}" for x, y, _ in points)
        self._add(f'<g data-series="{escape(name)}"><title>{escape(name)}</title>')
        if len(points) > 1:
            self._add(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="1.6"/>')
        for x, y, e in points:
            cx = self.px(x)
            if e > 0:
                lo, hi = self.py(y - e), self.py(y + e)
                self._add(_line(cx, lo, cx, hi, color, 1.2))
                self._add(_line(cx - 3, lo, cx + 3, lo, color, 1.2))
                self._add(_line(cx - 3, hi, cx + 3, hi, color, 1.2))
            self._add(f'<circle cx="{_n(cx)}" cy="{_n(self.py(y))}" r="3.2" fill="{color}"/>')
        self._add("</g>")

    def band_line(self, name: str, color: str, segments: Sequence[tuple[float, float, float, float, float, float]],
                  steps: Sequence[tuple[float, str]] = ()) -> None:
        """A line in pieces with its band: each segment (x0, x1, y0, y1, below, above) draws the line from (x0, y0)
        to (x1, y1) over a translucent band from below to above it; ``steps`` are (x, text) marks at a jump of the
        line, a triangle on the top edge with the text as its tooltip."""
        self._add(f'<g data-series="{escape(name)}"><title>{escape(name)}</title>')
        for x0, x1, y0, y1, below, above in segments:
            band = [(x0, y0 + above), (x1, y1 + above), (x1, y1 - below), (x0, y0 - below)]
            points = " ".join(f"{_n(self.px(x))},{_n(self.py(y))}" for x, y in band)
            self._add(f'<polygon points="{points}" fill="{color}" fill-opacity="0.18" stroke="none"/>')
            self._add(f'<polyline points="{_n(self.px(x0))},{_n(self.py(y0))} {_n(self.px(x1))},{_n(self.py(y1))}" '
                      f'fill="none" stroke="{color}" stroke-width="1.6"/>')
        for x, text in steps:
            px = self.px(x)
            tip = escape(f"{name}: {text}")
            self._add(f'<path data-step="{escape(text)}" d="M{_n(px - 4)},{_n(self.top)} '
                      f'L{_n(px + 4)},{_n(self.top)} L{_n(px)},{_n(self.top + 7)} Z" fill="{color}">'
                      f'<title>{tip}</title></path>')
        self._add("</g>")

    def message(self, text: str) -> None:
        """An empty plot: a light frame and a centred message in place of the data."""
        self._add(f'<rect x="{_n(self.left)}" y="{_n(self.top)}" width="{_n(self.width)}" '
                  f'height="{_n(self.height)}" fill="#fafafa" stroke="{GRID}"/>')
        self._add(_text(self.left + self.width / 2, self.top + self.height / 2, text, anchor="middle", fill=MUTED))


class Canvas:
    """One ``<svg>`` of ``width`` x ``height`` pixels (it scales down with the page: viewBox, CSS max-width)."""

    def __init__(self, width: float, height: float, title: str = "") -> None:
        self.width, self.height, self.title = width, height, title
        self.parts: list[str] = []
        if title:
            self.parts.append(_text(width / 2, 16, title, size=TITLE_SIZE, anchor="middle",
                                    extra=' font-weight="600"'))

    def subtitle(self, text: str) -> None:
        """A muted line under the title."""
        self.parts.append(_text(self.width / 2, 33, text, size=LABEL_SIZE - 1, anchor="middle", fill=MUTED))

    def panel(self, left: float, top: float, right: float, bottom: float, *,
              xlim: tuple[float, float] = (0.0, 1.0), ylim: tuple[float, float] = (0.0, 1.0)) -> Panel:
        """A plot area with the given margins from the canvas edges (pixels)."""
        return Panel(self, (left, top, self.width - left - right, self.height - top - bottom), xlim, ylim)

    def legend(self, x: float, y: float, items: Sequence[tuple[str, str]], *, horizontal: bool = False,
               marker: str = "square") -> None:
        """Colour keys (name, colour) from (x, y), one per line, or in a row when ``horizontal``; ``marker`` is
        'square' (bars) or 'line' (series)."""
        for name, color in items:
            if marker == "line":
                self.parts.append(_line(x, y, x + 14, y, color, 2))
                self.parts.append(f'<circle cx="{_n(x + 7)}" cy="{_n(y)}" r="3" fill="{color}"/>')
            else:
                self.parts.append(_rect(x + 2, y - 5, 10, 10, color))
            shown = fit(name, LEGEND_TEXT_PX, LABEL_SIZE - 1)
            self.parts.append(_text(x + 19, y, shown, size=LABEL_SIZE - 1))
            if horizontal:
                x += 34 + text_width(shown, LABEL_SIZE - 1)
            else:
                y += 17

    @contextmanager
    def group(self, **data: object) -> Iterator[None]:
        """Whatever is drawn inside the ``with`` goes in one ``<g>`` with these ``data-*`` attributes."""
        self.parts.append("<g" + _data(data) + ">")
        yield
        self.parts.append("</g>")

    def message(self, text: str) -> None:
        """The whole canvas is an empty plot with this message."""
        self.panel(40, 34, 40, 24).message(text)

    def render(self, **data: object) -> str:
        """The ``<svg>`` element; keyword arguments become ``data-*`` attributes (``bucket_s=1`` ->
        ``data-bucket-s="1"``), facts about the chart a test or a script can read."""
        attrs = f' aria-label="{escape(self.title)}"' if self.title else ""
        attrs += _data(data)
        return (f'<svg viewBox="0 0 {_n(self.width)} {_n(self.height)}" width="{_n(self.width)}" '
                f'height="{_n(self.height)}" role="img"{attrs} font-family="{escape(FONT)}">'
                + "".join(self.parts) + "</svg>")


def legend_width(names: Sequence[str]) -> float:
    """The width a vertical legend of these names takes."""
    return 24 + min(LEGEND_TEXT_PX, max((text_width(n, LABEL_SIZE - 1) for n in names), default=0))
