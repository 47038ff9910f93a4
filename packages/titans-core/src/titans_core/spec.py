"""Spec files: YAML validated by pydantic models whose component sections are chosen by plugins.

A spec model is a :class:`SpecModel` (unknown keys are errors; objects are frozen). A component section is
``{name: <registered name>, ...options}`` and is declared with :func:`ComponentRef`::

    class ModelSpec(SpecModel):
        memory: ComponentRef("memory_model") = component_field("memory_model", "mlp", depth=2)

    spec = load_spec_file("spec.yaml", ModelSpec, overrides=["memory.depth=3"])
    memory = get_registry().build(spec.memory)          # factory(config) of the component named in the file

``ComponentRef`` validates against the registry *at validation time*: the section's ``name`` selects the
component and the rest is validated by that component's own config class, so plugins bring their own schema
and a model class never goes stale when the registry changes (tests). The validated value is an instance of
the tagged subclass of the component's config class (see ``titans_core.config``). Component configs may
themselves hold ComponentRef fields (nested components). The JSON schema of a ComponentRef is a ``oneOf`` over
the registered components of its kind with ``name`` as the discriminator (:func:`spec_json_schema`).

Errors raise :class:`SpecError` with one line per problem, e.g.
``spec.yaml:7: model.memory.depth: must be ≥ 1, got 0``.
"""

from __future__ import annotations

import copy
import re
import stat
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path as FilePath
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from pydantic_core import to_jsonable_python

from titans_core.component_ref import ComponentRef, ComponentRefMarker
from titans_core.config import ComponentConfig, SpecModel
from titans_core.errors import SpecError, SpecProblem
from titans_core.registry import get_registry
from titans_core.spec_errors import spec_error
from titans_core.yaml_lines import MAX_BYTES, Path, YamlDocument, dotted, parse_yaml, show

__all__ = [
    "ComponentRef",
    "ComponentRefMarker",
    "SpecModel",
    "apply_overrides",
    "component_field",
    "dump_spec",
    "kind_json_schema",
    "load_spec_file",
    "make_config",
    "parse_spec",
    "spec_json_schema",
]

M = TypeVar("M", bound=BaseModel)


def make_config(kind: str, name: str, /, **options: Any) -> ComponentConfig:
    """The validated config of component ``kind``/``name`` with ``options``; :class:`SpecError` if invalid."""
    cls = get_registry().config_class(kind, name)
    data = {"name": name, **options}
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise spec_error(exc, cls, data, where=f"{kind} {name!r}") from None


def component_field(kind: str, default_name: str, /, **default_options: Any) -> Any:
    """A field default: ``memory: ComponentRef("memory_model") = component_field("memory_model", "mlp",
    depth=2)``.

    The default config is made (and validated) each time a spec omits the section; the JSON schema shows
    ``{name: default_name, **default_options}`` as the default.
    """
    return Field(
        default_factory=partial(make_config, kind, default_name, **default_options),
        json_schema_extra={"default": to_jsonable_python({"name": default_name, **default_options})},
    )


# ------------------------------------------------------------------------------------------------ overrides
_SEGMENT = re.compile(r"^([^.\[\]=\s]+)((?:\[\d+\])*)$")


def _parse_override(text: str) -> tuple[Path, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValueError("expected KEY.PATH=VALUE, e.g. trainer.steps=100")
    path: list[Any] = []
    for part in key.strip().split("."):
        match = _SEGMENT.match(part)
        if not match:
            raise ValueError(f"bad key path {key.strip()!r}: use dotted keys and [i] for list items")
        path.append(match.group(1))
        path.extend(int(i) for i in re.findall(r"\[(\d+)\]", match.group(2)))
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ValueError(f"invalid YAML value {raw!r}: {getattr(exc, 'problem', None) or exc}") from None
    return tuple(path), value


def _set_path(data: dict[str, Any], path: Path, value: Any) -> None:
    node: Any = data
    for depth, segment in enumerate(path):
        last = depth == len(path) - 1
        if isinstance(segment, int):
            if not isinstance(node, list):
                raise ValueError(f"{dotted(path[:depth]) or 'the spec'} is {show(node)}, not a list")
            if not 0 <= segment < len(node):
                raise ValueError(f"{dotted(path[: depth + 1])}: index out of range (the list has {len(node)} items)")
        elif not isinstance(node, dict):
            raise ValueError(f"{dotted(path[:depth])} is {show(node)}, not a mapping")
        elif not last and node.get(segment) is None:
            node[segment] = {}  # create missing sections
        if last:
            node[segment] = value
        else:
            node = node[segment]


def _apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> tuple[dict[str, Any], dict[Path, str]]:
    result = copy.deepcopy(dict(data))
    applied: dict[Path, str] = {}
    problems: list[SpecProblem] = []
    for text in overrides:
        try:
            path, value = _parse_override(text)
            _set_path(result, path, value)
            applied[path] = text
        except ValueError as exc:
            problems.append(SpecProblem("", str(exc), where=f"--set {text}"))
    if problems:
        raise SpecError(problems)
    return result, applied


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of ``data`` with each ``"a.b[0].c=VALUE"`` applied (VALUE parsed as YAML; missing sections
    made).

    Malformed overrides raise :class:`SpecError` (all of them, one line each).
    """
    return _apply_overrides(data, overrides)[0]


# -------------------------------------------------------------------------------------------- parse / load
def _yaml_problem(exc: yaml.YAMLError, filename: str | None) -> SpecProblem:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    message = f"invalid YAML: {problem}" + (f" ({context})" if context else "")
    line = mark.line + 1 if mark is not None else None
    column = mark.column + 1 if mark is not None else None
    return SpecProblem("", message, filename or "<spec>", line, column)


def parse_spec(
    source: str | Mapping[str, Any],
    model_cls: type[M],
    *,
    filename: str | None = None,
    overrides: Sequence[str] = (),
) -> M:
    """Validate ``source`` — YAML text or already-parsed data — as ``model_cls``, after ``overrides``.

    ``filename`` is used in messages (with line numbers when ``source`` is YAML text). Raises
    :class:`SpecError`.
    """
    doc: YamlDocument | None = None
    if isinstance(source, str):
        try:
            doc = parse_yaml(source)
        except yaml.YAMLError as exc:
            raise SpecError(_yaml_problem(exc, filename)) from None
        if doc.duplicates:
            raise SpecError(
                [
                    SpecProblem(dotted(path), f"duplicate key (first on line {first})", filename, line)
                    for path, line, first in doc.duplicates
                ]
            )
        data = doc.data
    elif isinstance(source, Mapping):
        data = source
    else:
        raise TypeError(f"parse_spec() takes YAML text or a mapping, got {type(source).__name__}")
    if data is None:
        data = {}
    applied: dict[Path, str] = {}
    if overrides:
        if not isinstance(data, Mapping):
            raise SpecError(SpecProblem("", f"expected a mapping, got {show(data)}", filename, 1 if doc else None))
        data, applied = _apply_overrides(data, overrides)
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        raise spec_error(exc, model_cls, data, filename=filename, doc=doc, overrides=applied) from None


def load_spec_file(path: str | FilePath, model_cls: type[M], *, overrides: Sequence[str] = ()) -> M:
    """Read and validate the YAML spec file ``path`` (see :func:`parse_spec`); SpecError if unreadable."""
    try:
        info = FilePath(path).stat()
        if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):  # /dev/zero, a FIFO: endless reads
            raise SpecError(f"spec file {path}: not a regular file (a device, FIFO or socket)")
        size = info.st_size
        if size > MAX_BYTES:
            raise SpecError(f"spec file {path}: {size:,} bytes; a spec is at most {MAX_BYTES:,}")
        text = FilePath(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"spec file not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise SpecError(f"cannot read spec file {path}: not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise SpecError(f"cannot read spec file {path}: {exc.strerror or exc}") from None
    return parse_spec(text, model_cls, filename=str(path), overrides=overrides)


def dump_spec(spec: BaseModel) -> str:
    """YAML text of a validated spec; ``parse_spec(dump_spec(s), type(s)) == s``."""
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def spec_json_schema(model_cls: type[BaseModel]) -> dict[str, Any]:
    """JSON schema (draft 2020-12) of ``model_cls``; a ComponentRef is a ``oneOf`` of the components."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **model_cls.model_json_schema()}


def kind_json_schema(kind: str) -> dict[str, Any]:
    """The JSON schema of one component section of ``kind`` (``oneOf`` the registered components)."""
    return TypeAdapter(ComponentRef(kind)).json_schema()
