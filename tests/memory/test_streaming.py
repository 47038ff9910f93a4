"""MemoryStream: pieces of any length continue the stream exactly, with a bounded number of compiled programs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import example, given, settings
from hypothesis import strategies as st
from memory_utils import max_rel_err
from titans_memory import (
    MemoryStream,
    MLPMemory,
    MLPMemoryConfig,
    MomentumScanRule,
    NeuralMemory,
    NeuralMemoryConfig,
    piece_lengths,
)

D = 16


def make(**kw) -> NeuralMemory:
    return NeuralMemory(
        NeuralMemoryConfig(num_heads=2, conv_kernel=2),
        d_model=D,
        rngs=nnx.Rngs(0),
        update_rule=MomentumScanRule(chunk_size=4),
        memory_model=MLPMemory(MLPMemoryConfig(depth=2)),
        **kw,
    )


@given(T=st.integers(0, 600), k=st.integers(0, 9))
def test_piece_lengths_are_powers_of_two_that_sum_to_the_piece(T: int, k: int) -> None:
    lengths = piece_lengths(T, 1 << k)
    assert sum(lengths) == T
    assert all(n & (n - 1) == 0 and 1 <= n <= 1 << k for n in lengths)
    assert lengths == sorted(lengths, reverse=True)


def test_piece_lengths_reject_a_bad_bucket() -> None:
    with pytest.raises(ValueError, match="power of two"):
        piece_lengths(5, 12)
    with pytest.raises(ValueError, match="non-negative"):
        piece_lengths(-1, 8)


_MEMORY = make()
_ONE_PASS = nnx.jit(lambda m, x, w: m(x, None, store_mask_BxT=w))
# numpy, so that cutting the stream into pieces compiles no slicing program per cut (the stream's programs take
# them as they take jax arrays)
_X = np.asarray(jax.random.normal(jax.random.key(1), (2, 61, D)))
_WRITE = np.asarray(jax.random.bernoulli(jax.random.key(2), 0.7, (2, 61)))
_STREAM = MemoryStream(_MEMORY, max_piece=8)  # pieces of 8 cross chunk boundaries (chunk 4); 16 only compiled more


@settings(max_examples=4, deadline=None)
@given(cuts=st.lists(st.integers(0, 61), max_size=5), masked=st.booleans())
@example(cuts=[], masked=True)  # one piece: 7 × 8 + 4 + 1 tokens
@example(cuts=[0, 7, 7, 30], masked=False)  # empty pieces, cuts mid-chunk: every length 8, 4, 2, 1
def test_a_stream_cut_anywhere_equals_one_pass(cuts: list[int], masked: bool) -> None:
    """Any cuts of a 61-token stream (pieces of 0 to 61 tokens, with or without a store mask), chunk 4 and a
    causal convolution: the outputs and the final state equal one call on the whole stream."""
    bounds = [0, *sorted(cuts), 61]
    mask = _WRITE if masked else None
    y_ref, end_ref = _ONE_PASS(_MEMORY, _X, mask)
    state, ys = None, []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        y, state = _STREAM(_X[:, a:b], state, store_mask_BxT=None if mask is None else mask[:, a:b])
        assert y.shape == (2, b - a, D)
        ys.append(y)
    assert max_rel_err(np.concatenate(ys, axis=1), y_ref) < 1e-5
    assert max_rel_err(end_ref, state) < 1e-5
    assert int(state.rule.pos[0]) == 61 % 4
    # pieces of ≤ 8 tokens: lengths 8, 4, 2, 1, each with and without a mask, plus nothing else
    assert _STREAM.traces <= 2 * 4


def test_compiles_are_bounded_whatever_the_lengths() -> None:
    """Twenty pieces of twenty different lengths: three programs (4, 2, 1), not twenty. (A stream of its own over
    the shared memory, which it does not change.)"""
    stream = MemoryStream(_MEMORY, max_piece=4)
    state = _MEMORY.init_state(1)
    for T in range(1, 21):
        _, state = stream(np.ones((1, T, D), np.float32), state)
    assert stream.traces == 3
    assert int(state.rule.pos[0]) == sum(range(1, 21)) % 4


def test_parameter_changes_are_seen_without_recompiling() -> None:
    memory = make()
    stream = MemoryStream(memory, max_piece=8)
    x = jnp.ones((1, 8, D))
    before, _ = stream(x)
    memory.out_proj.kernel[...] = memory.out_proj.kernel[...] * 2.0
    after, _ = stream(x)
    assert stream.traces == 1
    assert max_rel_err(after, 2.0 * before) < 1e-5


def test_wrong_state_or_mask_is_a_clear_error() -> None:
    memory = make()
    stream = MemoryStream(memory, max_piece=8)
    with pytest.raises(ValueError, match="store_mask_BxT must have shape"):
        stream(jnp.ones((1, 5, D)), store_mask_BxT=jnp.ones((1, 4), bool))
    with pytest.raises(ValueError, match="expected"):
        stream(jnp.ones((1, 5, D)), memory.init_state(2))
    with pytest.raises(ValueError, match="power of two"):
        MemoryStream(memory, max_piece=10)
