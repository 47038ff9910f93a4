"""NeuralMemory's state as a library user handles it: per-row positions and resets, the store mask and the
read-only call at module level, dtypes that never change, and clear errors for a wrong state or a broken
``aligned`` promise."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from memory_utils import max_rel_err
from titans_memory import MLPMemory, MLPMemoryConfig, MomentumScanRule, NeuralMemory, NeuralMemoryConfig, SequentialRule

D = 16


def make(rule=None, *, chunk=4, **kw):
    return NeuralMemory(
        NeuralMemoryConfig(num_heads=2),
        d_model=D,
        rngs=nnx.Rngs(0),
        update_rule=rule or MomentumScanRule(chunk_size=chunk),
        memory_model=MLPMemory(MLPMemoryConfig(depth=2)),
        **kw,
    )


def inputs(T, B=2, seed=1):
    return jax.random.normal(jax.random.key(seed), (B, T, D))


_CALL = nnx.jit(lambda m, x, s, w: m(x, s, store_mask_BxT=w))


def call(m, x, state=None, store=None):
    """A jitted module call; one jit for every test, so the same module on the same shapes compiles once."""
    return _CALL(m, x, state, store)


@pytest.fixture(scope="module")
def memory():
    """make() shared by the tests that do not change it: calls of the same shapes reuse one compiled program."""
    return make()


def test_pos_is_per_row_and_reset_is_exact_mid_chunk(memory):
    """Row 0 is reset after 5 tokens (mid-chunk, chunk 4) and continues from there; row 1 streams on. Each equals
    its own run: row 0 a fresh memory on the tail, row 1 one pass over the whole."""
    m, x = memory, inputs(13)
    _, mid = call(m, x[:, :5])
    assert mid.rule.pos.shape == (2,) and mid.rule.pos.tolist() == [1, 1]
    mid = m.reset(mid, jnp.array([True, False]))
    assert mid.rule.pos.tolist() == [0, 1]
    y_tail, end = call(m, x[:, 5:], mid)
    y_fresh, end_fresh = call(m, x[:1, 5:])
    y_full, end_full = call(m, x[1:])
    assert max_rel_err(y_fresh, y_tail[:1]) < 1e-5
    assert max_rel_err(y_full[:, 5:], y_tail[1:]) < 1e-5
    row = lambda tree, i: jax.tree.map(lambda a: a[i : i + 1], tree)  # noqa: E731
    assert max_rel_err(end_fresh, row(end, 0)) < 1e-5
    assert max_rel_err(end_full, row(end, 1)) < 1e-5
    assert end.rule.pos.tolist() == [8 % 4, 13 % 4]


def test_rows_at_different_positions_continue_like_their_own_streams(memory):
    """Rows 2 and 5 tokens into their streams (reset to different lengths) take the same piece: each row equals the
    row's own single-row stream, with the sequential rule as the oracle. (13 tokens: the shapes of
    test_pos_is_per_row_and_reset_is_exact_mid_chunk's calls, whose compiled programs the shared memory reuses.)"""
    x = inputs(13, B=2)
    for m in (memory, make(SequentialRule(chunk_size=4))):
        _, s = call(m, x[:, :3])
        s = m.reset(s, jnp.array([True, False]))
        _, s = call(m, x[:, 3:5], s)  # row 0 is at 2 tokens, row 1 at 5
        y, _ = call(m, x[:, 5:], s)
        y0, _ = call(m, x[:1, 3:])  # row 0's stream: tokens 3..10
        y1, _ = call(m, x[1:])
        assert max_rel_err(y0[:, 2:], y[:1]) < 1e-5
        assert max_rel_err(y1[:, 5:], y[1:]) < 1e-5


def test_store_mask_skips_writes_and_read_reads_the_current_memory(memory):
    m, x = memory, inputs(9)
    _, s = call(m, x[:, :5])
    skip = jnp.zeros((2, 4), bool)
    y_skip, s_skip = call(m, x[:, 5:], s, skip)
    kept = jax.tree.leaves((s_skip.rule.memory, s_skip.rule.surprise))
    for a, b in zip(jax.tree.leaves((s.rule.memory, s.rule.surprise)), kept, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    y_read = nnx.jit(lambda m, x, s: m.read(x, s))(m, x[:, 5:], s)
    assert max_rel_err(y_skip, y_read) < 1e-5  # read: token, every token skipped: each reads the current M
    # a mask that skips some tokens differs from writing all of them, and from skipping all
    some = jnp.array([[True, False, True, True], [False, True, True, False]])
    y_some, _ = call(m, x[:, 5:], s, some)
    y_all, _ = call(m, x[:, 5:], s)
    assert max_rel_err(y_all, y_some) > 1e-4 and max_rel_err(y_skip, y_some) > 1e-4


def test_state_dtypes_never_change_and_scan_over_bf16_pieces():
    m = make(dtype=jnp.bfloat16)
    x = inputs(12).astype(jnp.bfloat16)
    s0 = m.init_state(2)
    pieces = x.reshape(2, 3, 4, D).transpose(1, 0, 2, 3)  # 3 pieces of 4 tokens

    @nnx.jit
    def stream(m, s, pieces):
        def body(s, xp):
            y, s = m(xp, s)
            return s, y

        return jax.lax.scan(body, s, pieces)

    s, ys = stream(m, s0, pieces)
    assert ys.dtype == jnp.bfloat16
    for a, b in zip(jax.tree.leaves(s0), jax.tree.leaves(s), strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
    assert s.rule.memory["w0"].dtype == jnp.float32


def test_param_dtype_sets_every_parameter_and_the_state():
    m = make(param_dtype=jnp.bfloat16)
    dtypes = {x.dtype for x in jax.tree.leaves(nnx.state(m, nnx.Param))}
    assert dtypes == {jnp.dtype(jnp.bfloat16)}
    y, s = call(m, inputs(6).astype(jnp.bfloat16))
    assert s.rule.memory["w0"].dtype == jnp.bfloat16 and y.dtype == jnp.bfloat16


def test_wrong_state_and_broken_aligned_promise_are_errors(memory):
    m, x = memory, inputs(5)
    _, s = call(m, x)
    with pytest.raises(ValueError, match=r"memory state.*expected float32\[2, 2"):
        m(x, jax.tree.map(lambda a: a.astype(jnp.bfloat16) if a.dtype == jnp.float32 else a, s))
    with pytest.raises(ValueError, match=r"memory state.*: expected \w+\[3\b.*make states with init_state\(3\)"):
        m(inputs(5, B=3), s)
    with pytest.raises(ValueError, match="aligned=True needs every row on a chunk boundary"):
        m(x[:, :1], s, aligned=True)  # pos 1 (one token: this call runs op by op, and the error comes after it)
    y, s_nan = nnx.jit(lambda m, x, s: m(x, s, aligned=True))(m, x, s)  # under jit: NaN, never silently wrong
    assert bool(jnp.all(jnp.isnan(y))) and bool(jnp.all(jnp.isnan(s_nan.rule.memory["w0"])))
    with pytest.raises(ValueError, match="mask_B must have shape"):
        m.reset(s, jnp.array([True]))
