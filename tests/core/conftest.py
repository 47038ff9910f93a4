"""Shared fixtures of the titans-core tests: fake entry points/plugins and a small fake component registry.

Every test starts and ends with no process-wide registry (``reset_registry()``), so nothing leaks into other
test suites, and the installed built-in plugins (which other people are still writing) are never needed here.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import pytest
from pydantic import Field
from titans_core import ComponentConfig, ComponentRef, Registry, component_field, hookimpl, reset_registry


@dataclass(frozen=True)
class FakeDist:
    """The two attributes of ``importlib.metadata.Distribution`` the registry reads."""

    name: str
    version: str


@dataclass
class FakeEntryPoint:
    """An entry point whose ``load()`` returns ``target`` (or raises it, if it is an exception)."""

    name: str
    target: Any
    dist: FakeDist | None = None
    value: str = "fake.module"

    def load(self) -> Any:
        if isinstance(self.target, BaseException):
            raise self.target
        return self.target


class FakePlugin:
    """A plugin object (pluggy needs hashable plugins, so not a SimpleNamespace)."""

    register_components: Callable[..., None]


def make_plugin(register_fn: Callable[[Callable[..., None]], None]) -> Any:
    """A plugin object whose ``register_components`` hook runs ``register_fn(register)``."""

    @hookimpl
    def register_components(register: Callable[..., None]) -> None:
        register_fn(register)

    plugin = FakePlugin()
    plugin.register_components = register_components
    return plugin


def registering(*registrations: tuple[str, str, type, Callable[..., Any]]) -> Any:
    """A plugin that registers each ``(kind, name, config_cls, factory)``."""

    def register_all(register: Callable[..., None]) -> None:
        for registration in registrations:
            register(*registration)

    return make_plugin(register_all)


class FakeMLPConfig(ComponentConfig):
    """Options of the fake ``mlp`` memory model."""

    depth: int = Field(2, ge=1, description="number of layers")
    expansion: float = Field(4.0, gt=0, description="hidden width factor")
    activation: Literal["gelu", "silu"] = Field("gelu", description="hidden activation")


class FakeLinearConfig(ComponentConfig):
    """The fake ``linear`` memory model has no options."""


class FakeVariantConfig(ComponentConfig):
    """A fake variant that holds a nested memory model."""

    memory: ComponentRef("memory_model") = component_field("memory_model", "mlp", depth=3)
    layers: int = Field(2, ge=1, description="number of blocks")


def build_fake(config: Any, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    """Factory of the fake components: returns what it was given."""
    return config, kwargs


FAKE = types.SimpleNamespace(
    MLP=FakeMLPConfig,
    Linear=FakeLinearConfig,
    Variant=FakeVariantConfig,
    build=build_fake,
    Dist=FakeDist,
    EntryPoint=FakeEntryPoint,
    plugin=make_plugin,
    registering=registering,
)


@pytest.fixture
def fake() -> types.SimpleNamespace:
    """The fake config classes, factory and entry-point helpers of this conftest."""
    return FAKE


def fake_registry() -> Registry:
    """A registry with memory models ``mlp`` and ``linear`` and the variant ``mac`` (nested memory)."""
    registry = Registry()
    registry.register("memory_model", "mlp", FakeMLPConfig, build_fake, dist="fake-memory", version="0.1.0")
    registry.register("memory_model", "linear", FakeLinearConfig, build_fake, dist="fake-memory", version="0.1.0")
    registry.register("variant", "mac", FakeVariantConfig, build_fake, dist="fake-variants", version="2.0")
    return registry


@pytest.fixture(autouse=True)
def _no_global_registry() -> Iterator[None]:
    reset_registry()
    yield
    reset_registry()


@pytest.fixture
def registry() -> Registry:
    """The fake registry, installed as the process-wide one for the test."""
    registry = fake_registry()
    reset_registry(registry)
    return registry
