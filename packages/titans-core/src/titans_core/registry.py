"""The component registry: every memory model, update rule, objective, variant, … is found here.

Components come from plugins: installed distributions with an entry point in the ``titans`` group whose module
implements the ``register_components`` hook (see ``titans_core.hookspecs``). The built-in packages
(titans-memory, titans-attention, titans-train) register the same way as third-party plugins. Loading uses
pluggy (project name ``titans``); each registry owns its own ``pluggy.PluginManager``
(``Registry.plugin_manager``).

Decisions:

- **Which plugins load.** The environment variable ``TITANS_PLUGINS`` selects them: unset → every entry point;
  empty → none; ``a,b`` → only entry points whose entry-point name *or* distribution name is listed (names are
  compared case-insensitively with ``-``, ``_`` and ``.`` treated alike). A listed name that matches nothing
  is warned about.
- **A plugin that fails to load** (its import raises, its hook raises, it has an unknown hook, or it registers
  something invalid) does not stop the others: none of its registrations are kept, the failure is recorded in
  ``Registry.load_errors`` (entry point, distribution, cause) and warned as :class:`PluginLoadWarning`.
  Looking up a component that is not registered then mentions the failed plugins, and ``titans-plugins list``
  prints them and exits with status 1.
- **Two registrations of the same kind and name** (from two plugins, or twice from one) are an error that
  stops loading: :class:`DuplicateComponentError` names both distributions. Silently picking one would make a
  spec mean different things on different machines.

The process-wide registry is :func:`get_registry` (loaded on first use, then cached); tests build isolated
ones with :meth:`Registry.from_entry_points` (fake entry points welcome) or :class:`Registry` +
:meth:`Registry.register`, and install them with :func:`reset_registry`.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import os
import re
import threading
import warnings
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import pluggy

from titans_core import hookspecs
from titans_core.api import api_problem
from titans_core.config import ComponentConfig, tagged_config_class
from titans_core.contracts import check_contract
from titans_core.errors import (
    ComponentBuildError,
    DuplicateComponentError,
    InvalidRegistrationError,
    PluginLoadWarning,
    TitansUserError,
    UnknownComponentError,
)
from titans_core.protocols import KINDS
from titans_core.rule_contract import short

ENV_VAR = "TITANS_PLUGINS"
TRACEBACK_ENV_VAR = "TITANS_TRACEBACK"  # set: a factory's exception propagates with its traceback
PROGRAMMATIC = "<programmatic>"
UNKNOWN_DIST = "<unknown distribution>"
PLUGIN_HINT = "(If it comes from a plugin, is the plugin installed? Check `titans-plugins list`.)"
_IDENT = re.compile(r"^[a-z][a-z0-9_-]*$")


class FromEnv:
    """Sentinel type: take the allow-list from ``TITANS_PLUGINS``."""


FROM_ENV = FromEnv()


@dataclass(frozen=True)
class Component:
    """One registration: ``factory(config, **kwargs)`` builds component ``kind``/``name`` from its config."""

    kind: str
    name: str
    config_cls: type[ComponentConfig]
    factory: Callable[..., Any]
    dist: str = PROGRAMMATIC
    version: str = ""
    description: str = ""  # one line for `titans-plugins show`; default: the config class's docstring

    @property
    def source(self) -> str:
        """Where it came from, e.g. ``titans-memory 0.1.0``."""
        return f"{self.dist} {self.version}" if self.version else self.dist

    def describe(self) -> str:
        """``update_rule 'x' (plugin my-rules 0.1.0)``: how errors name the component."""
        return f"{self.kind} {self.name!r} (plugin {self.source})"

    @property
    def tagged_config_cls(self) -> type[ComponentConfig]:
        """The class a spec section validates into: ``config_cls`` plus ``name`` (see titans_core.config)."""
        return tagged_config_class(self.kind, self.name, self.config_cls)


@dataclass(frozen=True)
class LoadError:
    """A plugin that failed to load: its entry-point name, distribution and the cause (``Type: message``)."""

    entry_point: str
    dist: str
    cause: str

    def __str__(self) -> str:
        return f"plugin {self.entry_point!r} (dist {self.dist}) failed to load: {self.cause}"


class EntryPointLike(Protocol):
    """What the loader needs of an entry point (``importlib.metadata.EntryPoint`` or a test double)."""

    name: str

    def load(self) -> Any: ...


def parse_allow_list(value: str | None) -> frozenset[str] | None:
    """``TITANS_PLUGINS`` → allow-list: ``None`` (unset) → all plugins; ``""`` → none; ``"a, b"`` → {a, b}."""
    if value is None:
        return None
    return frozenset(part.strip() for part in value.split(",") if part.strip())


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _dist_of(ep: Any) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return UNKNOWN_DIST, ""
    name = getattr(dist, "name", None) or dist.metadata["Name"]
    return str(name), str(getattr(dist, "version", "") or "")


def _cause(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _suggest(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def check_registration(kind: Any, name: Any, config_cls: Any, factory: Any, description: Any = "") -> None:
    """Raise :class:`InvalidRegistrationError` unless the arguments of ``register(...)`` are well formed."""
    where = f"register({kind!r}, {name!r}, ...)"
    if not isinstance(description, str) or "\n" in description.strip():
        raise InvalidRegistrationError(f"{where}: description must be one line of text, got {description!r}")
    for label, value in (("kind", kind), ("name", name)):
        if not isinstance(value, str) or not _IDENT.match(value):
            raise InvalidRegistrationError(
                f"{where}: invalid {label} {value!r}: use lowercase letters, digits, '_' and '-', "
                "starting with a letter"
            )
    if not (isinstance(config_cls, type) and issubclass(config_cls, ComponentConfig)):
        raise InvalidRegistrationError(
            f"{where}: the config class must subclass titans_core.ComponentConfig, got {config_cls!r}"
        )
    if config_cls.component_kind is not None:
        raise InvalidRegistrationError(f"{where}: pass the plugin's own config class, not a tagged one")
    if "name" in config_cls.model_fields:
        raise InvalidRegistrationError(
            f"{where}: {config_cls.__name__} declares the field 'name', which is reserved for selecting components"
        )
    if not callable(factory):
        raise InvalidRegistrationError(f"{where}: the factory must be callable, got {factory!r}")


def _new_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    return pm


class Registry:
    """Components by (kind, name), plus the plugins that failed to load. See the module docstring."""

    def __init__(self) -> None:
        self._components: dict[tuple[str, str], Component] = {}
        self.load_errors: list[LoadError] = []
        self.warnings: list[str] = []
        self.allow: frozenset[str] | None = None
        self.plugin_manager: pluggy.PluginManager = _new_plugin_manager()

    # ----------------------------------------------------------------------------------------------- loading
    @classmethod
    def from_entry_points(
        cls,
        entry_points: Iterable[EntryPointLike] | None = None,
        *,
        allow: Collection[str] | None | FromEnv = FROM_ENV,
    ) -> Registry:
        """Load plugins from ``entry_points`` (default: the installed ``titans`` group).

        ``allow``: names of entry points or distributions to load; ``None`` loads all; the default reads
        ``TITANS_PLUGINS``. Failed plugins are recorded and warned; duplicates raise DuplicateComponentError.
        """
        registry = cls()
        if isinstance(allow, FromEnv):
            allow = parse_allow_list(os.environ.get(ENV_VAR))
        registry.allow = None if allow is None else frozenset(allow)
        if entry_points is None:
            entry_points = importlib.metadata.entry_points(group=hookspecs.ENTRY_POINT_GROUP)
        unique = {(ep.name, getattr(ep, "value", ""), _dist_of(ep)): ep for ep in entry_points}
        ordered = sorted(unique.items(), key=lambda item: (_normalize(item[0][2][0]), item[0][0]))
        wanted = None if registry.allow is None else {_normalize(n) for n in registry.allow}
        matched: set[str] = set()
        for (ep_name, _value, (dist, _version)), ep in ordered:
            if wanted is not None:
                hits = wanted & {_normalize(ep_name), _normalize(dist)}
                if not hits:
                    continue
                matched |= hits
            error = registry.load_entry_point(ep)
            if error is not None:
                warnings.warn(str(error), PluginLoadWarning, stacklevel=2)
        if wanted:
            for name in sorted(registry.allow or ()):
                if _normalize(name) not in matched:
                    installed = ", ".join(sorted({k[0] for k in unique} | {k[2][0] for k in unique})) or "none"
                    message = f"{ENV_VAR} lists {name!r}, which matches no installed plugin"
                    message += f" (installed: {installed})"
                    registry.warnings.append(message)
                    warnings.warn(message, PluginLoadWarning, stacklevel=2)
        return registry

    def load_entry_point(self, ep: EntryPointLike) -> LoadError | None:
        """Import one plugin and run its hook; all-or-nothing. Returns (and records) the failure, if any."""
        dist, version = _dist_of(ep)
        staged: list[Component] = []

        def register(
            kind: str, name: str, config_cls: type, factory: Callable[..., Any], *, description: str = ""
        ) -> None:
            check_registration(kind, name, config_cls, factory, description)
            staged.append(Component(kind, name, config_cls, factory, dist, version, description))

        pm = self.plugin_manager
        plugin: Any = None
        try:
            plugin = ep.load()
            problem = api_problem(plugin)
            if problem is not None:  # incompatible: its hook is not run (it may call what this core lacks)
                error = LoadError(ep.name, dist, problem)
                self.load_errors.append(error)
                return error
            pm.register(plugin, name=ep.name)
            pm.check_pending()  # earlier plugins passed: a failure is this one's (e.g. a misspelt hook)
            others = [p for p in pm.get_plugins() if p is not plugin]
            pm.subset_hook_caller("register_components", remove_plugins=others)(register=register)
        except Exception as exc:  # any failure of a plugin is recorded, not raised
            if plugin is not None and pm.is_registered(plugin):
                pm.unregister(plugin)
            error = LoadError(ep.name, dist, _cause(exc))
            self.load_errors.append(error)
            return error
        self._add_all(staged)
        return None

    def register(
        self,
        kind: str,
        name: str,
        config_cls: type[ComponentConfig],
        factory: Callable[..., Any],
        *,
        dist: str = PROGRAMMATIC,
        version: str = "",
        description: str = "",
    ) -> Component:
        """Register a component directly (tests, notebooks). Same checks as plugin registrations."""
        check_registration(kind, name, config_cls, factory, description)
        component = Component(kind, name, config_cls, factory, dist, version, description)
        self._add_all([component])
        return component

    def _add_all(self, components: list[Component]) -> None:
        seen: dict[tuple[str, str], Component] = {}
        for component in components:
            key = (component.kind, component.name)
            first = self._components.get(key) or seen.get(key)
            if first is not None:
                raise DuplicateComponentError(
                    f"{component.kind} {component.name!r} is registered twice: by {first.source} and by "
                    f"{component.source} (uninstall one, or choose the plugins to load with {ENV_VAR})"
                )
            seen[key] = component
        self._components.update(seen)

    # ------------------------------------------------------------------------------------------------ lookup
    def kinds(self) -> list[str]:
        """The kinds that have at least one component, sorted."""
        return sorted({kind for kind, _ in self._components})

    def names(self, kind: str) -> list[str]:
        """The registered names of ``kind``, sorted (empty for a kind with no components)."""
        return sorted(name for k, name in self._components if k == kind)

    def components(self, kind: str | None = None) -> list[Component]:
        """All components (or those of ``kind``), sorted by kind then name."""
        return [self._components[key] for key in sorted(self._components) if kind is None or key[0] == kind]

    def get(self, kind: str, name: str) -> Component:
        """The component ``kind``/``name``; :class:`UnknownComponentError` (with suggestions) if none."""
        component = self._components.get((kind, name))
        if component is None:
            raise UnknownComponentError(self.unknown_error_text(kind, name))
        return component

    def config_class(self, kind: str, name: str) -> type[ComponentConfig]:
        """The tagged config class that a ``{name: <name>, ...}`` section of this kind validates into."""
        return self.get(kind, name).tagged_config_cls

    def build(self, config: ComponentConfig, **kwargs: Any) -> Any:
        """``factory(config, **kwargs)`` of the component a validated config selects (``config.name``),
        checked against its kind's protocol (``titans_core.contracts.check_contract``; ``ContractError``)."""
        kind = getattr(type(config), "component_kind", None)
        if not isinstance(config, ComponentConfig) or kind is None:
            raise TypeError(
                "Registry.build() needs a config validated through ComponentRef (a spec) or made by "
                f"titans_core.spec.make_config(kind, name, ...); got {type(config).__name__}"
            )
        component = self.get(kind, config.name)  # type: ignore[attr-defined]
        try:
            built = component.factory(config, **kwargs)
        except (TitansUserError, ValueError):  # already one line (a nested component's), or a spec error
            raise
        except Exception as exc:
            if os.environ.get(TRACEBACK_ENV_VAR):
                raise
            raise ComponentBuildError(
                f"{component.describe()} failed to build: {short(exc)} (set {TRACEBACK_ENV_VAR}=1 for the traceback)"
            ) from exc
        key = (kind, component.factory, config.model_dump_json())
        if key not in _CHECKED:  # once per configuration: a variant builds its memory once per layer
            check_contract(kind, built, who=component.describe())
            _CHECKED.add(key)
        return built

    # ------------------------------------------------------------------------------------------------ errors
    def is_known_kind(self, kind: str) -> bool:
        """Whether ``kind`` is a core kind (``protocols.KINDS``) or has registered components."""
        return kind in KINDS or any(k == kind for k, _ in self._components)

    def unknown_message(self, kind: str, name: Any) -> str:
        """One line saying that ``kind``/``name`` is unknown, with the known ones and a close match."""
        if not self.is_known_kind(kind):
            known = sorted(set(KINDS) | set(self.kinds()))
            suggestion = _suggest(kind, known)
            return f"unknown component kind {kind!r}; known kinds: {', '.join(known)}.{suggestion} {PLUGIN_HINT}"
        names = self.names(kind)
        if not names:
            return f"unknown {kind} {name!r}; no {kind} is registered. {PLUGIN_HINT}"
        suggestion = _suggest(name, names) if isinstance(name, str) else ""
        return f"unknown {kind} {name!r}; known: {', '.join(names)}.{suggestion} {PLUGIN_HINT}"

    def notes(self) -> list[str]:
        """Context for lookup failures: plugins that failed to load, and a restricting TITANS_PLUGINS."""
        notes = [str(error) for error in self.load_errors]
        if self.allow is not None and not self.allow:
            notes.append(f"{ENV_VAR} is set but empty, so no plugin was loaded")
        elif self.allow is not None:
            notes.append(f"only the plugins listed in {ENV_VAR}={','.join(sorted(self.allow))!r} were loaded")
        return notes

    def unknown_error_text(self, kind: str, name: Any) -> str:
        """:meth:`unknown_message` followed by one ``note:`` line per :meth:`notes` entry."""
        return "\n".join([self.unknown_message(kind, name), *(f"note: {note}" for note in self.notes())])


_CHECKED: set[tuple[str, Any, str]] = set()  # (kind, factory, config JSON) that passed their contract check
_registry: Registry | None = None
_registry_lock = threading.Lock()


def get_registry() -> Registry:
    """The process-wide registry, loaded from the installed plugins (see TITANS_PLUGINS) on first use."""
    global _registry
    registry = _registry
    if registry is None:
        with _registry_lock:
            if _registry is None:
                _registry = Registry.from_entry_points()
            registry = _registry
    return registry


def reset_registry(registry: Registry | None = None) -> None:
    """Forget the process-wide registry (the next :func:`get_registry` reloads), or install ``registry``."""
    global _registry
    with _registry_lock:
        _registry = registry
