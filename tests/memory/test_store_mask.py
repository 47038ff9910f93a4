"""The store mask (tokens read but not written) in every built-in rule equals a per-token reference in float64:
a skipped token leaves M and S exactly unchanged (θ = 0, α = 0, η = 1, no S added to M) and keeps its place in the
chunk grid; from a fresh state and from the middle of a chunk, with both reads, and through the fused kernel."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from memory_utils import max_rel_err, random_problem, skip_mosaic_gpu_interpreter_import, slice_gates
from titans_memory import FusedRule, MomentumScanRule, SequentialRule, UpdateRuleConfig
from titans_memory.rules.base import RuleState, decay, init_rule_state, token_grad

TOL = 1e-10  # float64: the same arithmetic up to reassociation

skip_mosaic_gpu_interpreter_import()


@partial(jax.jit, static_argnums=0)
def _write(model, start, memory, surprise, k_D, v_D, theta, eta, alpha_C):
    """One written token (Eq 12–14), jitted: compiled once per model and shapes rather than traced per token."""
    u = token_grad(model, start, k_D, v_D)
    surprise = jax.tree.map(lambda s, g: eta * s - theta * g, surprise, u)
    return jax.tree.map(jnp.add, decay(memory, 1.0 - alpha_C), surprise), surprise


@partial(jax.jit, static_argnums=0)
def _read(model, params, q_D):
    return model.apply(params, q_D[None])[0]


def per_token_reference(model, state: RuleState, q, k, v, gates, store, b: int, read: str):
    """Eq 13–16 written out token by token in Python, with a skipped token as the identity on (M, S)."""
    start, memory, surprise, pos = state.start, state.memory, state.surprise, int(state.pos)
    q, k, v, gates = jax.tree.map(np.asarray, (q, k, v, gates))  # numpy: taking token t compiles nothing
    ys = []
    for t in range(q.shape[0]):
        if store[t]:
            theta, eta, alpha = gates.theta_T[t], gates.eta_T[t], gates.alpha_TxC[t]
            memory, surprise = _write(model, start, memory, surprise, k[t], v[t], theta, eta, alpha)
        ys.append(_read(model, memory if read == "token" else start, q[t]))
        pos += 1
        if pos == b:
            start, pos = memory, 0
    return jnp.stack(ys), RuleState(start, memory, surprise, jnp.asarray(pos, jnp.int32))


def _store(T: int, seed: int) -> np.ndarray:
    store = np.random.default_rng(seed).random(T) < 0.6
    store[3] = False  # at least one skipped token inside the first chunk and one closing a chunk (b = 4)
    store[7] = False
    return store


RULES = [
    pytest.param(lambda b: SequentialRule(chunk_size=b, read="chunk"), "chunk", id="sequential-chunk"),
    pytest.param(lambda b: SequentialRule(chunk_size=b, read="token"), "token", id="sequential-token"),
    pytest.param(lambda b: MomentumScanRule(chunk_size=b, read="chunk"), "chunk", id="momentum_scan-chunk"),
    pytest.param(lambda b: MomentumScanRule(chunk_size=b, read="token"), "token", id="momentum_scan-token"),
    pytest.param(lambda b: FusedRule(chunk_size=b, interpret=True), "chunk", id="fused"),
]


@pytest.mark.parametrize(("make", "read"), RULES)
@pytest.mark.parametrize("depth", [1, 2])
def test_store_mask_equals_per_token_reference(make, read, depth):
    T, b, split = 13, 4, 6  # the second piece starts mid-chunk (pos 2)
    with jax.enable_x64(True):
        model, p0, q, k, v, gates = random_problem(depth, T, 4, depth)
        store = _store(T, depth)
        y_ref, s_ref = per_token_reference(model, init_rule_state(p0), q, k, v, gates, store, b, read)
        rule = make(b)

        @jax.jit
        def whole_and_split(p0, q, k, v, gates, w):  # one compiled program for the three calls
            whole = rule(model, init_rule_state(p0), q, k, v, gates, aligned=True, store_T=w)
            # in two pieces, the second from the middle of a chunk
            g1, g2 = slice_gates(gates, 0, split), slice_gates(gates, split, T)
            y1, mid = rule(
                model, init_rule_state(p0), q[:split], k[:split], v[:split], g1, aligned=True, store_T=w[:split]
            )
            y2, s2 = rule(model, mid, q[split:], k[split:], v[split:], g2, aligned=False, store_T=w[split:])
            return whole, y1, (y2, s2)

        (y, s), y1, (y2, s2) = whole_and_split(p0, q, k, v, gates, jnp.asarray(store))
        assert max_rel_err(y_ref, y) < TOL
        assert max_rel_err(tuple(s_ref[:3]), tuple(s[:3])) < TOL and int(s.pos) == T % b
        assert max_rel_err(y_ref, jnp.concatenate([y1, y2])) < TOL
        assert max_rel_err(tuple(s_ref[:3]), tuple(s2[:3])) < TOL


@pytest.mark.parametrize(("make", "read"), RULES[2:])
def test_skipped_tokens_leave_memory_and_surprise_bitwise_unchanged(make, read):
    """A piece whose every token is skipped: M and S come back exactly (the chunk-start weights may move to M at a
    boundary inside the piece, as a written chunk would)."""
    del read
    with jax.enable_x64(True):
        model, p0, q, k, v, gates = random_problem(3, 9, 4, 2)
        rule = make(4)

        @jax.jit
        def before_and_after(q, k, v, gates):  # one compiled program for the two calls
            g1, g = slice_gates(gates, 0, 5), slice_gates(gates, 5, 9)
            _, state = rule(model, init_rule_state(p0), q[:5], k[:5], v[:5], g1)
            w = jnp.zeros(4, bool)
            return state, rule(model, state, q[5:], k[5:], v[5:], g, store_T=w)[1]

        state, after = before_and_after(q, k, v, gates)
        before_leaves = jax.tree.leaves((state.memory, state.surprise))
        for a, z in zip(before_leaves, jax.tree.leaves((after.memory, after.surprise)), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(z))
        assert int(after.pos) == 9 % 4


def test_fused_store_mask_gradients_equal_momentum_scan():
    with jax.enable_x64(True):
        model, p0, q, k, v, gates = random_problem(5, 11, 4, 1)
        store = jnp.asarray(_store(11, 5))
        cfg = UpdateRuleConfig(chunk_size=4, read="chunk")

        def loss(rule, p0, q, k, v, gates):
            y, s = rule(model, init_rule_state(p0), q, k, v, gates, store_T=store)
            return jnp.sum(jnp.sin(y)) + sum(jnp.sum(jnp.cos(x)) for x in jax.tree.leaves((s.memory, s.surprise)))

        grad = jax.grad(loss, argnums=(1, 2, 3, 4, 5))
        rules = MomentumScanRule(cfg), FusedRule(chunk_size=4, interpret=True)
        g_ref, g_f = jax.jit(lambda *a: [grad(r, *a) for r in rules])(p0, q, k, v, gates)  # one compiled program
        assert max_rel_err(g_ref, g_f) < TOL
