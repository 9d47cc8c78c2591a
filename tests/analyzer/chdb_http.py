"""A stand-in for a ClickHouse server's HTTP interface, answered by chdb in this process: enough of the protocol for
clickhouse-connect (the query in the body or the URL, the settings and database as URL parameters, the result in
the FORMAT the query names, inserts as a FORMAT's data in the body, errors as HTTP 500), so the tests drive
``clickhouse://`` through the real client library without a server. It is not ClickHouse's server: what it proves
is jitrace's side of the wire (test_clickhouse_server.py, with JITRACE_CLICKHOUSE_URL, tests a real one)."""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# URL parameters that steer the transport, not the query
TRANSPORT = {"query", "query_id", "database", "session_id", "default_format", "wait_end_of_query", "compress",
             "decompress", "enable_http_compression", "send_progress_in_http_headers",
             "http_headers_progress_interval_ms", "cancel_http_readonly_queries_on_client_close", "user", "password",
             "session_timeout", "session_check", "client_protocol_version"}
FORMAT = re.compile(r"\s+FORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE)


@contextmanager
def serving(path: str) -> Iterator[str]:
    """Serve a chdb session on ``path`` over HTTP on loopback; yields ``clickhouse://default@127.0.0.1:PORT``."""
    from chdb import session

    chdb = session.Session(f"{path}?progress=off")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self._answer(b"")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self._answer(self.rfile.read(length) if length else b"")

        def _reply(self, code: int, data: bytes, fmt: str) -> None:
            self.send_response(code)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-ClickHouse-Format", fmt)
            self.send_header("X-ClickHouse-Timezone", "UTC")
            self.send_header("X-ClickHouse-Summary", json.dumps({"read_rows": "0", "written_rows": "0"}))
            if code != 200:
                self.send_header("X-ClickHouse-Exception-Code", "1")
            self.end_headers()
            self.wfile.write(data)

        def _answer(self, body: bytes) -> None:
            params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
            query, data = (params["query"], body) if "query" in params else (body.decode(), b"")
            match = FORMAT.search(query)
            fmt = match.group(1) if match else params.get("default_format", "TabSeparated")
            sql = query[:match.start()] if match else query
            try:
                with lock:
                    for name, value in params.items():
                        if name not in TRANSPORT:
                            chdb.query(f"SET {name} = {value}" if re.fullmatch(r"-?\d+", value)
                                       else f"SET {name} = '{value}'")
                    chdb.query(f"USE `{params.get('database') or 'default'}`")
                    if data:  # an insert: the rows in the body, in the FORMAT it names
                        with tempfile.NamedTemporaryFile(delete=False) as f:
                            f.write(data)
                        try:
                            target = re.match(r"\s*INSERT\s+INTO\s+(.*?)\s*$", sql, re.IGNORECASE | re.DOTALL)
                            chdb.query(f"INSERT INTO {target.group(1)} SELECT * FROM file('{f.name}', '{fmt}')")
                        finally:
                            os.unlink(f.name)
                        out = b""
                    else:
                        out = chdb.query(sql, fmt).bytes()
            except Exception as exc:  # ClickHouse's error text, as a server sends it
                self._reply(500, str(exc).encode(), fmt)
                return
            self._reply(200, out, fmt)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="chdb-http", daemon=True)
    thread.start()
    try:
        yield f"clickhouse://default@127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
        chdb.close()
