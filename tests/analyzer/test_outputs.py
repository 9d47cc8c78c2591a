"""Analyzer re-runs are idempotent: a failed run leaves the previous output, a killed one is finished by the next run,
and nothing in DIR that the analyzer did not write is touched."""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jitrace.analyzer import errors
from jitrace.analyzer.analyze import analyze
from jitrace.analyzer.notebook import open_output
from jitrace.analyzer.outputs import COMPLETE, KNOWN_OUTPUTS, MANIFEST, STAGING


@pytest.fixture
def demo_dir(lab_mixed_output, tmp_path) -> Path:
    """Laid out like ``jitrace demo``'s folder: the lab's inputs in DIR/lab, plus a file and a folder of the user's."""
    folder = tmp_path / "demo"
    shutil.copytree(lab_mixed_output.parent / "lab", folder / "lab")
    (folder / "notes.txt").write_text("my notes\n")
    (folder / "mine").mkdir()
    (folder / "mine" / "plot.png").write_bytes(b"\x89PNG user bytes")
    return folder


def _inputs(folder: Path) -> list[str]:
    return [str(folder / "lab" / p) for p in ("spans", "logs") if (folder / "lab" / p).is_dir()]


def _content(out: Path) -> dict:
    """What a user reads from an output, compared by content (the DuckDB file's bytes differ run to run)."""
    o = open_output(out)
    summary = dict(o.summary)
    with duckdb.connect(str(out / "jitrace.duckdb"), read_only=True) as con:
        counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                  for t in ("spans", "logs", "attributions", "clock_offsets")}
    # the parts must agree with each other: a mix of two runs' files would not
    assert counts["spans"] == summary["spans"] and counts["logs"] == summary["logs"]
    assert counts["attributions"] == summary["denials"] == len(o.attributions)
    return {"summary": summary, "counts": counts,
            "attributions": o.attributions.to_dict("records"),
            "clock_offsets": o.clock_offsets.to_dict("records"),
            "csv": pd.read_csv(out / "attributions.csv").shape,
            "manifest": json.loads((out / MANIFEST).read_text())["files"]}


def _same(a, b) -> bool:
    """Equal to the bit (NaN equals NaN): the clock offsets are solved in Python from edges read in a fixed order
    (analyzer/steps/offsets.py), and nothing the outputs hold comes from a float sum whose order varies."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return bool(a == b) if not (pd.isna(a) is True and pd.isna(b) is True) else True


def _user_files_intact(folder: Path, lab_copy: Path) -> None:
    assert (folder / "notes.txt").read_text() == "my notes\n"
    assert (folder / "mine" / "plot.png").read_bytes() == b"\x89PNG user bytes"
    mine = sorted(p.relative_to(folder / "lab") for p in (folder / "lab").rglob("*"))
    assert mine == sorted(p.relative_to(lab_copy) for p in lab_copy.rglob("*"))


def _siblings(folder: Path) -> list[str]:
    """What a run left behind: folders beside DIR (older versions staged there) or a staging folder inside it."""
    beside = [p.name for p in folder.parent.iterdir() if p.name.startswith(folder.name + ".")]
    inside = [p.name for p in folder.iterdir() if p.name.startswith(STAGING)] if folder.is_dir() else []
    return sorted(beside + inside)


def test_rerun_gives_the_same_content_and_keeps_the_users_files(demo_dir, lab_mixed_output):
    analyze(_inputs(demo_dir), demo_dir, quiet=True)
    first = _content(demo_dir)
    analyze(_inputs(demo_dir), demo_dir, quiet=True)
    assert _same(_content(demo_dir), first)
    assert first["summary"]["denials"] > 0
    _user_files_intact(demo_dir, lab_mixed_output.parent / "lab")
    assert "lab" not in first["manifest"] and "notes.txt" not in first["manifest"]
    assert _siblings(demo_dir) == []  # no temp folder left behind


def test_a_failed_run_leaves_the_previous_output(demo_dir):
    analyze(_inputs(demo_dir), demo_dir, quiet=True)
    before = _content(demo_dir)
    with pytest.raises(errors.UserError):
        analyze([str(demo_dir / "no-such-file.parquet")], demo_dir, quiet=True)
    assert _same(_content(demo_dir), before)
    assert _siblings(demo_dir) == []


def test_leftovers_of_dead_runs_are_finished_or_removed(demo_dir, tmp_path):
    """A run killed while moving its files leaves a complete staging folder: the next run (even one that fails)
    finishes the move first. An incomplete staging folder of a dead run is removed."""
    dead = _dead_pid()
    analyze(_inputs(demo_dir), demo_dir, quiet=True)
    before = _content(demo_dir)
    analyze(_inputs(demo_dir)[:1], tmp_path / "other", quiet=True)  # another output, moved half-way into DIR
    staging = demo_dir / f"{STAGING}{dead}"
    shutil.copytree(tmp_path / "other", staging)
    (staging / COMPLETE).write_text("")
    os.replace(staging / "summary.json", demo_dir / "summary.json")  # the move began: DIR is a mix of two runs
    (demo_dir / f"{STAGING}{_dead_pid()}").mkdir()  # and an incomplete one
    with pytest.raises(errors.UserError):
        analyze([str(tmp_path / "no-such-file.parquet")], demo_dir, quiet=True)
    assert _same(_content(demo_dir), _content(tmp_path / "other")) and not _same(before, _content(tmp_path / "other"))
    assert _siblings(demo_dir) == []


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _cli(inputs: list[str], out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "jitrace.analyzer.cli", "analyze", *inputs, "--out", str(out),
                             "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_sigkill_at_random_points_leaves_one_whole_output(demo_dir, lab_mixed_output):
    """Two different inputs alternate (spans+logs, spans only), so a mix of two runs' files would be caught."""
    from jitrace.analyzer import outputs

    inputs_a = _inputs(demo_dir)
    inputs_b = inputs_a[:1]
    proc = _cli(inputs_b, demo_dir)
    started = time.monotonic()
    assert proc.wait(timeout=120) == 0
    full = time.monotonic() - started
    content_b = _content(demo_dir)
    proc = _cli(inputs_a, demo_dir)
    assert proc.wait(timeout=120) == 0
    content_a = _content(demo_dir)
    assert content_a["summary"]["logs"] != content_b["summary"]["logs"]
    rng = random.Random(7)
    for round_ in range(8):
        proc = _cli(inputs_b if round_ % 2 == 0 else inputs_a, demo_dir)
        time.sleep(rng.uniform(0.2, full * 1.1))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        outputs.recover(demo_dir)  # what the next run does first: a move the kill cut short is finished
        got = _content(demo_dir)
        assert _same(got, content_a) or _same(got, content_b), f"round {round_}: not one run's whole output"
        _user_files_intact(demo_dir, lab_mixed_output.parent / "lab")
    proc = _cli(inputs_a, demo_dir)  # the next run removes every leftover
    assert proc.wait(timeout=120) == 0
    assert _same(_content(demo_dir), content_a)
    assert _siblings(demo_dir) == []


def test_a_private_dir_stays_private_and_a_symlinked_dir_stays_a_link(demo_dir, tmp_path):
    analyze(_inputs(demo_dir), demo_dir, quiet=True)
    demo_dir.chmod(0o700)
    link = tmp_path / "link"
    link.symlink_to(demo_dir)
    analyze(_inputs(demo_dir), link, quiet=True)
    assert link.is_symlink() and link.resolve() == demo_dir.resolve()
    assert (demo_dir.stat().st_mode & 0o777) == 0o700
    assert open_output(link).summary["denials"] > 0
    assert _siblings(demo_dir) == [] and _siblings(link) == []


_NAMES = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\0"),
                 min_size=1, max_size=12).filter(lambda n: n not in (".", ".."))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dir_name=_NAMES, user=st.dictionaries(_NAMES, st.binary(max_size=20), max_size=5),
       old_own=st.sets(st.sampled_from(sorted(KNOWN_OUTPUTS - {MANIFEST}) + ["extra.txt"]), max_size=3),
       new_own=st.dictionaries(st.sampled_from(sorted(KNOWN_OUTPUTS - {MANIFEST}) + ["other.bin"]),
                               st.binary(max_size=20), min_size=1, max_size=4))
def test_publish_keeps_exactly_the_users_entries(tmp_path_factory, dir_name, user, old_own, new_own):
    """Any folder name (glob characters included), any user entries: after a publish DIR holds the new run's files,
    every user entry byte for byte, and none of the old run's output files; no leftover is left."""
    from jitrace.analyzer.outputs import staged

    base = tmp_path_factory.mktemp("publish")
    final = base / dir_name
    final.mkdir()
    for name in old_own:
        (final / name).write_bytes(b"old run")
    (final / MANIFEST).write_text(json.dumps({"files": sorted(old_own)}))
    user = {n: b for n, b in user.items() if n not in old_own | KNOWN_OUTPUTS | set(new_own) and
            not n.startswith(STAGING)}
    for name, data in user.items():
        (final / name).write_bytes(data)
    (final / f"{STAGING}{_dead_pid()}").mkdir()  # a dead run's leftover
    with staged(final) as tmp:
        for name, data in new_own.items():
            (tmp / name).write_bytes(data)
    got = {p.name: p.read_bytes() for p in final.iterdir() if p.name != MANIFEST}
    # a manifest claims output names only: a name analyze never writes ("extra.txt") stays, whatever it lists
    claimed_in_vain = {n: b"old run" for n in old_own - KNOWN_OUTPUTS if n not in new_own}
    assert got == {**user, **claimed_in_vain, **new_own}
    assert sorted(json.loads((final / MANIFEST).read_text())["files"]) == sorted(new_own)
    assert _siblings(final) == []


def test_attribution_files_keep_the_tables_order_across_row_groups(tmp_path, monkeypatch):
    # The steps run with preserve_insertion_order off; a table of many row groups then comes out of a COPY in no set
    # order unless outputs.tables_written turns it back on (at 16,384 rows a group, from 16k denials on).
    from jitrace.analyzer import outputs
    from jitrace.analyzer.analyze import ATTRIBUTION_COLUMNS
    from jitrace.analyzer.steps import database, session

    monkeypatch.setattr(database, "ROW_GROUP_SIZE", 2048)
    con = session.connect(tmp_path / "jitrace.duckdb")
    columns = ", ".join(f"'{name}' AS {name}" for name in ATTRIBUTION_COLUMNS if name not in ("time", "trace_id"))
    con.execute(f"CREATE TABLE attributions AS SELECT make_timestamp(i * 1000) AS time, "
                f"printf('%032x', i) AS trace_id, {columns}, repeat('x', (i % 500)::INTEGER) AS padding "
                "FROM range(40000) AS r(i) ORDER BY i")
    con.execute("CREATE TABLE clock_offsets AS SELECT 'host' AS domain, 0 AS window_start")
    assert con.execute("SELECT count(DISTINCT row_group_id) FROM pragma_storage_info('attributions')").fetchone()[0] > 8
    out = tmp_path / "out"
    out.mkdir()
    with outputs.tables_written(con, out, ATTRIBUTION_COLUMNS):
        pass
    for name in ("attributions.csv", "attributions.parquet"):
        times = [t for (t,) in duckdb.sql(f"SELECT time FROM '{out / name}'").fetchall()]
        assert len(times) == 40000 and times == sorted(times), name
