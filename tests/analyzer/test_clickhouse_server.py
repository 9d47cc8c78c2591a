"""A real ClickHouse server over HTTP (clickhouse-connect) gives DuckDB's tables too, when JITRACE_CLICKHOUSE_URL names
one, e.g. ``clickhouse://default@localhost:8123/`` (its password in JITRACE_CLICKHOUSE_PASSWORD); skipped with a
reason otherwise. The tests work in a database of their own, ``jitrace_test_<random>``, dropped at the end: the
user needs to create and drop databases, and the server ClickHouse 24.3 or later."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator

import pytest
from test_clickhouse_parity import assert_parity, clickhouse_run, duckdb_run, every_cause, logs_of

from jitrace.analyzer import cli
from jitrace.analyzer.notebook import open_output

URL = os.environ.get("JITRACE_CLICKHOUSE_URL", "")


@pytest.fixture(scope="module")
def server() -> Iterator[tuple]:
    if not URL:
        pytest.skip("JITRACE_CLICKHOUSE_URL is not set (e.g. clickhouse://default@localhost:8123/): "
                    "no ClickHouse server to test against")
    yield from scratch_database(URL)


def scratch_database(url: str) -> Iterator[tuple]:
    """An engine on the server at ``url``, its source and the name of a scratch database, dropped afterwards."""
    from jitrace.analyzer.engines.clickhouse import HttpEngine, parse_url

    source = parse_url(url)
    engine = HttpEngine(source)
    database = f"jitrace_test_{secrets.token_hex(4)}"
    try:
        yield engine, source, database
    finally:
        engine.run(f"DROP DATABASE IF EXISTS `{database}`")
        engine.close()


@pytest.mark.parametrize("stored", [False, True], ids=["facts-computed", "facts-stored"])
def test_a_server_gives_duckdbs_tables(server, stored):
    engine, _, database = server
    world = every_cause()
    logs = logs_of(world)
    duck = duckdb_run(world.rows, logs, None)
    assert_parity(duck, clickhouse_run(engine, database, world.rows, logs, None, stored=stored))


def test_analyze_a_servers_table_from_the_command_line(server, tmp_path, monkeypatch):
    engine, source, database = server
    world = every_cause()
    clickhouse_run(engine, database, world.rows, logs_of(world), None)  # loads the tables, and checks them
    if source.password:
        monkeypatch.setenv("JITRACE_CLICKHOUSE_PASSWORD", source.password)
    user = f"{source.user}@" if source.user else ""
    url = (f"clickhouse://{user}{source.host}:{source.port}/{database}?table=otel_traces&logs=otel_logs"
           + ("&secure=true" if source.secure else ""))
    out = tmp_path / "out"
    args = ["analyze", url, "--since", "2025-10-09T00:00:00Z", "--until", "2025-10-10T00:00:00Z", "--quiet"]
    assert cli.main([*args, "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["spans"] == len(world.rows) and summary["denials"] == 19
    assert len(open_output(out).attributions) == 19
    left = engine.arrow("SELECT name FROM system.databases WHERE name LIKE 'jitrace_run_%'").column(0).to_pylist()
    assert not [name for name in left if name.startswith(f"jitrace_run_{os.getpid()}_")]
