"""Components are checked against their kind's protocol when the registry builds them: one line naming the
component, its plugin (distribution) and what is missing. One fake plugin per violation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from titans_core import (
    ComponentConfig,
    ContractError,
    Registry,
    RuleState,
    TitansUserError,
    check_contract,
    init_rule_state,
    make_config,
    reset_registry,
)


class NoOptions(ComponentConfig):
    """No options."""


# ------------------------------------------------------------------------------- well-behaved components
class GoodModel:
    """M(x) = x W_a W_b with nested parameters {"layers": [{"w": …}, {"w": …}]}."""

    channel_axis_ok = False

    def __init__(self, config=None):
        pass

    def init(self, key, dim):
        return {"layers": [{"w": jnp.eye(dim)}, {"w": jnp.eye(dim)}]}

    def apply(self, params, x_TxD):
        for layer in params["layers"]:
            x_TxD = x_TxD @ layer["w"]
        return x_TxD


class GoodRule:
    """Reads M_0 and never learns — the smallest rule that satisfies UpdateRule."""

    chunk_size = 1

    def __init__(self, config=None):
        pass

    def init_state(self, params0):
        return init_rule_state(params0)

    def __call__(self, model, state, q_TxD, k_TxD, v_TxD, gates, *, aligned=False, objective=None):
        return model.apply(state.start, q_TxD), state


class GoodObjective:
    def __init__(self, config=None):
        pass

    def loss(self, pred_TxD, v_TxD):
        return jnp.sum((pred_TxD - v_TxD) ** 2, axis=-1)

    def cotangent(self, pred_TxD, v_TxD):
        return 2.0 * (pred_TxD - v_TxD)


# ---------------------------------------------------------------------------- one plugin per violation
class TupleStateRule(GoodRule):
    """The issue's first crash: init_state returns a plain tuple, not RuleState."""

    def init_state(self, params0):
        return tuple(init_rule_state(params0))


class NoAlignedRule(GoodRule):
    """The issue's second crash: __call__ written to the old protocol, without the aligned= keyword."""

    def __call__(self, model, state, q_TxD, k_TxD, v_TxD, gates):
        return model.apply(state.start, q_TxD), state


class NoObjectiveRule(GoodRule):
    def __call__(self, model, state, q_TxD, k_TxD, v_TxD, gates, *, aligned=False):
        return model.apply(state.start, q_TxD), state


class FlatStateRule(GoodRule):
    """Returns its state with the parameters flattened to a list (not the memory model's structure)."""

    def __call__(self, model, state, q_TxD, k_TxD, v_TxD, gates, *, aligned=False, objective=None):
        flat = jax.tree.leaves(state.memory)
        return model.apply(state.start, q_TxD), RuleState(flat, flat, flat, state.pos)


class NoChunkRule(GoodRule):
    chunk_size = 0


class IntModel(GoodModel):
    def init(self, key, dim):
        return {"w": jnp.zeros((dim, dim), jnp.int32)}


class WrongShapeModel(GoodModel):
    def apply(self, params, x_TxD):
        return jnp.sum(x_TxD, axis=-1)


class NoChannelAttr:
    def __init__(self, config=None):
        pass

    def init(self, key, dim):
        return {"w": jnp.eye(dim)}


class BadChannelModel(GoodModel):
    channel_axis_ok = True

    def init(self, key, dim):
        return {"w": jnp.eye(dim), "b": jnp.zeros((1,))}


class RaisingModel(GoodModel):
    def init(self, key, dim):
        raise RuntimeError("no weights today")


class BadNormsModel(GoodModel):
    def grad_norms(self, params, k_TxD, cot_TxD):  # one norm per channel instead of one per token
        return jnp.sum(k_TxD * cot_TxD, axis=0)


class NormsModel(GoodModel):
    def grad_norms(self, params, k_TxD, cot_TxD):
        return jnp.linalg.norm(k_TxD, axis=-1) * jnp.linalg.norm(cot_TxD, axis=-1)


class ScalarLossObjective(GoodObjective):
    def loss(self, pred_TxD, v_TxD):
        return jnp.sum((pred_TxD - v_TxD) ** 2)


class NoCotangentObjective:
    def __init__(self, config=None):
        pass

    def loss(self, pred_TxD, v_TxD):
        return jnp.sum((pred_TxD - v_TxD) ** 2, axis=-1)


class NoDecodeVariant:  # (and no prefill)
    def __init__(self, config=None):
        pass

    def __call__(self, tokens_BxT):
        return tokens_BxT

    def init_cache(self, batch_size):
        return None


class NoLoadSource:
    def __init__(self, config=None):
        pass


VIOLATIONS = [
    (
        "update_rule",
        TupleStateRule,
        "does not satisfy UpdateRule: init_state(params0) must return titans_core.RuleState "
        "(build it with titans_core.init_rule_state), got tuple",
    ),
    (
        "update_rule",
        NoAlignedRule,
        "does not satisfy UpdateRule: __call__ must accept (model, state, q_TxD, k_TxD, v_TxD, gates, *, "
        "aligned=False, objective=None) (got an unexpected keyword argument 'aligned')",
    ),
    ("update_rule", NoObjectiveRule, "(got an unexpected keyword argument 'objective')"),
    ("update_rule", FlatStateRule, "RuleState.start must have the structure of the parameters"),
    ("update_rule", NoChunkRule, "does not satisfy UpdateRule: chunk_size must be an int ≥ 1, got 0"),
    (
        "memory_model",
        IntModel,
        "does not satisfy MemoryModel: init(key, 8): parameter ['w'] must be a float array, got int32",
    ),
    (
        "memory_model",
        WrongShapeModel,
        "does not satisfy MemoryModel: apply(params, x_TxD) must return a T×dim array (3, 8), got (3,)",
    ),
    (
        "memory_model",
        NoChannelAttr,
        "does not satisfy MemoryModel: has no method apply(params, x_TxD); has no attribute channel_axis_ok (bool)",
    ),
    ("memory_model", BadChannelModel, "channel_axis_ok is true but parameter ['b'] (shape (1,))"),
    ("memory_model", RaisingModel, "init(key, 8) raised RuntimeError: no weights today"),
    (
        "memory_model",
        BadNormsModel,
        "grad_norms(params, k_TxD, cot_TxD) must return one norm per token, shape (3,), got (8,)",
    ),
    ("objective", ScalarLossObjective, "loss(pred_TxD, v_TxD) must return shape (3,), got ()"),
    ("objective", NoCotangentObjective, "Objective: has no method cotangent(pred_TxD, v_TxD)"),
    (
        "variant",
        NoDecodeVariant,
        "Variant: has no method prefill(tokens_BxT); has no method decode(tokens_BxT, cache)",
    ),
    ("data_source", NoLoadSource, "does not satisfy the data_source contract: has no method load()"),
]


def _plugin_registry(fake, kind, factory) -> Registry:
    """A registry that loaded one fake plugin (distribution ``bad-plugin 0.3``) registering kind/``bad``."""
    plugin = fake.registering((kind, "bad", NoOptions, factory))
    ep = fake.EntryPoint("bad_plugin", plugin, fake.Dist("bad-plugin", "0.3"))
    registry = Registry.from_entry_points([ep], allow=None)
    assert registry.load_errors == []
    reset_registry(registry)  # make_config looks components up in the process-wide registry
    return registry


@pytest.mark.parametrize(("kind", "factory", "expected"), VIOLATIONS, ids=[v[1].__name__ for v in VIOLATIONS])
def test_each_violation_is_one_line_naming_the_plugin(fake, kind, factory, expected):
    registry = _plugin_registry(fake, kind, factory)
    config = make_config(kind, "bad")
    with pytest.raises(ContractError) as info:
        registry.build(config)
    message = str(info.value)
    assert isinstance(info.value, TitansUserError)  # CLIs print it as one "error:" line, exit status 2
    assert "\n" not in message
    assert message.startswith(f"{kind} 'bad' (plugin bad-plugin 0.3) does not satisfy ")
    assert expected in message


@pytest.mark.parametrize(
    ("kind", "factory"),
    [
        ("update_rule", GoodRule),
        ("memory_model", GoodModel),
        ("memory_model", NormsModel),
        ("objective", GoodObjective),
    ],
)
def test_components_that_fit_pass_including_nested_parameters(fake, kind, factory):
    registry = _plugin_registry(fake, kind, factory)
    assert isinstance(registry.build(make_config(kind, "bad")), factory)


def test_check_runs_once_per_configuration(fake):
    calls = []

    class CountingRule(GoodRule):
        def init_state(self, params0):
            calls.append(1)
            return init_rule_state(params0)

    registry = _plugin_registry(fake, "update_rule", CountingRule)
    config = make_config("update_rule", "bad")
    registry.build(config)
    checked = len(calls)  # the probe's runs (float32, per-channel α, bfloat16) each start from init_state
    registry.build(config)
    assert len(calls) == checked > 0


def test_check_contract_is_usable_directly_and_ignores_unknown_kinds():
    check_contract("my_new_kind", object(), who="x")
    check_contract("update_rule", GoodRule(), who="x")
    with pytest.raises(ContractError, match="^NeuralMemory\\(update_rule=TupleStateRule\\(...\\)\\) does not"):
        check_contract("update_rule", TupleStateRule(), who="NeuralMemory(update_rule=TupleStateRule(...))")
