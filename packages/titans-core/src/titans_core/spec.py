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
import threading
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path as FilePath
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError, core_schema, to_jsonable_python

from titans_core.config import ComponentConfig, SpecModel
from titans_core.errors import SpecError, SpecProblem
from titans_core.registry import get_registry
from titans_core.spec_errors import show, spec_error
from titans_core.yaml_lines import MAX_BYTES, Path, YamlDocument, parse_yaml

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


def _fail(kind: str, message: str, value: Any, loc: tuple[Any, ...] = ()) -> ValidationError:
    return ValidationError.from_exception_data(
        "ComponentRef", [InitErrorDetails(type=PydanticCustomError(kind, message), loc=loc, input=value)]
    )


class _Generating(threading.local):
    """(JSON-schema generator, component definition) pairs being generated on this thread."""

    def __init__(self) -> None:
        self.active: set[tuple[int, Any]] = set()


_GENERATING = _Generating()


class ComponentRefMarker:
    """``Annotated`` metadata making a field a component section of ``kind`` (see :func:`ComponentRef`)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __repr__(self) -> str:
        return f"ComponentRef({self.kind!r})"

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(self.validate)

    def validate(self, value: Any) -> ComponentConfig:
        """``{name: ..., **options}`` (or a config object) → the validated, tagged config it selects."""
        registry = get_registry()
        kind = self.kind
        if isinstance(value, ComponentConfig):
            return self._from_config(value)
        if not isinstance(value, Mapping):
            raise PydanticCustomError(
                "component_type", f"expected a mapping {{name: <{kind}>, ...options}}, got {show(value)}"
            )
        if "name" not in value:
            known = ", ".join(registry.names(kind)) or "none registered"
            raise _fail("component_name_missing", f"required: the {kind} to use (known: {known})", value, ("name",))
        name = value["name"]
        if not isinstance(name, str) or name not in registry.names(kind):
            raise _fail("unknown_component", registry.unknown_message(kind, name), name, ("name",))
        return registry.config_class(kind, name).model_validate(dict(value))

    def _from_config(self, value: ComponentConfig) -> ComponentConfig:
        cls = type(value)
        if cls.component_kind == self.kind:
            return value
        if cls.component_kind is not None:
            raise PydanticCustomError(
                "component_kind_mismatch",
                f"expected a {self.kind} config, got the config of the {cls.component_kind} {value.name!r}",  # type: ignore[attr-defined]
            )
        users = [c.name for c in get_registry().components(self.kind) if c.config_cls is cls]
        if len(users) != 1:
            why = f"it configures {', '.join(users)}" if users else f"no {self.kind} uses it"
            raise PydanticCustomError(
                "component_ambiguous",
                f"cannot tell which {self.kind} a {cls.__name__} selects ({why}); "
                "give {name: ..., ...options} or use titans_core.spec.make_config",
            )
        return get_registry().config_class(self.kind, users[0]).model_validate({**dict(value), "name": users[0]})

    def __get_pydantic_json_schema__(self, schema: Any, handler: Any) -> dict[str, Any]:
        generator = getattr(handler, "generate_json_schema", None)  # defines shared $defs when available
        options: list[dict[str, Any]] = []
        mapping: dict[str, str] = {}
        for component in get_registry().components(self.kind):
            core = component.tagged_config_cls.__pydantic_core_schema__
            key = (id(generator), core.get("ref"))
            if generator is None:
                option = handler(core)
            elif key in _GENERATING.active:  # a component nested in itself: refer to the definition under way
                option = generator.get_cache_defs_ref_schema(core["ref"])[1]
            else:
                _GENERATING.active.add(key)
                try:
                    option = generator.generate_inner(core)
                finally:
                    _GENERATING.active.discard(key)
            try:
                target = handler.resolve_ref_schema(option)
                properties = target.get("properties", {})
                if "name" in properties:  # list `name` first and require it
                    target["properties"] = {"name": properties.pop("name"), **properties}
                    target["required"] = ["name", *[r for r in target.get("required", []) if r != "name"]]
            except LookupError:  # a definition still being generated (recursive component)
                pass
            options.append(option)
            if "$ref" in option:
                mapping[component.name] = option["$ref"]
        if not options:
            return {"not": {}, "description": f"no {self.kind} is registered"}
        discriminator: dict[str, Any] = {"propertyName": "name"}
        if len(mapping) == len(options):
            discriminator["mapping"] = mapping
        return {"oneOf": options, "discriminator": discriminator}


def ComponentRef(kind: str) -> Any:  # CamelCase: it reads as a type in annotations
    """Field type of a component section of ``kind``: ``memory: ComponentRef("memory_model")``.

    Equivalent to ``Annotated[ComponentConfig, ComponentRefMarker(kind)]`` (the spelling type checkers
    prefer).
    """
    return Annotated[ComponentConfig, ComponentRefMarker(kind)]


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
    from titans_core.spec_errors import dotted

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
            from titans_core.spec_errors import dotted

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
        size = FilePath(path).stat().st_size
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
