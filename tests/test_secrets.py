"""No raw token, and no part of one that matters, in anything jitrace produces (end to end).

Tokens are minted here with PyJWT (RS256; with and without ``jti``; valid, expired, lacking the role, signed by
another key). An instrumented server and client (plain apps run under ``opentelemetry-instrument``, so OpenTelemetry
and jitrace are switched on as a user would) make real gRPC calls with them, some denied, and log lines quoting the
token: Python logging exported over OTLP logs (the token in the message and in an attribute) and a JSON-lines app log
file. jitrace's Receiver collects the OTLP export; ``jitrace analyze`` reads the collected Parquet and the app log;
the triage notebook is executed against the output.

Then every file produced (collected Parquet, the DuckDB file, attributions csv/parquet, clock_offsets, summary.json,
report.html, the manifest, the executed notebook) and the output of the commands (``jitrace analyze``'s stdout and
stderr, the test process's where the receiver runs, the instrumented apps' stderr) is searched, as raw bytes and,
for Parquet and DuckDB (which compress strings), as the text of every value of every table and view, for each token's:
the whole token; header.payload; the payload segment (the base64 of the claims); the signature segment; and the
header segment. None may appear. With JITRACE_HASH_SUBJECT=true the subject appears nowhere either; without it the
subject does appear in the spans, which shows the search finds what is there.

Run as a script (``python tests/test_secrets.py server|client``) this file is the apps' code.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
ISSUER, AUDIENCE = "jit-issuer", "jit-test"  # plain_service's


# ---------------------------------------------------------------------------------------------------- the apps


def _app_log(record: dict) -> None:
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        record.update(trace_id=f"{ctx.trace_id:032x}", span_id=f"{ctx.span_id:016x}")
    with open(os.environ["JIT_APP_LOG"], "a") as f:
        f.write(json.dumps({"timestamp": time.time(), "level": "WARNING", **record}) + "\n")


def server_main() -> None:
    import plain_service as ps

    log = logging.getLogger("secrets.server")

    class LoudVerifier(ps.Verifier):
        """Logs every denial with the Authorization header it saw: the careless service jitrace must survive."""

        def check(self, metadata, required=ps.PERMISSION):
            denial = super().check(metadata, required)
            if denial is not None:
                auth = next((v for k, v in metadata if k == "authorization" and isinstance(v, str)), "")
                log.warning("denied %s, Authorization: %s", denial.details, auth, extra={"auth.header": auth})
                _app_log({"message": f"denied call; header {auth}", "service": "jit-server",
                          "authorization": auth, "raw": auth.removeprefix("Bearer ")})
            return denial

    with open(os.environ["JIT_PUBLIC_KEY_FILE"], "rb") as f:
        server, port, _ = ps.serve_sync(LoudVerifier(f.read()))
    print(port, flush=True)
    sys.stdin.read()  # the test closes stdin to stop us
    server.stop(None)


def client_main() -> None:
    import plain_client as pc

    with open(os.environ["JIT_TOKENS"]) as f:
        tokens = json.load(f)
    log = logging.getLogger("secrets.client")
    for case, token in tokens.items():
        log.warning("case %s: calling with Bearer %s", case, token, extra={"jwt": token})
        _app_log({"message": f"token={token}", "service": "jit-client", "case": case})
    for row in pc.sync_calls(os.environ["JIT_TARGET"], tokens):
        print(json.dumps(row), flush=True)


# ---------------------------------------------------------------------------------------------------- the test


def _mint(key, subject: str, **claims) -> str:
    import jwt

    now = int(time.time())
    body = {"sub": subject, "iss": ISSUER, "aud": AUDIENCE, "iat": now, "nbf": now, "exp": now + 300,
            "jti": uuid.uuid4().hex, "perms": ["orders:read"], "grant_id": "grant-" + uuid.uuid4().hex[:8],
            "grant_start": now - 60, "grant_end": now + 600, **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm="RS256")


def _tokens(key, other_key, subject: str) -> dict[str, str]:
    now = int(time.time())
    return {
        "ok": _mint(key, subject),
        "ok_no_jti": _mint(key, subject, jti=None),
        "expired": _mint(key, subject, iat=now - 900, nbf=now - 900, exp=now - 60),
        "expired_no_jti": _mint(key, subject, iat=now - 900, nbf=now - 900, exp=now - 60, jti=None),
        "no_role": _mint(key, subject, perms=[]),
        "other_key": _mint(other_key, subject),
    }


def _run_apps(tmp: Path, tokens: dict[str, str], otlp_port: int, app_log: Path, env: dict[str, str]) -> str:
    (tmp / "tokens.json").write_text(json.dumps(tokens))
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "JITRACE_"))}
    base.update({
        "OTEL_TRACES_EXPORTER": "otlp", "OTEL_LOGS_EXPORTER": "otlp", "OTEL_METRICS_EXPORTER": "none",
        "OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED": "true",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp_port}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true", "OTEL_BSP_SCHEDULE_DELAY": "200", "OTEL_BLRP_SCHEDULE_DELAY": "200",
        "JIT_PUBLIC_KEY_FILE": str(tmp.parent / "public.pem"), "JIT_TOKENS": str(tmp / "tokens.json"),
        "JIT_APP_LOG": str(app_log), "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join([str(HERE / "instrumentation"), os.environ.get("PYTHONPATH", "")]),
        **env,
    })
    instrument = [str(VENV_BIN / "opentelemetry-instrument"), sys.executable, str(Path(__file__).resolve())]
    server = subprocess.Popen([*instrument, "server"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env={**base, "OTEL_SERVICE_NAME": "jit-server"})
    killer = threading.Timer(120, server.kill)  # whatever happens, the server does not outlive the test
    killer.start()
    try:
        port = server.stdout.readline().decode().strip()
        assert port.isdigit(), f"server did not start: {port!r} {server.stderr.read().decode()[-2000:]}"
        client = subprocess.run([*instrument, "client"], capture_output=True, timeout=120,
                                env={**base, "OTEL_SERVICE_NAME": "jit-client", "JIT_TARGET": f"127.0.0.1:{port}"})
    finally:
        try:
            server_out, server_err = server.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server_out, server_err = server.communicate()
        killer.cancel()
    assert client.returncode == 0, client.stderr.decode()[-3000:]
    codes = {json.loads(line)["code"] for line in client.stdout.decode().splitlines() if line.startswith("{")}
    assert {"OK", "UNAUTHENTICATED", "PERMISSION_DENIED"} <= codes
    return "\n".join(x.decode(errors="replace") for x in (client.stderr, server_out, server_err))


def _needles(tokens: list[str]) -> dict[str, str]:
    """What must never appear, named for the failure message."""
    found = {}
    for i, token in enumerate(tokens):
        header, payload, signature = token.split(".")
        found |= {f"token {i}": token, f"token {i} header.payload": f"{header}.{payload}",
                  f"token {i} payload": payload, f"token {i} signature": signature, f"token {i} header": header}
    return found


def _texts(path: Path) -> list[str]:
    """The file's bytes as text, and for Parquet and DuckDB the text of every stored value (strings may be
    compressed in the file)."""
    import duckdb
    import pyarrow.parquet as pq

    texts = [path.read_bytes().decode("latin-1")]
    if path.suffix == ".parquet":
        texts.append(json.dumps(pq.read_table(path).to_pylist(), default=str))
    elif path.suffix == ".duckdb":
        with duckdb.connect(str(path), read_only=True) as con:
            names = con.execute("SELECT table_name FROM duckdb_tables() WHERE NOT internal UNION ALL "
                                "SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
            assert {"spans", "logs", "attributions", "clock_offsets"} <= {n for (n,) in names}
            for (name,) in names:
                rows = con.execute(f'SELECT * FROM "{name}"').fetchall()
                texts.append(f"{name}: " + json.dumps(rows, default=str))
    return texts


def _leaks(texts: dict[str, list[str]], needles: dict[str, str]) -> list[str]:
    return [f"{what} in {where}" for where, parts in texts.items() for what, needle in needles.items()
            if any(needle in part for part in parts)]


def test_no_token_in_anything_jitrace_produces(tmp_path, capfd, monkeypatch):
    import nbformat
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from nbclient import NotebookClient

    from jitrace.collect import Receiver

    key, other_key = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2))
    (tmp_path / "public.pem").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    app_log = tmp_path / "app.jsonl"
    subjects = {"plain": f"alice-{uuid.uuid4().hex[:12]}", "hashed": f"bob-{uuid.uuid4().hex[:12]}"}
    tokens: list[str] = []
    app_output: list[str] = []  # the instrumented apps' stderr: where a warning of jitrace's own would go
    for run, env in (("plain", {}), ("hashed", {"JITRACE_HASH_SUBJECT": "true"})):
        receiver = Receiver(tmp_path / "collected" / run, grpc_addr="127.0.0.1:0", http_addr=None)
        otlp_port, _ = receiver.start()
        try:
            minted = _tokens(key, other_key, subjects[run])
            (tmp_path / run).mkdir()
            app_output.append(_run_apps(tmp_path / run, minted, otlp_port, app_log, env))
        finally:
            receiver.stop()
        tokens += minted.values()

    needles = _needles(tokens)
    assert _leaks({"app.jsonl": [app_log.read_text()]}, needles), "the app log (an input) quotes the tokens"

    out = tmp_path / "out"
    analyze = subprocess.run([str(VENV_BIN / "jitrace"), "analyze", str(tmp_path / "collected"), str(app_log),
                              "--out", str(out)], capture_output=True, timeout=300)
    assert analyze.returncode == 0, analyze.stderr.decode()[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["denials"] >= 2 * 4 * 4 and summary["logs"] > 0  # 4 denied cases x 4 shapes x 2 runs

    # every line that quoted a token arrived, from both sources, with the token replaced: the search below is
    # looking at the lines that held the tokens, not at an output that simply dropped them
    import duckdb

    with duckdb.connect(str(out / "jitrace.duckdb"), read_only=True) as con:
        redacted = dict(con.execute(
            "SELECT CASE WHEN source LIKE '%app.jsonl%' THEN 'app log' ELSE 'otlp' END, "
            "count(*) FILTER (WHERE body LIKE '%[REDACTED]%') FROM logs GROUP BY ALL").fetchall())
    assert redacted == {"app log": 2 * (6 + 16), "otlp": 2 * (6 + 16)}  # 6 client lines, 16 denials, 2 runs

    monkeypatch.setenv("JITRACE_OUT", str(out))  # the kernel inherits our environment
    notebook = nbformat.read(HERE.parent / "notebooks" / "triage.ipynb", as_version=4)
    NotebookClient(notebook, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(HERE.parent / "notebooks")}}).execute()
    executed = tmp_path / "executed" / "triage.ipynb"
    executed.parent.mkdir()
    nbformat.write(notebook, executed)

    produced = [p for root in ("collected", "out", "executed") for p in sorted((tmp_path / root).rglob("*"))
                if p.is_file()]
    assert {p.name for p in produced} >= {"jitrace.duckdb", "attributions.csv", "attributions.parquet",
                                          "clock_offsets.parquet", "summary.json", "report.html", "triage.ipynb"}
    assert any("logs" in p.parts for p in produced), "no OTLP logs were collected"
    texts = {str(p.relative_to(tmp_path)): _texts(p) for p in produced}
    captured = capfd.readouterr()
    texts["commands' stdout/stderr"] = [analyze.stdout.decode(errors="replace"),
                                        analyze.stderr.decode(errors="replace"), captured.out, captured.err,
                                        *app_output]
    assert _leaks(texts, needles) == []

    span_texts = {k: v for k, v in texts.items() if "spans" in Path(k).parts}
    assert _leaks(span_texts, {"plain subject": subjects["plain"]}), "an unhashed subject is in the spans"
    assert _leaks(texts, {"hashed subject": subjects["hashed"]}) == []


if __name__ == "__main__":
    {"server": server_main, "client": client_main}[sys.argv[1]]()
