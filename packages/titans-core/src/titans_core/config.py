"""Base classes of every options object: :class:`SpecModel` (spec sections) and :class:`ComponentConfig`.

A component declares its options as a pydantic model::

    class MLPMemoryConfig(ComponentConfig):
        depth: int = Field(2, ge=1, description="number of layers of the memory MLP")

Unknown keys are rejected (``extra="forbid"``) and validated objects are immutable (``frozen=True``).

In a spec a component section is ``{name: mlp, depth: 3}``. The validated value is an instance of a *tagged*
subclass of the component's config class, made by :func:`tagged_config_class`: it adds the field ``name``
(``Literal["mlp"]``) and the class variable ``component_kind`` (``"memory_model"``), so the object knows which
component it configures (``Registry.build(config)``) while ``isinstance(config, MLPMemoryConfig)`` still
holds. Tagged classes are cached per (kind, name, config class), so validating twice gives equal objects.
"""

from __future__ import annotations

import threading
from types import UnionType
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    create_model,
    field_validator,
    model_serializer,
)

NAME_FIELD = "name"


def _types(annotation: Any) -> set[Any]:
    """The types an annotation admits (unions, Optional and Annotated unwrapped; Literal values as their types)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _types(get_args(annotation)[0])
    if origin is Literal:
        return {type(v) for v in get_args(annotation)}
    if origin in (Union, UnionType):
        return set().union(*(_types(a) for a in get_args(annotation)))
    return {origin or annotation}


class SpecModel(BaseModel):
    """Base of spec sections: unknown keys are errors, validated objects are immutable (and hashable). Numbers
    are strict for every field of every section and component: floats must be finite (no ``.inf``/``.nan``),
    and a boolean is never taken for a number (``steps: true`` is an error, not 1)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name is not None:
            admitted = _types(cls.model_fields[info.field_name].annotation)
            if bool not in admitted and Any not in admitted and admitted & {int, float}:
                kind = "an integer" if int in admitted else "a number"
                raise ValueError(f"expected {kind}, got {str(value).lower()}")
        return value


class ComponentConfig(SpecModel):
    """Base of a component's options. Subclass it, declare options with ``Field(default, <constraints>,
    description=...)``; descriptions appear in the JSON schema and in ``titans-plugins show``.

    The field name ``name`` is reserved: it selects the component in a spec and is added by the registry.
    """

    #: Set on tagged subclasses (see module docstring): the kind this config is a component of.
    component_kind: ClassVar[str | None] = None
    #: Set on tagged subclasses: the plugin's own config class (the one passed to ``register``).
    component_base: ClassVar[type[ComponentConfig] | None] = None

    @model_serializer(mode="wrap")
    def _name_first(self, handler: Any) -> Any:
        """Dump ``name`` first, so a dumped spec reads ``{name: mlp, depth: 2}``."""
        data = handler(self)
        if isinstance(data, dict) and NAME_FIELD in data:
            data = {NAME_FIELD: data.pop(NAME_FIELD), **data}
        return data

    def __reduce__(self) -> Any:
        """Pickle tagged configs by (kind, name, base class) since their classes are made at run time."""
        cls = type(self)
        if cls.component_kind is None or cls.component_base is None:
            return super().__reduce__()
        return (_new_tagged, (cls.component_kind, self.name, cls.component_base), self.__getstate__())  # type: ignore[attr-defined]


_TAGGED: dict[tuple[str, str, type[ComponentConfig]], type[ComponentConfig]] = {}
_TAGGED_LOCK = threading.Lock()


def tagged_config_class(kind: str, name: str, config_cls: type[ComponentConfig]) -> type[ComponentConfig]:
    """The subclass of ``config_cls`` with ``name: Literal[name]`` and ``component_kind = kind`` (cached)."""
    key = (kind, name, config_cls)
    with _TAGGED_LOCK:
        tagged = _TAGGED.get(key)
        if tagged is None:
            tagged = create_model(
                config_cls.__name__,
                __base__=config_cls,
                __module__=config_cls.__module__,
                # the qualname names the JSON-schema definition: "memory_model:mlp" -> "memory_model_mlp"
                __qualname__=f"{kind}:{name}",
                __doc__=config_cls.__doc__,
                name=(Literal[name], Field(name, description=f"selects the {kind} {name!r}")),  # type: ignore[arg-type]
            )
            tagged.component_kind = kind
            tagged.component_base = config_cls
            _TAGGED[key] = tagged
        return tagged


def _new_tagged(kind: str, name: str, config_cls: type[ComponentConfig]) -> ComponentConfig:
    cls = tagged_config_class(kind, name, config_cls)
    return cls.__new__(cls)
