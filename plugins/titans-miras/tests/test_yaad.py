"""Yaad: the Huber objective with a per-token threshold δ_t, in both Titans rules (float64 references)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from titans_memory import MLPMemory, MLPMemoryConfig, MomentumScanRule, SequentialRule
from titans_memory.testing import check_objective, random_problem
from titans_miras import YaadConfig, YaadObjective
from titans_miras import reference as ref

TOL = 1e-10


def test_loss_values_switch_per_token_on_its_own_delta():
    pred = jnp.array([[3.0, 4.0], [3.0, 4.0], [0.5, -2.0]])
    v = jnp.zeros((3, 2))
    delta = jnp.array([5.0, 1.0, 1.0])  # ‖r‖ = 5, 5, 2.06
    yaad = YaadObjective()
    elementwise = YaadObjective(form="elementwise")  # per coordinate: |0.5| ≤ 1 quadratic, |−2| > 1 linear
    values = jax.jit(  # one compiled program (eager, each op compiled one of its own)
        lambda *a: (yaad.loss(*a), yaad.cotangent(*a), elementwise.loss(*a))
    )
    loss, cotangent, loss_elementwise = values(pred, v, delta)
    np.testing.assert_allclose(loss, [25.0, 2 * 7 - 1, 2 * 2.5 - 1])
    np.testing.assert_allclose(cotangent[:2], [[6.0, 8.0], [2.0, 2.0]])
    np.testing.assert_allclose(loss_elementwise[2], 0.25 + 2 * 2 - 1)
    assert yaad.token_params == {"delta": 1.0}
    assert YaadObjective(YaadConfig(init_delta=0.3)).token_params == {"delta": 0.3}


# The rules' agreement (check_rules_agree, the expensive part) runs once: ``scale`` does not reach it, and both forms
# reach the rules the same way, through ``cotangent`` with δ_t, which check_cotangent proves equal to ∇ loss
# (derivatives into δ_t included) for each form.
@pytest.mark.parametrize("form,scale,rules", [("yaad", 0.3, True), ("yaad", 3.0, False), ("elementwise", 1.0, False)])
def test_cotangent_is_the_gradient_including_into_delta(form, scale, rules):
    """check_objective: cotangent = ∇ loss, into δ too, for small and large residuals (``scale``: the ℓ2 and the ℓ1
    branch); with ``rules``, momentum_scan = sequential with an MLP, outputs, state and outer gradients into δ_t
    included (check_rules_agree)."""
    check_objective(YaadObjective(form=form), scale=scale, rules=rules)


@pytest.mark.parametrize("b", [pytest.param(1, marks=pytest.mark.slow), 4])
def test_both_rules_equal_the_numpy_reference_with_per_token_delta(b):
    """Linear memory, Eq 13–14 with the Yaad cotangent written in numpy; δ_t varies across tokens so that some
    tokens take the ℓ2 branch and some the ℓ1 branch."""
    model = MLPMemory(MLPMemoryConfig(depth=1))
    yaad = YaadObjective(init_delta=1.5)
    with jax.enable_x64(True):
        p0, q, k, v, gates = random_problem(1, 11, 5, model, objective=yaad)
        delta = np.asarray(gates.objective_T["delta"])
        r = np.asarray(k) @ np.asarray(p0["w0"]) - np.asarray(v)
        assert (np.linalg.norm(r, axis=-1) <= delta).any() and (np.linalg.norm(r, axis=-1) > delta).any()
        args = (np.asarray(x) for x in (q, k, v, gates.theta_T, gates.eta_T, gates.alpha_TxC))
        y_ref, start_ref, m_ref, s_ref = ref.titans_reference(np.asarray(p0["w0"]), *args, ref.yaad_cotangent(delta), b)
        rules = (SequentialRule(chunk_size=b, read="chunk"), MomentumScanRule(chunk_size=b, read="chunk"))
        both = jax.jit(  # one compiled program for both rules
            lambda *a: [r(model, r.init_state(a[0]), *a[1:], aligned=True, objective=yaad) for r in rules]
        )
        for y, st in both(p0, q, k, v, gates):
            for got, want in (
                (y, y_ref),
                (st.memory["w0"], m_ref),
                (st.surprise["w0"], s_ref),
                (st.start["w0"], start_ref),
            ):
                np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=TOL)


# momentum_scan = sequential with an MLP, outer gradients into δ_t included (check_rules_agree with a Yaad objective),
# is checked by test_cotangent_is_the_gradient_including_into_delta[yaad-0.3-True] (the elementwise form with δ_t:
# titans-memory's HuberObjective(per_token=True), the same formulas, in tests/memory/test_objectives.py).


def test_delta_changes_the_update():
    model = MLPMemory(MLPMemoryConfig(depth=1))
    yaad, rule = YaadObjective(), MomentumScanRule(chunk_size=4)
    with jax.enable_x64(True):
        p0, q, k, v, gates = random_problem(2, 8, 4, model, objective=yaad)
        small = gates._replace(objective_T={"delta": jnp.full((8,), 1e-3)})
        big = gates._replace(objective_T={"delta": jnp.full((8,), 1e3)})
        call = lambda g: rule(model, rule.init_state(p0), q, k, v, g, aligned=True, objective=yaad)[1]  # noqa: E731
        s_small, s_big = jax.jit(lambda a, b: (call(a), call(b)))(small, big)  # one compiled program
        assert float(jnp.max(jnp.abs(s_small.memory["w0"] - s_big.memory["w0"]))) > 1e-3
