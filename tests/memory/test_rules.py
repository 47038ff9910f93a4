"""momentum_scan equals the sequential reference: outputs, final state and gradients (compared in float64)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from memory_utils import cont, max_rel_err, outer_loss, random_problem, run, slice_gates
from titans_memory import MomentumScanRule, SequentialRule, UpdateRuleConfig

TOL = 1e-10  # float64: the two rules are the same arithmetic up to reassociation


# Every chunk size (1, 2, 16, 64) and every depth (1, 2, 3) at least once, depth 3 with a small and a large chunk;
# the property test below covers the other combinations (chunk 1–9, depth 1–3) on random draws.
@pytest.mark.parametrize(("chunk", "depth"), [(1, 2), (2, 3), (16, 1), (16, 3), (64, 2)])
def test_scan_equals_sequential_outputs_state_and_gradients(chunk, depth):
    T = 37 if chunk < 64 else 70  # never a multiple of the chunk
    with jax.enable_x64(True):
        model, p0, q, k, v, gates = random_problem(chunk * 10 + depth, T, 6, depth)
        cfg = UpdateRuleConfig(chunk_size=chunk, read="chunk")
        seq, par = SequentialRule(cfg), MomentumScanRule(cfg)
        y_s, s_s = run(seq, model, p0, q, k, v, gates)
        for aligned in (True, False):
            y_p, s_p = run(par, model, p0, q, k, v, gates, aligned=aligned)
            assert max_rel_err(y_s, y_p) < TOL
            assert max_rel_err(tuple(s_s), tuple(s_p)) < TOL
            assert int(s_p.pos) == T % chunk
        grad = jax.jit(jax.grad(outer_loss, argnums=(2, 3, 4, 5, 6)), static_argnums=(0, 1))
        g_s = grad(seq, model, p0, q, k, v, gates)
        g_p = grad(par, model, p0, q, k, v, gates)
        assert max_rel_err(g_s, g_p) < 1e-9
        assert all(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree.leaves(g_p))


@settings(max_examples=6, deadline=None)  # each draw compiles three programs of its own
@given(
    chunk=st.integers(1, 9),
    T=st.integers(1, 30),
    depth=st.integers(1, 3),
    split_frac=st.floats(0, 1),
    per_channel=st.booleans(),
    clip=st.sampled_from([None, 0.05, 10.0]),
    seed=st.integers(0, 2**16),
)
def test_scan_equals_sequential_property(chunk, T, depth, split_frac, per_channel, clip, seed):
    """Any chunk size, length, depth, gate values, split point, per-channel α (depth 1) and surprise clamp."""
    per_channel = per_channel and depth == 1
    D = 4
    with jax.enable_x64(True):
        model, p0, q, k, v, gates = random_problem(seed, T, D, depth, C=D if per_channel else 1)
        cfg = UpdateRuleConfig(chunk_size=chunk, max_grad_norm=clip, read="chunk")
        seq, par = SequentialRule(cfg), MomentumScanRule(cfg)
        y_s, s_s = run(seq, model, p0, q, k, v, gates)
        a = int(split_frac * T)
        y1, mid = run(par, model, p0, q[:a], k[:a], v[:a], slice_gates(gates, 0, a))
        y2, s_p = cont(par, model, mid, q[a:], k[a:], v[a:], slice_gates(gates, a, T))
        assert max_rel_err(y_s, jnp.concatenate([y1, y2])) < TOL
        assert max_rel_err(tuple(s_s), tuple(s_p)) < TOL


def test_surprise_clamp_changes_the_update():
    """The clamp is real: with a tiny max norm the final memory differs from the unclamped one."""
    with jax.enable_x64(True):
        model, p0, q, k, v, gates = random_problem(3, 12, 4, 2)
        _, free = run(MomentumScanRule(chunk_size=4, read="chunk"), model, p0, q, k, v, gates)
        _, clamped = run(MomentumScanRule(chunk_size=4, max_grad_norm=1e-3, read="chunk"), model, p0, q, k, v, gates)
        assert max_rel_err(free.memory, clamped.memory) > 1e-3
        # each step's momentary surprise is ≤ θ · 1e-3, so S stays tiny
        s_norm = jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree.leaves(clamped.surprise)))
        assert float(s_norm) <= 12 * 0.3 * 1e-3 + 1e-12


def test_split_state_equals_one_call_sequential():
    with jax.enable_x64(True):
        model, p0, q, k, v, gates = random_problem(5, 21, 4, 2)
        rule = SequentialRule(chunk_size=4, read="chunk")
        y, s = run(rule, model, p0, q, k, v, gates)
        y1, mid = run(rule, model, p0, q[:7], k[:7], v[:7], slice_gates(gates, 0, 7))
        y2, s2 = cont(rule, model, mid, q[7:], k[7:], v[7:], slice_gates(gates, 7, 21))
        assert max_rel_err(y, jnp.concatenate([y1, y2])) < TOL
        assert max_rel_err(tuple(s), tuple(s2)) < TOL
