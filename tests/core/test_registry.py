"""The plugin registry: entry-point discovery, TITANS_PLUGINS, conflicts, failing plugins, lookups."""

from __future__ import annotations

import warnings

import pytest
from titans_core import (
    DuplicateComponentError,
    InvalidRegistrationError,
    MemoryModel,
    PluginLoadWarning,
    Registry,
    UnknownComponentError,
    get_registry,
    make_config,
    reset_registry,
)
from titans_core.registry import parse_allow_list

HINT = "(If it comes from a plugin, is the plugin installed? Check `titans-plugins list`.)"


# ------------------------------------------------------------------------------- the real installed plugin
def test_discovers_the_installed_example_plugin_through_its_entry_point(monkeypatch):
    monkeypatch.setenv("TITANS_PLUGINS", "swiglu_memory")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # loading only the example plugin must be clean
        registry = Registry.from_entry_points()
    component = registry.get("memory_model", "swiglu")
    assert (component.dist, component.version) == ("titans-swiglu-memory", "0.1.0")
    assert component.config_cls.__name__ == "SwiGLUMemoryConfig"
    assert registry.names("memory_model") == ["swiglu"]
    assert registry.load_errors == []
    assert registry.plugin_manager.has_plugin("swiglu_memory")


def test_get_registry_is_lazy_cached_and_resettable(monkeypatch):
    monkeypatch.setenv("TITANS_PLUGINS", "titans-swiglu-memory")  # a distribution name works too
    first = get_registry()
    assert get_registry() is first
    assert first.names("memory_model") == ["swiglu"]
    memory = first.build(make_config("memory_model", "swiglu", expansion=3))
    assert isinstance(memory, MemoryModel) and memory.hidden_width(4) == 12
    monkeypatch.setenv("TITANS_PLUGINS", "")
    assert get_registry() is first  # cached until reset
    reset_registry()
    assert get_registry().components() == []


def test_empty_titans_plugins_loads_nothing(monkeypatch):
    monkeypatch.setenv("TITANS_PLUGINS", "")
    registry = Registry.from_entry_points()
    assert registry.components() == [] and registry.load_errors == []
    with pytest.raises(UnknownComponentError) as info:
        registry.get("memory_model", "swiglu")
    assert str(info.value) == (
        f"unknown memory_model 'swiglu'; no memory_model is registered. {HINT}\n"
        "note: TITANS_PLUGINS is set but empty, so no plugin was loaded"
    )


def test_parse_allow_list():
    assert parse_allow_list(None) is None
    assert parse_allow_list("") == frozenset()
    assert parse_allow_list(" a , b,,") == {"a", "b"}


# ------------------------------------------------------------------------------------ fake entry points
def test_allow_list_matches_entry_point_or_distribution_names(fake):
    one = fake.EntryPoint(
        "one", fake.registering(("memory_model", "a", fake.Linear, fake.build)), fake.Dist("pkg-one", "1")
    )
    two = fake.EntryPoint(
        "two", fake.registering(("memory_model", "b", fake.Linear, fake.build)), fake.Dist("pkg-two", "1")
    )
    assert Registry.from_entry_points([one, two], allow=None).names("memory_model") == ["a", "b"]
    assert Registry.from_entry_points([one, two], allow=["two"]).names("memory_model") == ["b"]
    assert Registry.from_entry_points([one, two], allow=["PKG_one"]).names("memory_model") == ["a"]
    assert Registry.from_entry_points([one, two], allow=[]).names("memory_model") == []


def test_allow_list_entry_that_matches_nothing_is_warned(fake):
    one = fake.EntryPoint("one", fake.registering(), fake.Dist("pkg-one", "1"))
    with pytest.warns(PluginLoadWarning) as record:
        registry = Registry.from_entry_points([one], allow=["one", "oen"])
    message = "TITANS_PLUGINS lists 'oen', which matches no installed plugin (installed: one, pkg-one)"
    assert [str(w.message) for w in record] == [message]
    assert registry.warnings == [message]


def test_two_plugins_registering_the_same_name_is_an_error_naming_both(fake):
    builtin = fake.EntryPoint(
        "titans_memory",
        fake.registering(("memory_model", "mlp", fake.MLP, fake.build)),
        fake.Dist("titans-memory", "0.1.0"),
    )
    other = fake.EntryPoint(
        "other",
        fake.registering(("memory_model", "mlp", fake.MLP, fake.build)),
        fake.Dist("other-plugin", "1.2.0"),
    )
    with pytest.raises(DuplicateComponentError) as info:  # plugins load in order of distribution name
        Registry.from_entry_points([builtin, other], allow=None)
    assert str(info.value) == (
        "memory_model 'mlp' is registered twice: by other-plugin 1.2.0 and by titans-memory 0.1.0 "
        "(uninstall one, or choose the plugins to load with TITANS_PLUGINS)"
    )
    # the allow-list resolves the conflict
    assert (
        Registry.from_entry_points([other, builtin], allow=["other"]).get("memory_model", "mlp").dist == "other-plugin"
    )


def test_programmatic_duplicate_is_an_error(fake):
    registry = Registry()
    registry.register("memory_model", "mlp", fake.MLP, fake.build)
    with pytest.raises(DuplicateComponentError, match=r"by <programmatic> and by tests 9"):
        registry.register("memory_model", "mlp", fake.MLP, fake.build, dist="tests", version="9")


def test_failing_import_is_recorded_warned_and_the_others_still_load(fake):
    broken = fake.EntryPoint("foo", ModuleNotFoundError("No module named 'bar'"), fake.Dist("foo-pkg", "0.3"))
    good = fake.EntryPoint(
        "good", fake.registering(("memory_model", "mlp", fake.MLP, fake.build)), fake.Dist("good", "1")
    )
    message = "plugin 'foo' (dist foo-pkg) failed to load: ModuleNotFoundError: No module named 'bar'"
    with pytest.warns(PluginLoadWarning) as record:
        registry = Registry.from_entry_points([broken, good], allow=None)
    assert [str(w.message) for w in record] == [message]
    assert registry.names("memory_model") == ["mlp"]
    [error] = registry.load_errors
    assert (error.entry_point, error.dist, error.cause) == (
        "foo",
        "foo-pkg",
        "ModuleNotFoundError: No module named 'bar'",
    )
    assert str(error) == message
    with pytest.raises(UnknownComponentError) as info:
        registry.get("memory_model", "mpl")
    assert str(info.value) == (f"unknown memory_model 'mpl'; known: mlp. Did you mean 'mlp'? {HINT}\nnote: {message}")


def test_a_hook_that_raises_is_a_load_failure_and_keeps_none_of_its_registrations(fake):
    def half_then_fail(register):
        register("memory_model", "first", fake.Linear, fake.build)
        raise RuntimeError("boom")

    flaky = fake.EntryPoint("flaky", fake.plugin(half_then_fail), fake.Dist("flaky-pkg", "1"))
    with pytest.warns(
        PluginLoadWarning, match="plugin 'flaky' \\(dist flaky-pkg\\) failed to load: RuntimeError: boom"
    ):
        registry = Registry.from_entry_points([flaky], allow=None)
    assert registry.components() == []
    assert not registry.plugin_manager.is_registered(flaky.target)


@pytest.mark.parametrize(
    ("registration", "cause"),
    [
        (
            ("Memory", "x"),
            "register('Memory', 'x', ...): invalid kind 'Memory': use lowercase letters, digits, "
            "'_' and '-', starting with a letter",
        ),
        (
            ("memory_model", "my mlp"),
            "register('memory_model', 'my mlp', ...): invalid name 'my mlp': use lowercase "
            "letters, digits, '_' and '-', starting with a letter",
        ),
        (
            ("memory_model", ""),
            "register('memory_model', '', ...): invalid name '': use lowercase letters, digits, "
            "'_' and '-', starting with a letter",
        ),
    ],
)
def test_invalid_names_are_load_errors(fake, registration, cause):
    bad = fake.EntryPoint("bad", fake.registering((*registration, fake.Linear, fake.build)), fake.Dist("bad", "1"))
    with pytest.warns(PluginLoadWarning):
        registry = Registry.from_entry_points([bad], allow=None)
    assert registry.load_errors[0].cause == f"InvalidRegistrationError: {cause}"


def test_invalid_config_classes_and_factories_are_rejected(fake):
    registry = Registry()
    with pytest.raises(InvalidRegistrationError, match="must subclass titans_core.ComponentConfig, got <class 'dict'>"):
        registry.register("memory_model", "x", dict, fake.build)  # type: ignore[arg-type]
    with pytest.raises(InvalidRegistrationError, match="the factory must be callable, got 3"):
        registry.register("memory_model", "x", fake.Linear, 3)  # type: ignore[arg-type]
    named = type("Named", (fake.Linear,), {"__annotations__": {"name": str}, "name": "x"})
    with pytest.raises(InvalidRegistrationError, match="Named declares the field 'name', which is reserved"):
        registry.register("memory_model", "x", named, fake.build)
    assert registry.components() == []


def test_a_misspelt_hook_is_a_load_error(fake):
    from titans_core import hookimpl

    class Misspelt:
        @hookimpl
        def register_component(self, register):  # missing "s"
            pass

    ep = fake.EntryPoint("typo", Misspelt(), fake.Dist("typo-pkg", "1"))
    with pytest.warns(PluginLoadWarning):
        registry = Registry.from_entry_points([ep], allow=None)
    assert registry.load_errors[0].cause.startswith("PluginValidationError: unknown hook 'register_component'")


# ------------------------------------------------------------------------------------------------ lookups
def test_lookup_api(registry, fake):
    assert registry.kinds() == ["memory_model", "variant"]
    assert registry.names("memory_model") == ["linear", "mlp"]
    assert registry.names("objective") == []
    assert [(c.kind, c.name) for c in registry.components()] == [
        ("memory_model", "linear"),
        ("memory_model", "mlp"),
        ("variant", "mac"),
    ]
    component = registry.get("memory_model", "mlp")
    assert (component.config_cls, component.factory, component.source) == (
        fake.MLP,
        fake.build,
        "fake-memory 0.1.0",
    )
    with pytest.raises(AttributeError):
        component.name = "other"  # type: ignore[misc]


def test_unknown_name_and_kind_messages(registry):
    with pytest.raises(UnknownComponentError) as info:
        registry.get("memory_model", "mpl")
    assert str(info.value) == f"unknown memory_model 'mpl'; known: linear, mlp. Did you mean 'mlp'? {HINT}"
    with pytest.raises(UnknownComponentError) as info:
        registry.get("memory_model", "transformer")
    assert str(info.value) == f"unknown memory_model 'transformer'; known: linear, mlp. {HINT}"
    with pytest.raises(UnknownComponentError) as info:
        registry.get("memroy_model", "mlp")
    assert str(info.value) == (
        "unknown component kind 'memroy_model'; known kinds: attention, data_source, memory_model, objective, "
        f"update_rule, variant. Did you mean 'memory_model'? {HINT}"
    )


def test_build_calls_the_factory_of_the_selected_component(registry, fake):
    registry.register("widget", "mlp", fake.MLP, fake.build)  # a plugin-defined kind: no contract to check
    config = make_config("widget", "mlp", depth=5)
    built, kwargs = registry.build(config, rngs="RNG")
    assert built is config and kwargs == {"rngs": "RNG"}
    with pytest.raises(TypeError, match="needs a config validated through ComponentRef"):
        registry.build(fake.MLP(depth=5))
