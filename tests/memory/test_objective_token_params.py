"""Objective.token_params: per-token objective parameters computed by NeuralMemory and passed by both rules."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from titans_core import ContractError, check_contract
from titans_memory import L2Objective, MomentumScanRule, NeuralMemory, NeuralMemoryConfig, SequentialRule
from titans_memory.testing import check_objective, random_problem


class WeightedL2:
    """ℓ_t = w_t ‖M(k_t) − v_t‖² with a per-token weight w_t > 0."""

    token_params = {"weight": 0.5}

    def loss(self, pred_TxD, v_TxD, weight):
        return weight * jnp.sum(jnp.square(pred_TxD - v_TxD), axis=-1)

    def cotangent(self, pred_TxD, v_TxD, weight):
        return 2.0 * weight[..., None] * (pred_TxD - v_TxD)


def test_a_token_param_objective_passes_the_contract_and_its_checks():
    check_contract("objective", WeightedL2(), who="weighted")
    check_objective(WeightedL2())


@pytest.mark.parametrize(
    "token_params,expected",
    [({"weight": 0.0}, "token_params must be"), ({"no name": 1.0}, "token_params must be"), ([1.0], "token_params")],
)
def test_bad_token_params_are_one_line_contract_errors(token_params, expected):
    bad = WeightedL2()
    bad.token_params = token_params
    with pytest.raises(ContractError, match=expected):
        check_contract("objective", bad, who="weighted")


def test_methods_that_do_not_take_the_declared_parameters_fail_the_contract():
    bad = L2Objective()
    bad.token_params = {"weight": 1.0}
    with pytest.raises(ContractError, match=r"loss\(pred_TxD, v_TxD, weight=<T>\) raised"):
        check_contract("objective", bad, who="weighted")


def test_both_rules_pass_the_per_token_parameters_and_agree():
    """A constant weight w equals ℓ2 with θ scaled by w (same update), in both rules; and the rules agree."""
    objective = WeightedL2()
    with jax.enable_x64(True):
        from titans_memory import MLPMemory, MLPMemoryConfig

        model = MLPMemory(MLPMemoryConfig(depth=2, expansion=2.0))
        p0, q, k, v, gates = random_problem(0, 7, 4, model, objective=objective)
        assert set(gates.objective_T) == {"weight"}
        const = gates._replace(objective_T={"weight": jnp.full((7,), 0.25)})
        scaled = gates._replace(theta_T=0.25 * gates.theta_T, objective_T={})
        rules = (SequentialRule(chunk_size=3), MomentumScanRule(chunk_size=3))

        @jax.jit
        def weighted_and_scaled(p0, q, k, v, const, scaled):  # one compiled program for the four calls
            call = lambda rule, gates, obj: rule(
                model, rule.init_state(p0), q, k, v, gates, aligned=False, objective=obj
            )  # noqa: E731
            return [(call(r, const, objective), call(r, scaled, L2Objective())) for r in rules]

        for weighted, l2 in weighted_and_scaled(p0, q, k, v, const, scaled):
            for a, b in zip(jax.tree.leaves(weighted), jax.tree.leaves(l2), strict=True):
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-14)


def test_neural_memory_learns_a_softplus_gate_per_declared_parameter_and_none_otherwise():
    config = NeuralMemoryConfig(num_heads=2)
    plain = NeuralMemory(config, d_model=8, rngs=nnx.Rngs(0))
    assert plain.gate_objective is None
    x = jax.random.normal(jax.random.key(0), (1, 5, 8))
    assert plain._gates(x).objective_T == {}
    weighted = NeuralMemory(config, d_model=8, rngs=nnx.Rngs(0), objective=WeightedL2())
    w = weighted._gates(x).objective_T["weight"]
    assert w.shape == (1, 2, 5) and bool(jnp.all(w > 0))
    np.testing.assert_allclose(w, 0.5, rtol=0.2)  # softplus(b) = 0.5 for a fresh model, small x-dependence
    # the built-in parts are initialised exactly as without token parameters (the new gate comes last)
    for name in ("qkv", "gate_theta", "gate_alpha", "out_gate", "out_proj"):
        np.testing.assert_array_equal(getattr(plain, name).kernel[...], getattr(weighted, name).kernel[...])
    for a, b in zip(jax.tree.leaves(plain.initial_params()), jax.tree.leaves(weighted.initial_params()), strict=True):
        np.testing.assert_array_equal(a, b)

    def loss(module):  # the write reaches the outputs of later chunks only: score the state after x too
        y, state = module(x)
        return jnp.sum(y**2) + sum(jnp.sum(jnp.sin(w)) for w in jax.tree.leaves(state.rule.memory))

    grads = nnx.jit(nnx.grad(loss))(weighted)  # one compiled program (op by op: hundreds of small ones)
    assert float(jnp.max(jnp.abs(grads.gate_objective["weight"].kernel[...]))) > 0
