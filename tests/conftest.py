"""Shared fixtures: where the public trace files live, and whether their absence is a skip or a failure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REAL_DATA = Path(os.environ.get("JITRACE_REAL_DATA", ROOT.parent / "shared" / "data" / "real"))


@pytest.fixture(scope="session")
def real_data() -> Path:
    """``../shared/data/real``: skipped when absent, unless JITRACE_REQUIRE_REAL_DATA=1 (CI) makes it a failure."""
    if not REAL_DATA.is_dir():
        reason = f"public trace files not found at {REAL_DATA} (see shared/data/real/SOURCES.md)"
        if os.environ.get("JITRACE_REQUIRE_REAL_DATA") == "1":
            pytest.fail(reason + "; JITRACE_REQUIRE_REAL_DATA=1 makes them required")
        pytest.skip(reason)
    return REAL_DATA


@pytest.fixture(scope="session")
def chdb_installed() -> None:
    """chdb, ClickHouse in-process (the optional extra jitrace[clickhouse]): its tests are skipped when it is not
    installed, unless JITRACE_REQUIRE_CHDB=1 (CI installs the extra) makes that a failure."""
    try:
        import chdb  # noqa: F401
        import clickhouse_connect  # noqa: F401
    except ModuleNotFoundError as exc:
        reason = f"{exc.name} is not installed (the extra jitrace[clickhouse]: make clickhouse)"
        if os.environ.get("JITRACE_REQUIRE_CHDB") == "1":
            pytest.fail(reason + "; JITRACE_REQUIRE_CHDB=1 makes it required")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def lab_mixed_output(tmp_path_factory) -> Path:
    """An analyze output folder of a small `mixed` lab run (real services on loopback), shared by the session."""
    from jitrace.analyzer.analyze import analyze
    from jitrace.lab.runner import run

    folder = tmp_path_factory.mktemp("lab-mixed")
    run("mixed", folder / "lab", calls=2, log=lambda _msg: None)
    inputs = [str(folder / "lab" / part) for part in ("spans", "logs") if (folder / "lab" / part).is_dir()]
    analyze(inputs, folder / "out", quiet=True)
    return folder / "out"
