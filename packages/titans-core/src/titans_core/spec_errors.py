"""Turn a pydantic ``ValidationError`` into a :class:`SpecError` that reads like a compiler error.

One line per problem: ``spec.yaml:7: model.memory.depth: must be ≥ 1, got 0`` — the YAML line (when the data
came from a file), the dotted path of the value in the *data* (list indices as ``[i]``; pydantic's internal
location segments such as union-member tags are dropped), and human wording for the common pydantic error
types.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from pydantic import BaseModel, ValidationError

from titans_core.component_ref import ComponentRefMarker
from titans_core.errors import SpecError, SpecProblem, UnknownComponentError
from titans_core.registry import get_registry
from titans_core.yaml_lines import Path, YamlDocument, dotted, show


def _number(value: Any) -> str:
    """A bound as written in a Field: ``gt=0`` on a float field shows ``0``, not ``0.0``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return show(value)


def data_path(loc: Sequence[Any], data: Any) -> Path:
    """The path in ``data`` that a pydantic ``loc`` points at, without segments that name no key or index."""
    out: list[Any] = []
    node = data
    for i, segment in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, Mapping):
            if segment in node:
                out.append(segment)
                node = node[segment]
            elif last:
                out.append(segment)  # a missing or extra key
                node = None
        elif isinstance(node, BaseModel):
            if isinstance(segment, str) and segment in type(node).model_fields:
                out.append(segment)
                node = getattr(node, segment)
        elif isinstance(node, list | tuple) and isinstance(segment, int):
            out.append(segment)
            node = node[segment] if 0 <= segment < len(node) else None
    return tuple(out)


# ---------------------------------------------------------------------------------- which model is at a path
def _resolve(tp: Any, node: Any) -> Any:
    """Unwrap Annotated/Optional; a ComponentRef becomes the tagged config class ``node['name']`` selects."""
    for _ in range(10):
        if isinstance(tp, ComponentRefMarker):
            name = node.get("name") if isinstance(node, Mapping) else getattr(node, "name", None)
            try:
                return get_registry().config_class(tp.kind, name) if isinstance(name, str) else None
            except UnknownComponentError:
                return None
        origin = typing.get_origin(tp)
        if origin is Annotated:
            markers = [m for m in tp.__metadata__ if isinstance(m, ComponentRefMarker)]
            tp = markers[0] if markers else typing.get_args(tp)[0]
        elif origin is typing.Union or origin is types.UnionType:
            members = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(members) != 1:
                return None
            tp = members[0]
        else:
            return tp
    return None


def _step(tp: Any, segment: Any, node: Any) -> Any:
    """The declared type one segment below ``tp`` (whose data is ``node``)."""
    tp = _resolve(tp, node)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        for name, field in tp.model_fields.items():
            if segment in (name, field.alias):
                markers = [m for m in field.metadata if isinstance(m, ComponentRefMarker)]
                return markers[0] if markers else field.annotation
        return None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (list, tuple, Sequence) and args and isinstance(segment, int):
        return args[0]
    if origin in (dict, Mapping) and len(args) == 2:
        return args[1]
    return None


def allowed_keys(model_cls: type[BaseModel], data: Any, path: Path) -> list[str] | None:
    """The keys the model at ``path`` accepts, found by following field annotations (best effort)."""
    tp: Any = model_cls
    node = data
    for segment in path:
        tp = _step(tp, segment, node)
        if tp is None:
            return None
        if isinstance(node, Mapping):
            node = node.get(segment)
        elif isinstance(node, list) and isinstance(segment, int) and 0 <= segment < len(node):
            node = node[segment]
        else:
            node = None
    tp = _resolve(tp, node)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [field.alias or name for name, field in tp.model_fields.items()]
    return None


# ------------------------------------------------------------------------------------------------ wording
_COMPARISONS = {
    "greater_than_equal": ("ge", "≥"),
    "greater_than": ("gt", ">"),
    "less_than_equal": ("le", "≤"),
    "less_than": ("lt", "<"),
}
_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "dict_type": "a mapping",
    "list_type": "a list",
    "tuple_type": "a list",
}


def describe(error: Mapping[str, Any], path: Path, model_cls: type[BaseModel], data: Any) -> str:
    """Human wording of one pydantic error (``error`` as in ``ValidationError.errors()``)."""
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if kind in _COMPARISONS:
        key, symbol = _COMPARISONS[kind]
        return f"must be {symbol} {_number(ctx.get(key))}, got {show(value)}"
    if kind == "multiple_of":
        return f"must be a multiple of {_number(ctx.get('multiple_of'))}, got {show(value)}"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {show(value)}"
    if kind in ("literal_error", "enum"):
        return f"expected {ctx.get('expected')}, got {show(value)}"
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        key = path[-1] if path else "?"
        message = f"unknown key {key!r}"
        allowed = allowed_keys(model_cls, data, path[:-1]) or []
        close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
        if close:
            return f"{message}; did you mean {close[0]!r}?"
        return f"{message}; allowed keys: {', '.join(allowed)}" if allowed else message
    if kind in ("too_short", "too_long", "string_too_short", "string_too_long"):
        bound = "at least" if kind.endswith("short") else "at most"
        limit = ctx.get("min_length", ctx.get("max_length"))
        unit = "character" if kind.startswith("string") else "item"
        return f"must have {bound} {limit} {unit}{'' if limit == 1 else 's'}, got {show(value)}"
    if kind == "finite_number":
        return f"must be a finite number, got {show(value)}"
    message = str(error.get("msg", kind))
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    if kind.startswith("component_") or kind in ("unknown_component", "value_error", "assertion_error"):
        return message
    return f"{message[:1].lower()}{message[1:]}, got {show(value)}"


def override_origin(path: Path, overrides: Mapping[Path, str] | None, message: str = "") -> str | None:
    """``--set KEY=VALUE`` when the value at ``path`` came from that override: the longest override at or
    above ``path``; else, for a problem of a whole section (a check across its fields), the last override
    inside that section whose key the message names. None when the value came from the file."""
    items = list((overrides or {}).items())
    for override_path, text in sorted(items, key=lambda item: -len(item[0])):
        if path[: len(override_path)] == override_path:
            return f"--set {text}"
    if path:
        for override_path, text in reversed(items):
            if override_path[: len(path)] == path and str(override_path[-1]) in message:
                return f"--set {text}"
    return None


def spec_error(
    exc: ValidationError,
    model_cls: type[BaseModel],
    data: Any,
    *,
    filename: str | None = None,
    doc: YamlDocument | None = None,
    overrides: Mapping[Path, str] | None = None,
    where: str | None = None,
) -> SpecError:
    """The :class:`SpecError` for a ``ValidationError`` raised by ``model_cls.model_validate(data)``."""
    problems: list[SpecProblem] = []
    unknown_component = False
    for error in exc.errors(include_url=False):
        path = data_path(error["loc"], data)
        message = describe(error, path, model_cls, data)
        origin = override_origin(path, overrides, message) or where
        line = doc.line_of(path) if doc is not None and origin is None else None
        problem = SpecProblem(dotted(path), message, filename, line, where=origin)
        if problem not in problems:
            problems.append(problem)
        unknown_component |= error["type"] == "unknown_component"
    problems.sort(key=lambda p: p.line or 0)  # in file order (stable: pydantic's order within a line)
    notes = get_registry().notes() if unknown_component else []
    return SpecError(problems, notes)
