"""docs/architecture.md's references resolve: every `package/path.py:name` it cites names a file under
packages/*/src or plugins/*/src that defines that function, class or constant (and, for `Class.method`, that
method); every `package/path.py` it cites alone exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"
REF = re.compile(r"`([a-z_]+/[A-Za-z0-9_/]*\.py):([A-Za-z_][A-Za-z0-9_.]*)`")
FILE = re.compile(r"`([a-z_]+/[A-Za-z0-9_/]*\.py)`")  # a module cited without a name


def _source(relative: str) -> Path | None:
    hits = [p for p in ROOT.glob(f"*/*/src/{relative}")]
    return hits[0] if len(hits) == 1 else None


def _defines(path: Path, dotted: str) -> bool:
    """Whether the module defines ``name`` (function, class or assigned name) or ``Class.method``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    head, _, rest = dotted.partition(".")
    for node in tree.body:
        names = []
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names = [node.name]
        elif isinstance(node, ast.Assign):
            names = [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names = [node.target.id]
        if head not in names:
            continue
        if not rest:
            return True
        return isinstance(node, ast.ClassDef) and any(
            isinstance(m, ast.FunctionDef) and m.name == rest for m in node.body
        )
    return False


def test_every_file_and_function_the_architecture_map_cites_exists():
    text = DOC.read_text(encoding="utf-8")
    refs = REF.findall(text)
    assert len(refs) > 30, "the map's references were not found: did the format change?"
    missing = []
    for relative, name in sorted(set(refs)):
        path = _source(relative)
        if path is None:
            missing.append(f"{relative} (no such file)")
        elif not _defines(path, name):
            missing.append(f"{relative}:{name}")
    missing += [f"{relative} (no such file)" for relative in sorted(set(FILE.findall(text))) if not _source(relative)]
    assert not missing, missing
