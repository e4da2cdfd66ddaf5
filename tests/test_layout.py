"""Imports flow one way: launcher -> partitioner, bigkg; partitioner -> bigkg. bigkg never
imports launcher or partitioner, so the library works without the commands around it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def imported_packages(path: Path) -> set[str]:
    """The top-level packages ``path`` imports, wherever in the file (functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package, forbidden", [("bigkg", {"launcher", "partitioner"}), ("partitioner", {"launcher"})])
def test_imports_flow_one_way(package, forbidden):
    files = sorted((REPO / package).rglob("*.py"))
    assert files
    wrong = {str(f.relative_to(REPO)): sorted(imported_packages(f) & forbidden) for f in files}
    assert {f: names for f, names in wrong.items() if names} == {}
