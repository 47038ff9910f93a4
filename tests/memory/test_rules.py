"""momentum_scan equals the sequential reference: outputs, final state and gradients (compared in float64)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from memory_utils import agreement_program, max_rel_err, random_problem, run, split_and_whole
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
        everything = agreement_program(seq, par, model)  # one compiled program: both reads' outputs and gradients
        aligned, ((_, (y_s, s_s)), g_s), ((_, unaligned), g_p) = everything(p0, q, k, v, gates)
        for y_p, s_p in (aligned, unaligned):  # (the gradients' call is aligned=False)
            assert max_rel_err(y_s, y_p) < TOL
            assert max_rel_err(tuple(s_s), tuple(s_p)) < TOL
            assert int(s_p.pos) == T % chunk
        assert max_rel_err(g_s, g_p) < 1e-9
        assert all(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree.leaves(g_p))


@settings(max_examples=2, deadline=None)  # each draw compiles one program of its own (the examples below: two more)
@given(
    chunk=st.integers(1, 9),
    T=st.integers(1, 30),
    depth=st.integers(1, 3),
    split_frac=st.floats(0, 1),
    per_channel=st.booleans(),
    clip=st.sampled_from([None, 0.05, 10.0]),
    seed=st.integers(0, 2**16),
)
@example(chunk=4, T=13, depth=2, split_frac=0.5, per_channel=False, clip=0.05, seed=1)  # starts mid-chunk, clamp
@example(chunk=3, T=12, depth=1, split_frac=0.5, per_channel=True, clip=None, seed=2)  # split on a chunk edge
def test_scan_equals_sequential_property(chunk, T, depth, split_frac, per_channel, clip, seed):
    """Any chunk size, length, depth, gate values, split point, per-channel α (depth 1) and surprise clamp."""
    per_channel = per_channel and depth == 1
    D = 4
    with jax.enable_x64(True):
        model, p0, q, k, v, gates = random_problem(seed, T, D, depth, C=D if per_channel else 1)
        cfg = UpdateRuleConfig(chunk_size=chunk, max_grad_norm=clip, read="chunk")
        seq, par = SequentialRule(cfg), MomentumScanRule(cfg)
        a = int(split_frac * T)
        (y_s, s_s), (y1, _), (y2, s_p) = split_and_whole(seq, par, model, a, p0, q, k, v, gates)
        assert max_rel_err(y_s, jnp.concatenate([y1, y2])) < TOL
        assert max_rel_err(tuple(s_s), tuple(s_p)) < TOL


def test_surprise_clamp_changes_the_update():
    """The clamp is real: with a tiny max norm the final memory differs from the unclamped one."""
    with jax.enable_x64(True):
        model, p0, q, k, v, gates = random_problem(3, 12, 4, 2)
        rules = (
            MomentumScanRule(chunk_size=4, read="chunk"),
            MomentumScanRule(chunk_size=4, max_grad_norm=1e-3, read="chunk"),
        )
        both = jax.jit(lambda *a: [run(r, model, *a)[1] for r in rules])  # one compiled program for the two calls
        free, clamped = both(p0, q, k, v, gates)
        assert max_rel_err(free.memory, clamped.memory) > 1e-3
        # each step's momentary surprise is ≤ θ · 1e-3, so S stays tiny
        s_norm = jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree.leaves(clamped.surprise)))
        assert float(s_norm) <= 12 * 0.3 * 1e-3 + 1e-12


def test_split_state_equals_one_call_sequential():
    with jax.enable_x64(True):
        model, p0, q, k, v, gates = random_problem(5, 21, 4, 2)
        rule = SequentialRule(chunk_size=4, read="chunk")
        (y, s), (y1, _), (y2, s2) = split_and_whole(rule, rule, model, 7, p0, q, k, v, gates)  # one program
        assert max_rel_err(y, jnp.concatenate([y1, y2])) < TOL
        assert max_rel_err(tuple(s), tuple(s2)) < TOL
