"""Compaction of the receiver's files: one file per hour with the span facts, the same records, and no record
stored twice or lost when a crash interrupts it at any step."""

from __future__ import annotations

import shutil

import duckdb
import pytest
from spanfactory import T0, Token, World

from jitrace.analyzer.load import load_into
from jitrace.analyzer.steps import session, spans_view
from jitrace.collect import Receiver, compact
from jitrace.collect._writer import Writer


def _written(tmp_path, batches: int = 4):
    """The receiver's small files for a world of calls, one commit per batch, and the rows written."""
    world = World(offsets={"server-host": 3.0})
    token = Token(iat=T0, exp=T0 + 300, jti="t-1")
    for i in range(12):
        world.call(T0 + 1 + i, token if i % 3 else None)
    rows = world.tuples()
    writer = Writer(tmp_path)
    for b in range(batches):
        writer.write("spans", rows[b::batches])
    (folder,) = list((tmp_path / "spans").iterdir())
    return folder, rows


def _analysis(out) -> tuple[list, list]:
    con = session.connect()
    load_into(con, [str(out)])
    session.run_queries(con)
    facts = ", ".join(spans_view.fact_columns(con))
    return (con.execute(f"SELECT span_id, {facts} FROM spans ORDER BY span_id").fetchall(),
            con.execute("SELECT span_id, cause, rule, evidence FROM attributions ORDER BY span_id").fetchall())


def test_an_hour_becomes_one_file_with_the_facts_and_the_analysis_is_unchanged(tmp_path):
    folder, rows = _written(tmp_path / "out")
    before = _analysis(tmp_path / "out")
    assert len(list(folder.glob("*.parquet"))) == 4
    files, records = compact.compact_folder(duckdb.connect(), folder, "spans")
    assert (files, records) == (4, len(rows))
    (only,) = list(folder.glob("*.parquet"))
    con = duckdb.connect()
    assert only.name.startswith(compact.PREFIX)
    assert spans_view.has_facts(con, spans_view.parquet_columns(con, [str(only)])[str(only)])
    assert _analysis(tmp_path / "out") == before
    assert len(before[1]) == 4  # the denied calls: the analysis compared is not empty


def test_the_denied_spans_come_first_so_a_filter_on_denied_skips_the_other_row_groups(tmp_path):
    folder = tmp_path / "spans" / "hour=2025-01-01T00"
    folder.mkdir(parents=True)
    con = duckdb.connect()
    # 300,000 spans (3 row groups), one in 50 denied, in small files as the receiver writes them (denials spread out)
    for f in range(4):
        con.execute(f"""COPY (SELECT format('{{:032x}}', i) AS trace_id, format('{{:016x}}', i) AS span_id,
                NULL::VARCHAR AS parent_span_id, 'svc/M' AS name, 'SERVER' AS kind, i AS start_ns, i + 1 AS end_ns,
                'UNSET' AS status_code, NULL::VARCHAR AS status_message, 'svc' AS service, '{{}}' AS resource,
                json_object('rpc.grpc.status_code', CASE WHEN i % 50 = 0 THEN 7 ELSE i % 5 END)::VARCHAR AS attributes,
                '[]' AS events, '[]' AS links, NULL::VARCHAR AS scope, 'test' AS source
            FROM range({f * 75000}, {(f + 1) * 75000}) AS r(i)) TO '{folder}/{f:032x}.parquet' (FORMAT parquet)""")
    compact.compact_folder(con, folder, "spans")
    (only,) = list(folder.glob("*.parquet"))
    denied = [r[0] for r in con.execute(f"SELECT denied FROM '{only}'").fetchall()]
    assert denied == sorted(denied, reverse=True) and sum(denied) == 6000
    # DuckDB's row group statistics: every row group but the first holds no denial, so the filter skips them
    stats = con.execute(f"""SELECT stats_max FROM parquet_metadata('{only}') WHERE path_in_schema = 'denied'
                            ORDER BY row_group_id""").fetchall()
    assert stats[0] == ("true",) and len(stats) > 1 and set(stats[1:]) == {("false",)}


@pytest.mark.parametrize("crash_after", ["write", "rename"])
def test_a_crash_during_compaction_stores_no_record_twice_and_a_restart_cleans_up(tmp_path, crash_after):
    out = tmp_path / "out"
    folder, rows = _written(out)
    kept = tmp_path / "kept"
    shutil.copytree(folder, kept)
    compact.compact_folder(duckdb.connect(), folder, "spans")
    (compacted,) = list(folder.glob("*.parquet"))
    for f in kept.iterdir():  # the crash: the replaced files were never removed
        shutil.copy(f, folder / f.name)
    if crash_after == "write":  # ... nor the new file renamed into place: it is still a .tmp
        compacted.rename(compacted.with_name(compacted.name + compact.TMP_SUFFIX))
    con = duckdb.connect()
    report = load_into(con, [str(out)])
    ids = [r[0] for r in con.execute("SELECT span_id FROM spans").fetchall()]
    assert report.spans == len(ids) == len(set(ids)) == len(rows)

    receiver = Receiver(out, "127.0.0.1:0", None)
    receiver.start()
    receiver.stop()
    left = sorted(p.name for p in folder.iterdir())
    if crash_after == "write":  # the unfinished compaction is dropped; the small files hold everything
        assert left == sorted(f.name for f in kept.iterdir())
    else:  # the compaction was done: what it replaced is removed
        assert left == [compacted.name]
    con = duckdb.connect()
    load_into(con, [str(out)])
    assert sorted(r[0] for r in con.execute("SELECT span_id FROM spans").fetchall()) == sorted(ids)


def test_compact_only_compacts_a_folder_an_earlier_receiver_left(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "out"
    folder, rows = _written(out)  # small files, as a receiver killed before its clean stop leaves them
    jitrace = Path(sys.executable).parent / "jitrace"
    run = subprocess.run([str(jitrace), "collect", "--out", str(out), "--compact-only"], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0 and f"compacted 4 files ({len(rows)} records)" in run.stderr, run.stderr
    (only,) = list(folder.glob("*.parquet"))
    assert only.name.startswith(compact.PREFIX)
    con = duckdb.connect()
    load_into(con, [str(out)])
    assert sorted(r[0] for r in con.execute("SELECT span_id FROM spans").fetchall()) == sorted(r[1] for r in rows)
    missing = subprocess.run([str(jitrace), "collect", "--out", str(tmp_path / "nowhere"), "--compact-only"],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1 and "nowhere" in missing.stderr


def test_one_compactor_at_a_time_per_folder(tmp_path):
    import fcntl

    out = tmp_path / "out"
    folder, _ = _written(out)
    with open(out / compact.LOCK_NAME, "a") as held:  # another process compacting this folder
        fcntl.flock(held, fcntl.LOCK_EX)
        assert compact.Compactor(out).run(everything=True) is False
        assert compact.finish(out) == 0
        assert len(compact.small_files(folder)) == 4  # untouched while the other one works
    assert compact.Compactor(out).run(everything=True) is True
    assert compact.small_files(folder) == []
