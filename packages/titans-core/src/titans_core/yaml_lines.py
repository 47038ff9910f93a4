"""Parse YAML (safe) and remember the line of every mapping key and sequence item, for error messages.

``parse_yaml(text)`` composes the YAML node tree (PyYAML ``compose``), records for each path — a tuple of keys
and list indices such as ``("model", "memory", "depth")`` or ``("layers", 2)`` — the 1-based line where it
starts, finds duplicate keys (which PyYAML would otherwise silently resolve to the last one), then
constructs the Python data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

Path = tuple[Any, ...]
MERGE_TAG = "tag:yaml.org,2002:merge"


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


def _walk(node: Node, path: Path, doc: YamlDocument, active: set[int]) -> None:
    if id(node) in active:  # a recursive alias
        return
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
            _walk(value_node, path + (key,), doc, active)
    elif isinstance(node, SequenceNode):
        for index, item in enumerate(node.value):
            doc.lines[path + (index,)] = item.start_mark.line + 1
            _walk(item, path + (index,), doc, active)
    active.discard(id(node))


def parse_yaml(text: str) -> YamlDocument:
    """Parse one YAML document with the safe loader; raises ``yaml.YAMLError`` on invalid YAML."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return YamlDocument(data=None)
        doc = YamlDocument(data=None)
        _walk(node, (), doc, set())  # before constructing: construction flattens merge keys in place
        doc.data = loader.construct_document(node)
        return doc
    finally:
        loader.dispose()
