"""The ``spans`` view: Parquet read in place, the facts collect's compaction wrote read as they are, every other
input given the same facts by queries/span_facts.sql, so the analysis does not depend on where a span came from."""

from __future__ import annotations

import itertools
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from fresh_process import analysis_in_fresh_process
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from spanfactory import T0, Token, World

from jitrace.analyzer import analyze
from jitrace.analyzer.errors import UserError
from jitrace.analyzer.load import load_into
from jitrace.analyzer.steps import session, spans_view
from jitrace.collect._writer import Writer
from jitrace.collect.compact import Compactor


def _world(offset_s: float, ttl_s: float, stream_at: float | None) -> World:
    """Allowed calls, an expired token, a policy mismatch, an unauthenticated call and a stream checked later."""
    world = World(offsets={"server-host": offset_s})
    token = Token(iat=T0, exp=T0 + ttl_s, jti="tok-1")
    world.issue(token, T0)
    for i in range(3):
        world.call(T0 + 1 + i, token)
    world.call(T0 + ttl_s + 3700, token)  # expired whatever the server clock's offset (at most 1 h)
    world.call(T0 + 2, token, method="Write", required="orders.write", granted=["orders.read"])
    world.call(T0 + 3, None)
    if stream_at is not None:
        world.call(T0 + 1, token, stream_checks=(stream_at,))
    return world


def _collect(world: World, out: Path) -> None:
    """The files `jitrace collect` leaves: a small file per commit, compacted with the facts at its stop."""
    Writer(out).write("spans", world.tuples())
    Compactor(out).run(everything=True)


def _three_ways(world: World, tmp: Path) -> dict[str, duckdb.DuckDBPyConnection]:
    """The world's spans as loaded rows, as plain Parquet (no facts) and as the files `jitrace collect` leaves."""
    cons = {}
    cons["rows"] = session.connect()
    world.load(cons["rows"])
    plain = world.write_parquet(tmp / "plain.parquet")
    cons["plain"] = session.connect()
    load_into(cons["plain"], [str(plain)])
    _collect(world, tmp / "collected")
    cons["collected"] = session.connect()
    load_into(cons["collected"], [str(tmp / "collected")])
    return cons


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(offset_s=st.floats(-3600, 3600), ttl_s=st.floats(30, 3600), stream_at=st.none() | st.floats(0, 4000))
def test_the_facts_and_the_attributions_do_not_depend_on_how_spans_arrived(tmp_path_factory, offset_s, ttl_s,
                                                                           stream_at):
    tmp = tmp_path_factory.mktemp("views")
    cons = _three_ways(_world(offset_s, ttl_s, stream_at), tmp)
    facts = ", ".join(spans_view.fact_columns(next(iter(cons.values()))))
    results = {}
    for how, con in cons.items():
        session.run_queries(con)
        results[how] = (
            con.execute(f"SELECT span_id, service, {facts} FROM spans ORDER BY span_id").fetchall(),
            con.execute("SELECT trace_id, span_id, cause, rule, evidence FROM attributions "
                        "ORDER BY span_id").fetchall(),
        )
        con.close()
    assert results["plain"] == results["rows"]
    assert results["collected"] == results["rows"]
    spans, attributions = results["rows"]
    assert len(spans) > 0 and len(attributions) >= 3  # expired, policy mismatch, unauthenticated at least


def test_collect_leaves_the_facts_in_its_files_and_the_view_reads_them_from_there(tmp_path):
    world = _world(0.0, 300.0, None)
    _collect(world, tmp_path)
    written = list((tmp_path / "spans").rglob("*.parquet"))
    assert len(written) == 1  # one batch, one arrival hour: one file, whatever hours the spans' own times fall in
    con = session.connect()
    for path in written:
        columns = spans_view.parquet_columns(con, [str(path)])[str(path)]
        assert set(spans_view.fact_columns(con)) <= set(columns)
        assert spans_view.has_facts(con, columns)
    load_into(con, [str(tmp_path)])
    assert len(con.execute("SELECT path FROM span_files").fetchall()) == 1  # read in place, not copied
    assert con.execute("SELECT count(*) FROM span_rows").fetchone()[0] == 0
    plan = "\n".join(r[1] for r in con.execute("EXPLAIN SELECT jit_token_ttl_s FROM spans").fetchall())
    assert "from_json" not in plan  # read from the file's column, not parsed again
    (ttls,) = con.execute("SELECT count(jit_token_ttl_s) FROM spans WHERE kind = 'SERVER'").fetchone()
    assert ttls == sum(1 for r in world.rows if r["kind"] == "SERVER" and '"jit.token.ttl_s"' in r["attributes"])


@pytest.mark.parametrize("compacted_first", [True, False])
def test_jitrace_duckdb_keeps_every_span_when_collect_compacts_its_inputs_later(tmp_path, compacted_first):
    # analyze may run while collect runs: its small files are copied (compaction deletes them), its compacted files
    # read in place (never deleted); either way notebooks still read every span afterwards
    world = _world(2.0, 300.0, 100.0)
    Writer(tmp_path / "in").write("spans", world.tuples())
    if compacted_first:
        Compactor(tmp_path / "in").run(everything=True)
    summary = analyze.analyze([str(tmp_path / "in")], tmp_path / "out", quiet=True)
    Compactor(tmp_path / "in").run(everything=True)
    con = duckdb.connect(str(tmp_path / "out" / "jitrace.duckdb"), read_only=True)
    kinds = dict(con.execute("SELECT table_name, table_type FROM information_schema.tables "
                             "WHERE table_name IN ('spans', 'span_rows', 'attributions')").fetchall())
    assert kinds == {"spans": "VIEW", "span_rows": "BASE TABLE", "attributions": "BASE TABLE"}
    assert con.execute("SELECT count(*) FROM spans").fetchone()[0] == summary["spans"] == len(world.rows)
    assert con.execute("SELECT count(*) FROM rpc_spans").fetchone()[0] > 0
    copied = con.execute("SELECT count(*) FROM span_fact_rows").fetchone()[0]
    assert copied == (0 if compacted_first else len(world.rows))
    assert con.execute("SELECT count(*) FROM span_rows").fetchone()[0] == 0  # stored with their facts instead


def test_loaded_rows_get_their_facts_once_denied_first(tmp_path):
    # issue 23: spans copied in (text files, Parquet without facts) are stored with their typed facts, as
    # compaction writes its files, so the steps read columns instead of parsing each span's JSON again, and a
    # filter on `denied` meets those first
    world = _world(2.0, 300.0, 100.0)
    path = world.write_parquet(tmp_path / "spans.parquet")  # the spans schema without the facts: copied in
    con = duckdb.connect()
    load_into(con, [str(path)])
    plan = "\n".join(r[1] for r in con.execute("EXPLAIN SELECT jit_token_ttl_s, domain FROM spans").fetchall())
    assert "from_json" not in plan and "span_fact_rows" in plan
    denied = [r[0] for r in con.execute("SELECT denied FROM span_fact_rows").fetchall()]
    assert any(denied) and denied == sorted(denied, reverse=True)
    assert con.execute("SELECT count(*) FROM spans").fetchone()[0] == len(world.rows)


def test_a_parquet_file_without_span_columns_beside_span_files_is_named(tmp_path):
    world = _world(0.0, 300.0, None)
    Writer(tmp_path).write("spans", world.tuples())
    good = next((tmp_path / "spans").rglob("*.parquet"))
    stranger = good.with_name("stranger.parquet")
    duckdb.sql(f"COPY (SELECT 1 AS trace_id, 2 AS name) TO '{stranger}' (FORMAT parquet)")
    with pytest.raises(UserError, match=r"stranger\.parquet"):
        load_into(session.connect(), [str(tmp_path)])


def test_a_damaged_page_in_a_file_read_in_place_is_a_one_line_error(tmp_path):
    """Compacted files are read where they are and the loader reads only their footers: a damaged page is met by
    the first step that reads it, which must say so in one line (and name the step), not fail with a traceback."""
    _collect(_world(0.0, 300.0, None), tmp_path / "in")
    _damage_first_page(sorted((tmp_path / "in").rglob("compacted-*.parquet"))[0], "trace_id")  # every step reads it
    _analysis_fails_in_one_line(tmp_path)


def _damage_first_page(path: Path, column: str) -> None:
    """The header of the column's first data page no longer decodes."""
    meta = pq.read_metadata(path)
    page = meta.row_group(0).column(meta.schema.names.index(column)).data_page_offset
    data = bytearray(path.read_bytes())
    data[page:page + 16] = b"\xff" * 16
    path.write_bytes(bytes(data))


def _analysis_fails_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        analyze.analyze([str(tmp_path / "in")], tmp_path / "out", quiet=True)
    message = str(err.value)
    assert message.startswith("a span file is damaged (found by ") and "\n" not in message
    assert not (tmp_path / "out").exists()  # nothing half written in the output's place


def test_files_read_in_place_and_copied_rows_are_one_view(tmp_path):
    """One load of collect's compacted files (read in place) and of plain Parquet (copied into span_rows): the view
    holds both, and each world's denials are attributed as when it is loaded alone."""
    collected = _world(0.0, 300.0, None)
    plain = World(offsets={"server-host": 5.0})
    plain._ids = itertools.count(10**9)  # ids of its own: both worlds are loaded together
    token = Token(iat=T0, exp=T0 + 600.0, jti="tok-2")
    plain.issue(token, T0)
    plain.call(T0 + 1, token)
    plain.call(T0 + 4000, token)  # expired
    plain.call(T0 + 2, token, method="Write", required="orders.write", granted=["orders.read"])
    plain.call(T0 + 3, None)
    _collect(collected, tmp_path / "collected")
    plain_file = plain.write_parquet(tmp_path / "plain.parquet")
    alone = {}
    for name, path in (("collected", tmp_path / "collected"), ("plain", plain_file)):
        con = session.connect()
        load_into(con, [str(path)])
        session.run_queries(con)
        alone[name] = con.execute("SELECT trace_id, cause, rule FROM attributions").fetchall()
    con = session.connect()
    load_into(con, [str(tmp_path / "collected"), str(plain_file)])
    assert con.execute("SELECT count(*) FROM span_files").fetchone()[0] == len(list((tmp_path / "collected").rglob(
        "compacted-*.parquet")))
    assert con.execute("SELECT count(*) FROM span_fact_rows").fetchone()[0] == len(plain.rows)
    assert con.execute("SELECT count(*) FROM spans").fetchone()[0] == len(collected.rows) + len(plain.rows)
    session.run_queries(con)
    both = con.execute("SELECT trace_id, cause, rule FROM attributions").fetchall()
    assert sorted(both) == sorted(alone["collected"] + alone["plain"]) and len(alone["plain"]) >= 3


def test_one_damaged_footer_among_many_span_files_is_named(tmp_path):
    world = _world(0.0, 300.0, None)
    for i in range(3):
        world.write_parquet(tmp_path / f"part-{i}.parquet")
    damaged = tmp_path / "part-1.parquet"
    data = damaged.read_bytes()
    damaged.write_bytes(data[:-12] + b"\x00" * 8 + data[-4:])  # the footer's length and its last bytes
    with pytest.raises(UserError) as err:
        load_into(session.connect(), [str(tmp_path)])
    assert str(err.value).startswith(f"{damaged}: unreadable Parquet") and "\n" not in str(err.value)


def test_analyzing_collected_files_imports_no_pyarrow(tmp_path):
    """Reading Parquet into DuckDB needs no Arrow: pyarrow's import is 0.07 s of every run (schema.Columns)."""
    _collect(_world(0.0, 300.0, None), tmp_path / "in")
    summary, imported = analysis_in_fresh_process(tmp_path / "in", tmp_path / "out", ("pyarrow",))
    assert summary["denials"] >= 3 and not imported


def test_a_damaged_page_the_report_reads_beside_the_steps_is_a_one_line_error(tmp_path):
    """The report's ttl counts read every span's jit.token.ttl_s on a thread of their own while the steps run: damage
    in an allowed-only hour's ttl column is met by one of them or both, and is one line either way."""
    world = World()
    token = Token(iat=T0, exp=T0 + 3600, jti="tok-1")
    world.issue(token, T0)
    for i in range(3):
        world.call(T0 + 1 + i, token)  # allowed, this hour
    world.call(T0 + 7300, token)  # expired, two hours later: collected by another receiver, another file
    last = world.rows[-1]["trace_id"]
    for name, wanted in (("a", False), ("b", True)):
        batch = [t for t, row in zip(world.tuples(), world.rows, strict=True) if (row["trace_id"] == last) == wanted]
        Writer(tmp_path / "in" / name).write("spans", batch)
        Compactor(tmp_path / "in" / name).run(everything=True)
    allowed_only = [p for p in (tmp_path / "in").rglob("compacted-*.parquet")
                    if not duckdb.connect().execute(f"SELECT bool_or(denied) FROM '{p}'").fetchone()[0]]
    assert len(allowed_only) == 1
    _damage_first_page(allowed_only[0], "jit_token_ttl_s")
    _analysis_fails_in_one_line(tmp_path)


def test_the_json_text_of_stored_spans_is_compressed_as_chosen(tmp_path):
    # the JSON text columns skip DuckDB's analysis of every compression: each is stored as JSON_TEXT_COMPRESSION says
    world = _world(2.0, 300.0, 100.0)
    path = world.write_parquet(tmp_path / "spans.parquet")
    con = session.connect(tmp_path / "jitrace.duckdb", define_view=False)
    load_into(con, [str(path)])
    con.execute("CHECKPOINT")
    stored = con.execute("SELECT DISTINCT column_name, compression FROM pragma_storage_info(?) "
                         "WHERE segment_type = 'VARCHAR'", [spans_view.FACTS_TABLE]).fetchall()
    chosen = {name: kind.lower() for name, kind in stored if name in spans_view.JSON_TEXT_COMPRESSION}
    assert chosen == spans_view.JSON_TEXT_COMPRESSION
    con.close()
