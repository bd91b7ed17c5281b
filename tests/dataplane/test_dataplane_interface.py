"""The data plane's interface: the names :mod:`levere.dataplane` offers resolve, and the use cases
reach the data plane through them rather than through its modules."""

from __future__ import annotations

import ast
from pathlib import Path

import levere.dataplane
import levere.services


def test_every_name_of_the_interface_resolves() -> None:
    for name in levere.dataplane.__all__:
        assert getattr(levere.dataplane, name) is not None, name


def test_use_cases_import_the_data_plane_only_through_its_interface() -> None:
    folder = Path(levere.services.__file__).parent
    around = []
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("levere.dataplane."):
                around.append(f"{path.name}: from {node.module} import ...")
            if isinstance(node, ast.Import):
                around += [
                    f"{path.name}: import {a.name}"
                    for a in node.names
                    if a.name.startswith("levere.dataplane.")
                ]
    assert around == []
