"""Every notebook runs top to bottom on a lab run's output and shows its figures and tables; none is committed with
outputs."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))
# the figures and tables each notebook must produce at least
EXPECTED = {"triage": (2, 4), "clock_drift": (2, 2), "token_lifetimes": (2, 2), "policy_audit": (1, 2)}


def test_the_four_investigations_are_there():
    assert sorted(p.stem for p in NOTEBOOKS) == sorted(EXPECTED)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: clear outputs before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_runs_on_a_lab_output_with_figures_and_tables(path, lab_mixed_output, monkeypatch):
    monkeypatch.setenv("JITRACE_OUT", str(lab_mixed_output))
    nb = nbformat.read(path, as_version=4)
    # the kernel is a child process: it inherits JITRACE_OUT from this one's environment
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    figures = sum("image/png" in o.get("data", {}) for o in outputs)
    tables = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    want_figures, want_tables = EXPECTED[path.stem]
    assert figures >= want_figures, f"{path.name}: {figures} figures"
    assert len(tables) >= want_tables, f"{path.name}: {len(tables)} tables"
    assert sum("<tbody>\n    <tr>" in t for t in tables) >= want_tables, f"{path.name}: empty tables"
