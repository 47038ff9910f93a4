"""Parse YAML (safe) and remember the line of every mapping key and sequence item, for error messages.

``parse_yaml(text)`` composes the YAML node tree (PyYAML ``compose``), records for each path — a tuple of keys
and list indices such as ``("model", "memory", "depth")`` or ``("layers", 2)`` — the 1-based line where it
starts, finds duplicate keys (which PyYAML would otherwise silently resolve to the last one), then
constructs the Python data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.tokens import ScalarToken

Path = tuple[Any, ...]
MERGE_TAG = "tag:yaml.org,2002:merge"
#: Limits of a YAML document (specs are a few kB and a few hundred values).
MAX_BYTES = 1 << 20
MAX_NODES = 20_000
MAX_DEPTH = 64


@dataclass
class YamlDocument:
    """Parsed data, ``lines`` (path → line of its key or item) and ``duplicates`` (path, line, first line)."""

    data: Any
    lines: dict[Path, int] = field(default_factory=dict)
    duplicates: list[tuple[Path, int, int]] = field(default_factory=list)

    def line_of(self, path: Path) -> int | None:
        """Line of ``path``, or of its deepest enclosing key/item present in the file; None for the root."""
        for end in range(len(path), 0, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return None


def _scalar_key(node: Node) -> Any:
    """The Python value of a scalar mapping key (``1`` → int, ``depth`` → str); None for complex keys."""
    if not isinstance(node, ScalarNode):
        return None
    try:
        return SafeConstructor().construct_object(node)
    except yaml.YAMLError:
        return None


class _Budget:
    """Counts the nodes of the document as the data will have them (every alias expanded)."""

    def __init__(self) -> None:
        self.left = MAX_NODES

    def spend(self, node: Node) -> None:
        self.left -= 1
        if self.left < 0:
            raise ConstructorError(
                None,
                None,
                f"more than {MAX_NODES:,} values once aliases are expanded (an alias bomb?); a spec is far smaller",
                node.start_mark,
            )


def _walk(node: Node, path: Path, doc: YamlDocument, active: set[int], budget: _Budget) -> None:
    if id(node) in active:  # a recursive alias
        return
    budget.spend(node)
    active.add(id(node))
    if isinstance(node, MappingNode):
        first_line: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:
                continue
            key = _scalar_key(key_node)
            if key is None:
                continue
            line = key_node.start_mark.line + 1
            try:
                if key in first_line:
                    doc.duplicates.append((path + (key,), line, first_line[key]))
                    continue
                first_line[key] = line
            except TypeError:  # unhashable key
                continue
            doc.lines[path + (key,)] = line
            _walk(value_node, path + (key,), doc, active, budget)
    elif isinstance(node, SequenceNode):
        for index, item in enumerate(node.value):
            doc.lines[path + (index,)] = item.start_mark.line + 1
            _walk(item, path + (index,), doc, active, budget)
    active.discard(id(node))


def _flow_depth(text: str) -> int:
    """The deepest nesting of ``[``/``{`` (brackets inside quoted scalars may count too: an upper bound)."""
    depth = deepest = 0
    for char in text:
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth = max(0, depth - 1)
    return deepest


def _block_depth(text: str) -> int:
    """The deepest nesting of indentation levels (block scalars may add a level: an upper bound)."""
    indents: list[int] = []
    deepest = 0
    for line in text.splitlines():
        stripped = line.lstrip(" ")
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(line) - len(stripped)
        while indents and indents[-1] >= indent:
            indents.pop()
        indents.append(indent)
        deepest = max(deepest, len(indents))
    return deepest


def _count_values(text: str) -> None:
    """Refuse a document that holds more than :data:`MAX_NODES` values as written (a long list, say) by scanning
    its tokens (libyaml's scanner when available) and stopping at the limit: composing such a document first
    takes seconds. Invalid YAML is left to the loader, which reports it."""
    scanner = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    values, token = 0, None
    try:
        while values <= MAX_NODES and scanner.check_token():
            token = scanner.get_token()
            values += isinstance(token, ScalarToken)
    except yaml.YAMLError:
        return
    finally:
        scanner.dispose()
    if values > MAX_NODES and token is not None:
        raise ConstructorError(
            None,
            None,
            f"more than {MAX_NODES:,} values in {len(text):,} characters; a spec is far smaller",
            token.start_mark,
        )


def parse_yaml(text: str) -> YamlDocument:
    """Parse one YAML document with the safe loader; raises ``yaml.YAMLError`` on invalid YAML, and on
    documents no spec can be: over :data:`MAX_BYTES`, over :data:`MAX_NODES` values with aliases expanded
    (an alias bomb would otherwise take minutes and gigabytes downstream) or as written (a long list), or nested
    too deeply."""
    if len(text) > MAX_BYTES:
        raise yaml.YAMLError(f"{len(text):,} characters; a spec is at most {MAX_BYTES:,}")
    if max(_flow_depth(text), _block_depth(text)) > MAX_DEPTH:  # PyYAML's time grows ~quadratically with it
        raise yaml.YAMLError(f"nested too deeply for a spec (more than {MAX_DEPTH} levels)")
    _count_values(text)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return YamlDocument(data=None)
        doc = YamlDocument(data=None)
        _walk(node, (), doc, set(), _Budget())  # before constructing: construction flattens merge keys
        doc.data = loader.construct_document(node)
        return doc
    except RecursionError:
        raise yaml.YAMLError("nested too deeply for a spec") from None
    finally:
        loader.dispose()


def show(value: Any) -> str:
    """A value as the user wrote it in YAML: ``'abc'``, ``0``, ``1.5``, ``true``, ``null``, ``[1, 2]``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, int | float):
        return repr(value)
    try:
        text = json.dumps(value, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def dotted(path: Path) -> str:
    """``("model", "layers", 2, "memory")`` → ``model.layers[2].memory``."""
    out = ""
    for segment in path:
        if isinstance(segment, int) and not isinstance(segment, bool):
            out += f"[{segment}]"
        else:
            out += f".{segment}" if out else str(segment)
    return out
