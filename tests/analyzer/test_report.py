"""report.html is self-contained (four inline SVG plots, nothing to fetch), opens in headless Chromium with every
plot rendered (a screenshot is kept), and the terminal table names causes, counts, top offenders and fixes. The
report module loads neither matplotlib nor pandas (half a second of imports the analyzer cannot afford)."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from spanfactory import T0, Token, World

from jitrace.analyzer.analyze import analyze
from jitrace.analyzer.outputs import report

CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")) if p
                 and Path(p).exists()), None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--virtual-time-budget=5000"]


@pytest.fixture(scope="module")
def output(tmp_path_factory) -> Path:
    world = World(offsets={"server-host": 120.0})
    tok = Token(iat=T0, exp=T0 + 3600, sub="alice")
    world.issue(tok, T0)
    for i in range(10):
        world.call(T0 + 1 + i, tok)
    short = Token(iat=T0, exp=T0 + 300, sub="bob")
    world.issue(short, T0)
    world.call(T0 + 250, short)
    world.call(T0 + 20, None)
    world.call(T0 + 30, tok, method="Write", required="orders.write")
    out = tmp_path_factory.mktemp("out")
    folder = out / "input"
    folder.mkdir()
    world.write_parquet(folder / "spans.parquet")
    analyze([str(folder)], out, quiet=True)
    return out


def test_report_is_self_contained_with_four_plots(output):
    page = (output / "report.html").read_text()
    figures = re.findall(r'<figure id="([^"]+)"><svg ([^>]*)>(.*?)</svg><figcaption>', page, re.S)
    assert [f for f, _, _ in figures] == ["denials-over-time", "clock-offsets", "token-ttl", "top-offenders"]
    for _, attrs, body in figures:
        assert 'viewBox="0 0 ' in attrs and re.search("<(rect|circle) ", body) and "<text" in body
    assert "<img" not in page and "data:image" not in page
    assert "http://" not in page and "https://" not in page  # nothing to fetch (inline SVG needs no xmlns)
    assert "clock_drift" in page and "server-host" in page
    assert '<script type="application/json" id="summary-json">' in page and 'id="logs"' in page


def test_the_ttl_histograms_count_every_span_with_a_ttl(output):
    with duckdb.connect(str(output / "jitrace.duckdb"), read_only=True) as con:
        expected = dict(con.execute("SELECT kind, count(*) FROM rpc_spans WHERE jit_token_ttl_s IS NOT NULL "
                                    "AND kind IN ('CLIENT', 'SERVER') GROUP BY kind").fetchall())
        svg = report.plot_ttl(report.ttl_counts(con))
    assert set(expected) == {"CLIENT", "SERVER"}
    for kind, label in (("CLIENT", "at send (client clock)"), ("SERVER", "at check (server clock)")):
        side = svg.split(f'<g data-kind="{kind}">', 1)[1].split('<g data-kind="', 1)[0]
        counts = [float(n) for n in re.findall(r'data-count="([^"]+)"', side)]
        assert sum(counts) == expected[kind] and f"token ttl {label}" in side
        assert {html.unescape(s) for s in re.findall(r'data-series="([^"]+)"', side)} == {"allowed", "denied"}
        assert side.count("<line") > 4  # axes, ticks and the line at 0 s


def test_importing_the_report_loads_no_plotting_library():
    code = ("import sys, jitrace.analyzer.outputs.report; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'matplotlib', 'pandas'}))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_terminal_table(output, capsys):
    analyze([str(output / "input")], output / "again", quiet=False)
    text = capsys.readouterr().out
    assert re.search(r"clock_drift\s+1\s", text) and re.search(r"policy_mismatch\s+1\s", text)
    assert "principals: bob (1)" in text and "NTP/chrony on host server-host" in text
    assert "methods:    Write (1)" in text


def test_report_opens_in_headless_chromium(output, tmp_path):
    if CHROMIUM is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is required in CI (apt-get install -y chromium)")
        pytest.skip("chromium not installed: apt-get install -y chromium")
    url = (output / "report.html").as_uri()
    dom = subprocess.run([CHROMIUM, *FLAGS, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert re.search(r'<body [^>]*data-plots-loaded="4"', dom.stdout)  # every plot's <svg> laid out, with shapes
    assert "Why were these calls denied?" in dom.stdout
    shot = tmp_path / "report.png"
    run = subprocess.run([CHROMIUM, *FLAGS, f"--screenshot={shot}", "--window-size=1200,1600", url],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    import matplotlib.image  # only here, to read the PNG: the report itself does not use matplotlib

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (1600, 1200) and pixels.std() > 0.05  # not a blank page
    keep = os.environ.get("JITRACE_SCREENSHOT_DIR")
    if keep:
        shutil.copy(shot, Path(keep) / "report.png")
