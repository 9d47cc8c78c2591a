"""report.html is self-contained, opens in headless Chromium with every plot decoded (a screenshot is kept),
and the terminal table names causes, counts, top offenders and fixes."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from spanfactory import T0, Token, World

from jitrace.analyzer.analyze import analyze

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
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 4
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    for fig in ("denials-over-time", "clock-offsets", "token-ttl", "top-offenders"):
        assert f'id="{fig}"' in page
    assert "http://" not in page and "https://" not in page  # nothing to fetch
    assert "clock_drift" in page and "server-host" in page


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
    assert '<body data-plots-loaded="4">' in dom.stdout  # every plot decoded and laid out
    assert "Why were these calls denied?" in dom.stdout
    shot = tmp_path / "report.png"
    run = subprocess.run([CHROMIUM, *FLAGS, f"--screenshot={shot}", "--window-size=1200,1600", url],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (1600, 1200) and pixels.std() > 0.05  # not a blank page
    keep = os.environ.get("JITRACE_SCREENSHOT_DIR")
    if keep:
        shutil.copy(shot, Path(keep) / "report.png")
