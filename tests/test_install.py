"""A first run as a user makes it: the built wheel (not an editable install) in a fresh virtual environment outside
the repository. The base install is the instrumentation alone, without the analyzer's heavy libraries, and a plain
gRPC server and client, run under ``opentelemetry-instrument`` with only ``OTEL_*`` variables, export ``jit.*``
spans that ``jitrace collect`` (the analyzer extra, here the repository's own environment) stores."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parent.parent
PLAIN = ROOT / "tests" / "instrumentation"
HEAVY = ("duckdb", "pyarrow", "pandas", "numpy", "matplotlib")

pytestmark = pytest.mark.slow


def _run(*cmd: str | Path, **kwargs) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, f"{cmd}: {result.stdout[-2000:]} {result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def base_venv(tmp_path_factory) -> Path:
    """The wheel built from this checkout, installed without extras into a new venv (pins from requirements.lock)."""
    work = tmp_path_factory.mktemp("install")
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", work / "wheels", ROOT)
    (wheel,) = (work / "wheels").glob("jitrace-*.whl")
    (work / "wheel-path").write_text(str(wheel))
    venv = work / "venv"
    _run(sys.executable, "-m", "venv", venv)
    _run(venv / "bin" / "python", "-m", "pip", "install", "-q", "-c", ROOT / "requirements.lock", wheel)
    return venv


def test_the_base_install_leaves_the_analyzers_libraries_out(base_venv: Path) -> None:
    listed = _run(base_venv / "bin" / "python", "-m", "pip", "list", "--format=json").stdout
    installed = {row["name"].lower() for row in json.loads(listed)}
    assert "jitrace" in installed and "opentelemetry-distro" in installed
    assert installed.isdisjoint(HEAVY), sorted(installed & set(HEAVY))
    # and the package imported is the wheel's, not this checkout's
    where = _run(base_venv / "bin" / "python", "-c", "import jitrace.instrumentation as j; print(j.__file__)",
                 cwd="/").stdout
    assert where.startswith(str(base_venv)), where


SHIPPED = {"instrumentation", "collect", "analyzer", "queries", "lab"}  # the folders that are jitrace.* packages
DATA = {".py", ".sql", ".csv", ".toml", ".proto", ".conf"}


def test_the_wheel_holds_every_module_and_data_file_of_the_folders(base_venv: Path) -> None:
    # packages are found from the folders (setup.py): a new folder or file ships without a list to update
    wheel = Path((base_venv.parent / "wheel-path").read_text())
    names = set(zipfile.ZipFile(wheel).namelist())
    tracked = _run("git", "ls-files", *SHIPPED, cwd=ROOT).stdout.split()
    expected = {f"jitrace/{path}" for path in tracked if Path(path).suffix in DATA}
    assert expected and not expected - names, sorted(expected - names)[:10]


def test_the_jitrace_command_names_the_extra_a_subcommand_needs(base_venv: Path) -> None:
    for command, extra in (("analyze", "analyzer"), ("demo", "lab"), ("replay", "lab")):
        result = subprocess.run([base_venv / "bin" / "jitrace", command, "x", "--out", "y"], capture_output=True,
                                text=True, timeout=60, cwd="/")
        assert result.returncode == 2, result.stderr
        assert f"pip install 'jitrace[{extra}]'" in result.stderr and "Traceback" not in result.stderr


def _collect(out: Path) -> tuple[subprocess.Popen[str], str]:
    """``jitrace collect`` of the repository's environment (analyzer extra) on a free loopback port."""
    proc = subprocess.Popen([Path(sys.executable).parent / "jitrace", "collect", "--out", out, "--grpc",
                             "127.0.0.1:0", "--http", "off"], stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert "listening grpc=" in line, line
    return proc, line.split("grpc=")[1].split()[0]


def test_plain_apps_under_opentelemetry_instrument_export_jit_spans_that_collect_stores(base_venv: Path,
                                                                                          tmp_path: Path) -> None:
    sys.path.insert(0, str(PLAIN))
    try:
        from helpers import mint, public_pem
    finally:
        sys.path.remove(str(PLAIN))
    (tmp_path / "public.pem").write_bytes(public_pem())
    now = int(time.time())
    tokens = {"allowed": mint(jti="wheel-allowed"), "expired": mint(jti="wheel-expired", iat=now - 900, exp=now - 60)}
    (tmp_path / "tokens.json").write_text(json.dumps(tokens))
    collector, address = _collect(tmp_path / "spans")
    # only OTEL_* variables configure OpenTelemetry; JIT_* are the plain apps' own settings; PYTHONPATH finds them
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "JITRACE_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(OTEL_TRACES_EXPORTER="otlp", OTEL_METRICS_EXPORTER="none", OTEL_LOGS_EXPORTER="none",
               OTEL_EXPORTER_OTLP_ENDPOINT=f"http://{address}", OTEL_EXPORTER_OTLP_INSECURE="true",
               OTEL_BSP_SCHEDULE_DELAY="200", PYTHONPATH=str(PLAIN), JIT_PUBLIC_KEY_FILE=str(tmp_path / "public.pem"),
               JIT_TOKENS=str(tmp_path / "tokens.json"), JIT_AIO="0")
    instrument = [str(base_venv / "bin" / "opentelemetry-instrument"), str(base_venv / "bin" / "python")]
    server = subprocess.Popen([*instrument, str(PLAIN / "plain_service.py")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                              env={**env, "OTEL_SERVICE_NAME": "wheel-server"})
    try:
        assert server.stdout is not None
        port = server.stdout.readline().strip()
        assert port.isdigit(), server.stderr.read() if server.stderr else port
        client = subprocess.run([*instrument, str(PLAIN / "plain_client.py")], capture_output=True, text=True,
                                timeout=120, cwd=tmp_path,
                                env={**env, "OTEL_SERVICE_NAME": "wheel-client", "JIT_TARGET": f"127.0.0.1:{port}"})
        assert client.returncode == 0, client.stderr[-3000:]
    finally:
        server.communicate(timeout=60)  # stdin closed: the server stops and flushes its spans
    time.sleep(1.0)  # the last export's batch is written before the stop
    collector.send_signal(signal.SIGTERM)
    assert collector.wait(timeout=60) == 0

    tables = [pq.read_table(f).to_pylist() for f in (tmp_path / "spans").rglob("*.parquet")]
    spans = [row for table in tables for row in table if row["name"].startswith("/jit.test.Echo/")]
    by_service = {(row["service"], row["kind"]) for row in spans}
    assert by_service == {("wheel-client", "CLIENT"), ("wheel-server", "SERVER")}
    attrs = [json.loads(row["attributes"]) if isinstance(row["attributes"], str) else row["attributes"]
             for row in spans]
    token_ids = {a.get("jit.token.id") for a in attrs}
    assert {"wheel-allowed", "wheel-expired"} <= token_ids
    verdicts = {a.get("jit.token.verdict") for a in attrs}
    assert {"valid", "expired"} <= verdicts
