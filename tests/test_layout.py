"""The layout reads as the pipeline: no module imports a private module (``_name``) of another package, so each
package's inside can change without breaking the others (issue 22)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("instrumentation", "collect", "analyzer", "lab")


def _imports(path: Path) -> list[str]:
    """Every jitrace module ``path`` imports, as dotted names (``from P import m`` gives ``P.m``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("jitrace.")]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("jitrace."):
            found += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return found


def private_imports(root: Path) -> list[str]:
    """Each import, in the packages under ``root``, of a private module of another package."""
    wrong = []
    for folder in PACKAGES:
        for path in (root / folder).rglob("*.py"):
            package = "jitrace." + ".".join(path.parent.relative_to(root).parts)
            for name in _imports(path):
                parts = name.split(".")
                private = next((i for i, part in enumerate(parts) if part.startswith("_") and part != "__init__"), None)
                if private is not None and ".".join(parts[:private]) != package:
                    wrong.append(f"{path.relative_to(root)} imports {name}")
    return wrong


def test_no_module_imports_another_packages_private_module():
    assert private_imports(ROOT) == []


def test_the_check_finds_a_private_import_across_packages_and_allows_one_inside(tmp_path):
    (tmp_path / "collect").mkdir()
    (tmp_path / "collect" / "_writer.py").write_text("")
    (tmp_path / "collect" / "receiver.py").write_text("from jitrace.collect._writer import Writer\n")
    (tmp_path / "analyzer").mkdir()
    (tmp_path / "analyzer" / "load.py").write_text("from jitrace.collect import _writer\n"
                                                   "from jitrace.analyzer import rows\n")
    assert private_imports(tmp_path) == ["analyzer/load.py imports jitrace.collect._writer"]
