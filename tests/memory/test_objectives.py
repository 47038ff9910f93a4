"""Objectives (the inner loss ℓ(M(k), v)): each built-in's cotangent is the gradient of its loss, the two
rules agree under every objective (float64: outputs, state and outer gradients), ℓ2 is today's Eq 12 bit for
bit, and the objective is a spec component of NeuralMemoryConfig."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from memory_utils import max_rel_err, random_problem
from titans_core import get_registry, make_config
from titans_memory import (
    DotObjective,
    HuberObjective,
    L2Objective,
    LpObjective,
    MomentumScanRule,
    NeuralMemory,
    NeuralMemoryConfig,
    SequentialRule,
)
from titans_memory.rules.base import token_grad
from titans_memory.testing import check_objective

OBJECTIVES = {
    "l2": L2Objective(),
    "huber": HuberObjective(delta=0.5),
    "huber-yaad": HuberObjective(delta=1.5, form="yaad"),
    "huber-per-token": HuberObjective(delta=0.5, per_token=True),
    "huber-yaad-per-token": HuberObjective(delta=1.5, form="yaad", per_token=True),
    "lp3": LpObjective(),
    "lp1.5": LpObjective(p=1.5),
    "dot": DotObjective(),
}


# The rules' agreement (sequential, which differentiates the loss, = momentum_scan, which uses the hand-written
# cotangent: outputs, state and outer gradients of the depth-2 MLP; the most expensive program of these tests)
# runs for the objectives in AGREE. Both rules reach an objective only through loss and cotangent (and δ_t for a
# per-token one), which check_cotangent proves equal, derivatives included, for every objective; the others take no
# path of their own: "l2" is the rules' default objective, whose agreement test_rules.py checks (the same code:
# objective None resolves to L2Objective); "huber" and "huber-yaad" run the same loss and cotangent code as their
# per-token forms, with a constant δ (the per-token forms also put δ_t and its outer gradient through both rules);
# "lp3" is the code of "lp1.5" with another p; "dot" takes the same generic path through both rules as the others.
# Depth 1 and the jax.vjp path: below and in test_plugin_components.
AGREE = {"huber-per-token", "huber-yaad-per-token", "lp1.5"}


@pytest.mark.parametrize("name", OBJECTIVES)
def test_cotangent_is_the_gradient_of_the_loss(name):
    """check_objective: the contract; cotangent = ∇ Σ loss, and their derivatives too; for the objectives in AGREE,
    sequential = momentum_scan (outputs, state, outer gradients; float64) with this objective."""
    check_objective(OBJECTIVES[name], rules=name in AGREE)


def test_rules_agree_mid_chunk_with_clamp_and_per_channel_alpha():
    """The general (mid-chunk) path of momentum_scan and the surprise clamp use the objective too."""
    with jax.enable_x64(True):
        model, p0, q, k, v, gates = random_problem(4, 11, 4, 1, C=4)
        objective = HuberObjective(delta=0.3)
        seq, par = (
            SequentialRule(chunk_size=3, max_grad_norm=0.5),
            MomentumScanRule(chunk_size=3, max_grad_norm=0.5),
        )
        run = lambda rule, aligned, *a: rule(model, rule.init_state(p0), *a, aligned=aligned, objective=objective)  # noqa: E731
        both = jax.jit(lambda *a: (run(seq, True, *a), run(par, False, *a)))  # one compiled program
        (y_s, s_s), (y_p, s_p) = both(q, k, v, gates)
        assert max_rel_err(y_s, y_p) < 1e-10 and max_rel_err(tuple(s_s), tuple(s_p)) < 1e-10


def test_l2_is_eq12_bit_for_bit():
    """The default objective reproduces the hard-coded formulas it replaced, exactly (not just closely)."""
    model, p0, q, k, v, gates = random_problem(0, 9, 6, 2, dtype=jnp.float32)
    rule = MomentumScanRule(chunk_size=4)

    @jax.jit
    def everything(p0, q, k, v, gates):  # one compiled program (eager, each op compiled one of its own)
        pred = model.apply(p0, k)
        cotangents = L2Objective().cotangent(pred, v), 2.0 * (pred - v)
        old = jax.grad(lambda p: jnp.sum(jnp.square(model.apply(p, k[:1]) - v[:1])))(p0)  # Eq 12 as it was written
        new = token_grad(model, p0, k[0], v[0]), token_grad(model, p0, k[0], v[0], L2Objective())
        default = rule(model, rule.init_state(p0), q, k, v, gates, aligned=True)
        explicit = rule(model, rule.init_state(p0), q, k, v, gates, aligned=True, objective=L2Objective())
        return cotangents, old, new, default, explicit

    (cot, by_hand), old, news, default, explicit = everything(p0, q, k, v, gates)
    assert np.array_equal(cot, by_hand)
    for new in news:
        assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(old), jax.tree.leaves(new), strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(default), jax.tree.leaves(explicit), strict=True))


def test_huber_equals_l2_below_delta_and_differs_above():
    with jax.enable_x64(True):
        model, p0, q, k, v, gates = random_problem(1, 10, 4, 2)
        rule = MomentumScanRule(chunk_size=4)
        objectives = [L2Objective()] + [
            HuberObjective(delta=d, form=f) for f in ("elementwise", "yaad") for d in (1e6, 0.05)
        ]
        runs = jax.jit(  # one compiled program for the five runs
            lambda p0, *a: [rule(model, rule.init_state(p0), *a, aligned=True, objective=obj) for obj in objectives]
        )
        l2, *hubers = runs(p0, q, k, v, gates)
        for below, above in (hubers[:2], hubers[2:]):  # elementwise, yaad
            # The same arithmetic below δ; equality is to float64 rounding (1e-15), not bit for bit: whether the
            # compiler fuses (and so rounds) the extra clip identically depends on its optimisation level.
            assert max_rel_err(l2, below) < 1e-15
            assert max_rel_err(l2[1].memory, above[1].memory) > 1e-3


def test_objective_values():
    """ℓ per token against hand-computed values (r = pred − v)."""
    pred = jnp.array([[3.0, -0.5], [0.0, 0.0]])
    v = jnp.array([[0.0, 0.0], [1.0, -2.0]])
    np.testing.assert_allclose(L2Objective().loss(pred, v), [9.25, 5.0])
    # elementwise, δ = 1: h(3) = 2·3 − 1 = 5, h(−0.5) = 0.25; h(−1) = 1, h(2) = 2·2 − 1 = 3
    np.testing.assert_allclose(HuberObjective(delta=1.0).loss(pred, v), [5.25, 4.0])
    # yaad, δ = 2.5: ‖r‖ = 3.04 > δ → 2·2.5·3.5 − 6.25 = 11.25; ‖r‖ = 2.24 ≤ δ → 5
    np.testing.assert_allclose(HuberObjective(delta=2.5, form="yaad").loss(pred, v), [11.25, 5.0])
    np.testing.assert_allclose(LpObjective().loss(pred, v), [27.125, 9.0])
    np.testing.assert_allclose(DotObjective().loss(pred, v), [0.0, 0.0])
    np.testing.assert_allclose(DotObjective().loss(pred, pred), [-9.25, 0.0])


def test_check_objective_catches_a_wrong_cotangent():
    class Wrong(L2Objective):
        def cotangent(self, pred_TxD, v_TxD):
            return pred_TxD - v_TxD  # forgot the 2 of Eq 12

    with pytest.raises(AssertionError, match="cotangent differs"):
        check_objective(Wrong())


def test_objective_is_a_spec_component_of_the_memory():
    registry = get_registry()
    assert {"l2", "huber", "lp", "dot"} <= set(registry.names("objective"))
    assert NeuralMemoryConfig().objective.name == "l2"
    cfg = NeuralMemoryConfig.model_validate(
        {"num_heads": 2, "objective": {"name": "huber", "delta": 0.25, "form": "yaad"}}
    )
    mem = NeuralMemory(cfg, d_model=8, rngs=nnx.Rngs(0))
    assert isinstance(mem.objective, HuberObjective) and mem.objective.config.delta == 0.25
    lp = registry.build(make_config("objective", "lp", p=4))
    assert isinstance(lp, LpObjective) and lp.config.p == 4
    x = jax.random.normal(jax.random.key(0), (1, 6, 8))
    mem_l2 = NeuralMemory(
        cfg.model_copy(update={"objective": NeuralMemoryConfig().objective}), d_model=8, rngs=nnx.Rngs(0)
    )
    (_, state_huber), (_, state_l2) = nnx.jit(lambda a, b, x: (a(x), b(x)))(mem, mem_l2, x)  # one program
    # the configured objective reaches the rule: the writes differ (the 6 tokens' reads all see M_0, since
    # they lie in the first chunk and read before writing, so the outputs cannot show it)
    gap = lambda a, b: float(jnp.max(jnp.abs(a - b)))  # noqa: E731
    assert max(jax.tree.leaves(jax.tree.map(gap, state_huber.rule.memory, state_l2.rule.memory))) > 0


def test_huber_per_token_learns_delta_as_a_gate():
    """``huber`` with ``per_token: true`` (Yaad's δ_t): the memory gets a δ gate starting at ``delta``; the fixed
    form declares no per-token parameter (its model is as before)."""
    cfg = NeuralMemoryConfig.model_validate(
        {"num_heads": 2, "objective": {"name": "huber", "delta": 0.7, "per_token": True}}
    )
    memory = NeuralMemory(cfg, d_model=8, rngs=nnx.Rngs(0))
    assert memory.objective.token_params == {"delta": 0.7} and set(memory.gate_objective) == {"delta"}
    gate = memory.gate_objective["delta"]
    assert np.allclose(jax.nn.softplus(gate.bias[...]), 0.7, rtol=1e-6)
    y, _ = nnx.jit(lambda m, x: m(x))(memory, jax.random.normal(jax.random.key(1), (2, 5, 8)))
    assert y.shape == (2, 5, 8) and bool(jnp.all(jnp.isfinite(y)))
    fixed = NeuralMemory(
        NeuralMemoryConfig.model_validate({"num_heads": 2, "objective": {"name": "huber", "delta": 0.7}}),
        d_model=8,
        rngs=nnx.Rngs(0),
    )
    assert fixed.objective.token_params == {} and fixed.gate_objective is None
    with pytest.raises(ValueError, match="per-token delta"):
        HuberObjective(per_token=True).loss(jnp.zeros((3, 2)), jnp.ones((3, 2)))
