"""Moneta and Memora: numpy references, the chunk-parallel path against the token path, split state, causality."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from titans_memory import L2Objective, LpObjective, MLPMemory, MLPMemoryConfig
from titans_memory.testing import check_rules_agree, random_problem
from titans_miras import MemoraRule, MonetaRule
from titans_miras import reference as ref

TOL = 1e-10
LINEAR = MLPMemory(MLPMemoryConfig(depth=1))
MLP = MLPMemory(MLPMemoryConfig(depth=2, expansion=2.0))
RULES = {  # rule class, its MIRAS objective, numpy reference, numpy cotangent
    "moneta": (MonetaRule, LpObjective(p=3.0), ref.moneta_reference, ref.lp_cotangent(3.0)),
    "memora": (MemoraRule, L2Objective(), ref.memora_reference, ref.l2_cotangent),
}


def run(rule, model, state, q, k, v, gates, objective, aligned):
    """One call of the rule, compiled as one program (eagerly, each of its ops and scans compiled one of its own)."""
    return jax.jit(lambda *a: rule(model, *a, aligned=aligned, objective=objective))(state, q, k, v, gates)


@pytest.mark.parametrize("name", RULES)
@pytest.mark.parametrize(
    "b,parallel,C", [(4, True, 1), (4, False, 5), pytest.param(1, True, 5, marks=pytest.mark.slow)]
)
def test_rule_equals_the_numpy_reference(name, b, parallel, C):
    """Matrix memory, T = 11 (two whole chunks of 4 and a tail), per-token or per-channel retention."""
    cls, objective, reference, cot = RULES[name]
    rule = cls(chunk_size=b, parallel=parallel)
    with jax.enable_x64(True):
        p0, q, k, v, gates = random_problem(3, 11, 5, LINEAR, C=C)
        y, st = run(rule, LINEAR, rule.init_state(p0), q, k, v, gates, objective, aligned=True)
        args = (np.asarray(x) for x in (q, k, v, gates.theta_T, gates.alpha_TxC))
        y_ref, start_ref, w_ref, a_ref = reference(np.asarray(p0["w0"]), *args, cot, b)
        for got, want in (
            (y, y_ref),
            (st.start["w0"], start_ref),
            (st.memory["w0"], w_ref),
            (st.surprise["w0"], a_ref),
        ):
            np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=TOL)
        assert int(st.pos) == 11 % b
        assert float(jnp.max(jnp.abs(st.memory["w0"] - p0["w0"]))) > 1e-3  # it did learn


@pytest.mark.slow
@pytest.mark.parametrize("name", RULES)
def test_chunk_parallel_path_equals_token_path_with_an_mlp_incl_outer_gradients(name):
    cls, objective, _, _ = RULES[name]
    check_rules_agree(
        model=MLP, objective=objective, rules=(cls(chunk_size=4, parallel=False), cls(chunk_size=4)), T=9, D=4
    )


@pytest.mark.parametrize("name", RULES)
@pytest.mark.parametrize("a", [pytest.param(4, marks=pytest.mark.slow), 6])
def test_split_state_equals_the_whole_sequence(name, a):
    """x[:a] from a fresh state, then x[a:] from the carried state (mid-chunk for a = 3, 6) = x at once."""
    cls, objective, _, _ = RULES[name]
    rule = cls(chunk_size=4)
    with jax.enable_x64(True):
        p0, q, k, v, gates = random_problem(4, 13, 4, MLP)
        cut = lambda x, lo, hi: jax.tree.map(lambda t: t[lo:hi], x)  # noqa: E731

        @jax.jit
        def whole_and_pieces(p0, *x):  # one compiled program for the three calls
            call = lambda state, x, aligned: rule(MLP, state, *x, aligned=aligned, objective=objective)  # noqa: E731
            y1, mid = call(rule.init_state(p0), cut(x, 0, a), True)
            return call(rule.init_state(p0), x, True), y1, call(mid, cut(x, a, 13), a % 4 == 0)

        (whole_y, whole), y1, (y2, end) = whole_and_pieces(p0, q, k, v, gates)
        np.testing.assert_allclose(np.concatenate([y1, y2]), whole_y, rtol=0, atol=TOL)
        for got, want in zip(jax.tree.leaves(end), jax.tree.leaves(whole), strict=True):
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=TOL)


@pytest.mark.parametrize("name", RULES)
def test_causal_outputs_before_t_ignore_tokens_from_t_on(name):
    cls, objective, _, _ = RULES[name]
    rule = cls(chunk_size=1)
    with jax.enable_x64(True):
        p0, q, k, v, gates = random_problem(5, 10, 4, MLP)
        y, _ = run(rule, MLP, rule.init_state(p0), q, k, v, gates, objective, aligned=True)
        t = 6
        k2, v2 = k.at[t:].set(-k[t:]), v.at[t:].add(1.0)
        # a program of its own (compiled with the first call, XLA may fuse and round the shared prefix differently)
        y2, _ = run(rule, MLP, rule.init_state(p0), q, k2, v2, gates, objective, aligned=True)
        np.testing.assert_allclose(y2[: t + 1], y[: t + 1], rtol=0, atol=0)  # token t reads W_{t−1}
        assert float(jnp.max(jnp.abs(y2[t + 1 :] - y[t + 1 :]))) > 1e-6


def test_memora_weights_are_row_distributions_and_moneta_weights_are_the_normalised_accumulator():
    with jax.enable_x64(True):
        p0, q, k, v, gates = random_problem(6, 9, 4, MLP)
        memora, moneta = MemoraRule(chunk_size=4), MonetaRule(chunk_size=4)
        call = lambda r, obj: r(MLP, r.init_state(p0), q, k, v, gates, aligned=True, objective=obj)[1]  # noqa: E731
        both = jax.jit(lambda: (call(memora, L2Objective()), call(moneta, LpObjective())))  # one compiled program
        st_memora, st = both()
        for w in jax.tree.leaves(st_memora.memory) + jax.tree.leaves(st_memora.start):
            w = np.asarray(w)  # numpy: no small program to compile per check
            assert bool(np.all(w > 0))
            np.testing.assert_allclose(np.sum(w, axis=-1), 1.0, rtol=0, atol=1e-12)
        for w, a in zip(jax.tree.leaves(st.memory), jax.tree.leaves(st.surprise), strict=True):
            a = np.asarray(a)
            np.testing.assert_allclose(np.asarray(w), a / np.sum(a**4) ** 0.5, rtol=1e-9)


def test_state_initialisation_and_options():
    p0 = {"w": jnp.array([[1.0, 2.0], [0.0, 0.0]])}
    st = MemoraRule().init_state(p0)
    np.testing.assert_allclose(st.memory["w"][1], [0.5, 0.5])  # W_0 = softmax(M_0) per row; logits kept
    assert st.surprise is p0
    st = MonetaRule().init_state(p0)
    assert st.memory is p0 and st.surprise is p0  # A_0 = W_0 = M_0
    assert MonetaRule(q=2.0).weights(p0) is p0
    assert MonetaRule(chunk_size=3).chunk_size == 3
