"""The contract probes trace the paths a chunked rule really takes (T = 2·chunk + 3, split and unaligned calls,
per-channel α, bfloat16), a factory's exception is one line naming the plugin, and the plugin API version is
checked at load. Every failure is one line naming component and plugin, raised when the component is built."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from titans_core import (
    PLUGIN_API,
    ComponentBuildError,
    ComponentConfig,
    ContractError,
    PluginLoadWarning,
    Registry,
    TitansUserError,
    init_rule_state,
    make_config,
    reset_registry,
)
from titans_core.cli import app
from typer.testing import CliRunner


class NoOptions(ComponentConfig):
    """No options."""


class ChunkedRule:
    """A correct chunked rule (chunk 4, no learning, reads M_{t'}): whole chunks under lax.scan, then a tail;
    an unaligned call goes token by token. Subclasses plant one bug each."""

    chunk_size = 4

    def __init__(self, config=None):
        pass

    def init_state(self, params0):
        return init_rule_state(params0)

    def chunks(self, x_TxD):
        n = x_TxD.shape[0] // self.chunk_size
        return x_TxD[: n * self.chunk_size].reshape(n, self.chunk_size, -1), x_TxD[n * self.chunk_size :]

    def __call__(self, model, state, q_TxD, k_TxD, v_TxD, gates, *, aligned=False, objective=None):
        keep = jnp.prod(1 - gates.alpha_TxC[:, :1])  # reads α (any C)
        T = q_TxD.shape[0]
        if aligned:
            whole, tail = self.chunks(q_TxD)
            ys = jax.lax.scan(lambda c, q: (c, model.apply(c, q)), state.start, whole)[1]
            y = jnp.concatenate([ys.reshape(-1, q_TxD.shape[1]), model.apply(state.start, tail)])
        else:
            y = model.apply(state.start, q_TxD)
        memory = jax.tree.map(lambda m: m * keep.astype(m.dtype), state.memory)
        pos = (state.pos + T) % self.chunk_size
        return y, state._replace(memory=memory, pos=pos.astype(jnp.int32))


class WholeChunkBugRule(ChunkedRule):
    """The issue's bug: the whole-chunk path unpacks the wrong thing — T = 3 (under a chunk) never reaches it."""

    def chunks(self, x_TxD):
        if x_TxD.shape[0] >= self.chunk_size:
            whole, tail = jnp.split(x_TxD, [self.chunk_size, 2 * self.chunk_size])  # 3 pieces
        return super().chunks(x_TxD)


class UnalignedBugRule(ChunkedRule):
    def __call__(self, model, state, q_TxD, k_TxD, v_TxD, gates, *, aligned=False, objective=None):
        if not aligned:
            q_TxD = q_TxD.reshape(-1, self.chunk_size, q_TxD.shape[1])  # only whole chunks fit
        return super().__call__(model, state, q_TxD, k_TxD, v_TxD, gates, aligned=aligned, objective=objective)


class ScalarAlphaRule(ChunkedRule):
    """Assumes one α per token."""

    def __call__(self, model, state, q_TxD, k_TxD, v_TxD, gates, *, aligned=False, objective=None):
        gates = gates._replace(alpha_TxC=gates.alpha_TxC.reshape(q_TxD.shape[0], 1))
        return super().__call__(model, state, q_TxD, k_TxD, v_TxD, gates, aligned=aligned, objective=objective)


class ScalarAlphaDeclaredRule(ScalarAlphaRule):
    alpha_per_channel = False  # says so: the per-channel probe is skipped (NeuralMemory refuses the option)


class Float32Rule(ChunkedRule):
    """Computes in float32 whatever it is given: the state changes dtype under bfloat16."""

    def __call__(self, model, state, q_TxD, k_TxD, v_TxD, gates, *, aligned=False, objective=None):
        y, new = super().__call__(model, state, q_TxD, k_TxD, v_TxD, gates, aligned=aligned, objective=objective)
        return y, new._replace(memory=jax.tree.map(lambda m: m.astype(jnp.float32), new.memory))


class BadGatesRule(ChunkedRule):
    gates = ("theta", "momentum")


def _registry(fake, kind, factory, *, api=None) -> Registry:
    plugin = fake.registering((kind, "probe", NoOptions, factory))
    if api is not None:
        plugin.TITANS_PLUGIN_API = api
    registry = Registry.from_entry_points([fake.EntryPoint("probe_ep", plugin, fake.Dist("probe-plugin", "0.2"))])
    reset_registry(registry)
    return registry


def _contract_error(fake, factory) -> str:
    registry = _registry(fake, "update_rule", factory)
    with pytest.raises(ContractError) as info:
        registry.build(make_config("update_rule", "probe"))
    message = str(info.value)
    assert "\n" not in message and message.startswith("update_rule 'probe' (plugin probe-plugin 0.2) does not ")
    return message


def test_a_correct_chunked_rule_passes(fake):
    assert isinstance(
        _registry(fake, "update_rule", ChunkedRule).build(make_config("update_rule", "probe")), ChunkedRule
    )


@pytest.mark.parametrize(
    ("factory", "expected"),
    [
        (WholeChunkBugRule, "on a fresh sequence of 11 tokens (aligned=True) raised ValueError: too many values"),
        (UnalignedBugRule, "on 6 tokens after 11 (aligned=False) raised TypeError"),
        (ScalarAlphaRule, "on a fresh sequence of 11 tokens (aligned=True, with per-channel α) raised TypeError"),
        (
            Float32Rule,
            "(aligned=True, in bfloat16): RuleState.memory['w'] changed from bfloat16[8, 8] to float32[8, 8]",
        ),
        (BadGatesRule, "gates must be a collection of names from ('theta', 'eta', 'alpha'), got ('theta', 'momentum')"),
    ],
    ids=lambda v: getattr(v, "__name__", "msg"),
)
def test_bugs_on_the_real_paths_are_one_line_at_build_time(fake, factory, expected):
    assert expected in _contract_error(fake, factory)


def test_a_rule_that_declares_one_alpha_per_token_is_not_probed_per_channel(fake):
    _registry(fake, "update_rule", ScalarAlphaDeclaredRule).build(make_config("update_rule", "probe"))


def test_a_factory_that_raises_is_one_line_naming_the_plugin(fake):
    class Missing:
        def __init__(self, config):
            self.width = config.width  # a config field the plugin forgot to declare

    registry = _registry(fake, "memory_model", Missing)
    with pytest.raises(ComponentBuildError) as info:
        registry.build(make_config("memory_model", "probe"))
    assert isinstance(info.value, TitansUserError)
    assert str(info.value) == (
        "memory_model 'probe' (plugin probe-plugin 0.2) failed to build: AttributeError: 'NoOptions' object has no "
        "attribute 'width' (set TITANS_TRACEBACK=1 for the traceback)"
    )


def test_a_factory_value_error_stays_a_value_error(fake):
    def refuses(config):
        raise ValueError("this option combination is not supported")

    registry = _registry(fake, "memory_model", refuses)
    with pytest.raises(ValueError, match="^this option combination"):  # titans-train reports it as a spec error
        registry.build(make_config("memory_model", "probe"))


# --------------------------------------------------------------------------------------------- API version
def test_plugins_declaring_a_compatible_api_load(fake):
    for api in (PLUGIN_API, f"{PLUGIN_API.split('.')[0]}.0", None):
        registry = _registry(fake, "update_rule", ChunkedRule, api=api)
        assert registry.load_errors == [] and registry.names("update_rule") == ["probe"]


@pytest.mark.parametrize(
    ("api", "reason"),
    [
        ("1.99", "needs Titans plugin API 1.99, but titans-core "),
        ("0.9", "install a release of the plugin written for plugin API 1.x"),
        ("one", 'TITANS_PLUGIN_API must be a string "MAJOR.MINOR"'),
    ],
)
def test_an_incompatible_plugin_is_listed_with_the_reason(fake, api, reason):
    with pytest.warns(PluginLoadWarning, match=reason.split(",")[0][:30]):
        registry = _registry(fake, "update_rule", ChunkedRule, api=api)  # installed as the process-wide one
    assert registry.names("update_rule") == []
    (error,) = registry.load_errors
    assert error.dist == "probe-plugin" and reason in error.cause
    if api == "1.99":
        assert "upgrade titans-core" in error.cause
    result = CliRunner().invoke(app, ["list"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: plugin 'probe_ep' (dist probe-plugin) failed to load: ")
    assert reason in result.stderr
