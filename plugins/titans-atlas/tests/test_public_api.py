"""The plugin uses only the public API of titans-core and titans-memory (names in their ``__all__``, or public
modules' public names), parsed from its source with ``ast``."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import titans_core
import titans_memory

SRC = Path(__file__).resolve().parents[1] / "src" / "titans_atlas"
PUBLIC_MODULES = {"titans_memory.testing"}  # documented for plugin authors (docs/plugins.md)


def _imports():
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                yield path.name, node.module, [alias.name for alias in node.names]
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    yield path.name, alias.name, []


def test_only_public_titans_names_are_imported():
    seen = set()
    for where, module, names in _imports():
        top = module.split(".")[0]
        if top not in ("titans_core", "titans_memory"):
            assert not top.startswith("titans_") or top == "titans_atlas", f"{where}: imports {module}"
            continue
        seen.add(top)
        if module in ("titans_core", "titans_memory"):
            exported = {"titans_core": titans_core, "titans_memory": titans_memory}[module].__all__
            assert set(names) <= set(exported), f"{where}: {module} does not export {set(names) - set(exported)}"
        else:
            assert module in PUBLIC_MODULES, f"{where}: imports the private module {module}"
            public = importlib.import_module(module)
            assert all(not n.startswith("_") and hasattr(public, n) for n in names), f"{where}: {module}.{names}"
    assert seen == {"titans_core", "titans_memory"}
