"""``clickhouse://`` through clickhouse-connect, the real client library, against chdb behind a stand-in for the
server's HTTP interface (chdb_http.py): the server tests of test_clickhouse_server.py, run here without a server.
What a real server adds (its own HTTP front, authentication, a cluster) needs JITRACE_CLICKHOUSE_URL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from chdb_http import serving
from test_clickhouse_server import (  # noqa: F401  (collected here, with this module's `server`)
    scratch_database,
    test_a_server_gives_duckdbs_tables,
    test_analyze_a_servers_table_from_the_command_line,
)

from jitrace.analyzer import cli

pytestmark = pytest.mark.usefixtures("chdb_installed")


@pytest.fixture(scope="module")
def http_url(chdb_installed, tmp_path_factory) -> Iterator[str]:
    with serving(str(tmp_path_factory.mktemp("chdb-http"))) as url:
        yield url


@pytest.fixture(scope="module")
def server(http_url) -> Iterator[tuple]:
    yield from scratch_database(http_url + "/default")


def test_a_missing_table_on_a_server_is_one_line(http_url, tmp_path, capsys):
    args = ["--since", "2025-10-09", "--until", "2025-10-10", "--out", str(tmp_path / "out")]
    assert cli.main(["analyze", f"{http_url}/nodb?table=otel_traces", *args]) == 2
    err = capsys.readouterr().err
    assert "no database nodb" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_an_unreachable_server_is_one_line(tmp_path, capsys):
    args = ["--since", "2025-10-09", "--until", "2025-10-10", "--out", str(tmp_path / "out")]
    assert cli.main(["analyze", "clickhouse://default@127.0.0.1:9/otel", *args]) == 2  # the discard port
    err = capsys.readouterr().err
    assert "cannot connect" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
