"""Blocked pure functions vs the dense float64 oracle, and the MAC future-leak test."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from titans_attention import attention

# jit once per shape: eager dispatch compiles every small op for every new shape, ~10x slower here
sliding_window_attention = jax.jit(attention.sliding_window_attention, static_argnames=("window", "block_size"))
segment_causal_attention = jax.jit(attention.segment_causal_attention, static_argnames=("segment",))


def _qkv(seed: int, B: int, T: int, H: int, Dh: int, P: int, n: int = 3):
    """Standard normal float32 inputs, drawn by numpy: jax.random would compile a program for every new shape."""
    rng = np.random.default_rng(seed)
    draw = lambda *shape: jnp.asarray(rng.standard_normal(shape, np.float32))  # noqa: E731
    arrs = [draw(B, T, H, Dh) for _ in range(n)]
    return arrs, draw(P, H, Dh), draw(P, H, Dh)


@pytest.mark.parametrize("T", [1, 11, 17])
@pytest.mark.parametrize("window", [1, 4, 32])
@pytest.mark.parametrize("P", [0, 3])
def test_sliding_window_matches_dense(oracle, T, window, P):
    (q, k, v), pk, pv = _qkv(T * 100 + window, 2, T, 2, 4, P)
    got = sliding_window_attention(
        q, k, v, window=window, persistent_k_PxHxDh=pk if P else None, persistent_v_PxHxDh=pv if P else None
    )
    want = oracle.dense_attention(q, k, v, oracle.swa_mask(T, window), pk, pv)
    oracle.assert_close(got, want)


@settings(max_examples=10, deadline=None)  # each draw compiles a program of its own
@given(
    T=st.integers(1, 24),
    window=st.integers(1, 10),
    block=st.one_of(st.none(), st.integers(1, 9)),
    P=st.integers(0, 3),
    H=st.integers(1, 2),
    seed=st.integers(0, 2**16),
)
def test_sliding_window_property(oracle, T, window, block, P, H, seed):
    (q, k, v), pk, pv = _qkv(seed, 1, T, H, 2, P)
    kw = {"persistent_k_PxHxDh": pk, "persistent_v_PxHxDh": pv} if P else {}
    got = sliding_window_attention(q, k, v, window=window, block_size=block, **kw)
    oracle.assert_close(got, oracle.dense_attention(q, k, v, oracle.swa_mask(T, window), pk, pv))


@pytest.mark.parametrize("T", [1, 11, 17])
@pytest.mark.parametrize("segment", [1, 4, 32])
@pytest.mark.parametrize(("P", "with_prefix"), [(0, False), (3, False), (3, True)])
def test_segment_matches_dense(oracle, T, segment, P, with_prefix):
    (q, k, v, hk, hv), pk, pv = _qkv(T * 100 + segment, 2, T, 2, 4, P, n=5)
    kw = {"persistent_k_PxHxDh": pk, "persistent_v_PxHxDh": pv} if P else {}
    if with_prefix:
        kw |= {"prefix_k_BxTxHxDh": hk, "prefix_v_BxTxHxDh": hv}
    got = segment_causal_attention(q, k, v, segment=segment, **kw)
    m = oracle.segment_mask(T, segment)
    want = oracle.dense_attention(q, k, v, m, pk, pv, *((hk, hv, m) if with_prefix else ()))
    oracle.assert_close(got, want)


@settings(max_examples=10, deadline=None)  # each draw compiles a program of its own
@given(
    T=st.integers(1, 24),
    segment=st.integers(1, 10),
    P=st.integers(0, 3),
    with_prefix=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_segment_property(oracle, T, segment, P, with_prefix, seed):
    (q, k, v, hk, hv), pk, pv = _qkv(seed, 1, T, 2, 2, P, n=5)
    kw = {"persistent_k_PxHxDh": pk, "persistent_v_PxHxDh": pv} if P else {}
    if with_prefix:
        kw |= {"prefix_k_BxTxHxDh": hk, "prefix_v_BxTxHxDh": hv}
    got = segment_causal_attention(q, k, v, segment=segment, **kw)
    m = oracle.segment_mask(T, segment)
    oracle.assert_close(got, oracle.dense_attention(q, k, v, m, pk, pv, *((hk, hv, m) if with_prefix else ())))


def _future_leaks(attn, q, k, v, hk, hv) -> bool:
    """True iff changing the prefix row h_j of some token j changes the output of an earlier token i < j."""
    base = np.asarray(attn(q, k, v, hk, hv))
    T = q.shape[1]
    for j in range(T):
        hk2, hv2 = hk.at[:, j].add(3.0), hv.at[:, j].add(-5.0)
        out = np.asarray(attn(q, k, v, hk2, hv2))
        if np.any(out[:, :j] != base[:, :j]):
            return True
        assert np.any(out[:, j] != base[:, j]), "h_j must influence token j itself"
    return False


def test_mac_prefix_rows_do_not_leak_the_future(oracle):
    T, S = 10, 4
    (q, k, v, hk, hv), pk, pv = _qkv(7, 2, T, 2, 4, 2, n=5)

    @jax.jit
    def ours(q, k, v, hk, hv):
        return segment_causal_attention(
            q,
            k,
            v,
            segment=S,
            prefix_k_BxTxHxDh=hk,
            prefix_v_BxTxHxDh=hv,
            persistent_k_PxHxDh=pk,
            persistent_v_PxHxDh=pv,
        )

    def leaky(q, k, v, hk, hv):  # the public-implementation bug: every token sees all h rows of its segment
        return oracle.dense_attention(
            q, k, v, oracle.segment_mask(T, S), pk, pv, hk, hv, oracle.leaky_segment_prefix_mask(T, S)
        )

    assert leaky(q, k, v, hk, hv).shape == (2, T, 2, 4)
    assert _future_leaks(leaky, q, k, v, hk, hv), "the test must be able to catch the leak"
    assert not _future_leaks(ours, q, k, v, hk, hv)


def test_masked_keys_get_exactly_zero_gradient():
    T, W = 9, 3
    (q, k, v), pk, pv = _qkv(3, 1, T, 2, 4, 2)
    i = 5
    g = jax.jit(  # one compiled program instead of the backward pass op by op
        jax.grad(
            lambda k: sliding_window_attention(q, k, v, window=W, persistent_k_PxHxDh=pk, persistent_v_PxHxDh=pv)[
                0, i
            ].sum()
        )
    )(k)
    g = np.abs(np.asarray(g[0])).sum(axis=(1, 2))
    visible = (np.arange(T) > i - W) & (np.arange(T) <= i)
    assert np.all(g[~visible] == 0.0) and np.all(g[visible] > 0.0)


def test_jit_and_bfloat16_output_dtype(oracle):
    (q, k, v), pk, pv = _qkv(1, 1, 12, 2, 4, 2)
    f = jax.jit(
        lambda q, k, v: attention.sliding_window_attention(
            q, k, v, window=5, persistent_k_PxHxDh=pk, persistent_v_PxHxDh=pv
        )
    )
    oracle.assert_close(f(q, k, v), oracle.dense_attention(q, k, v, oracle.swa_mask(12, 5), pk, pv))
    assert f(*(a.astype(jnp.bfloat16) for a in (q, k, v))).dtype == jnp.bfloat16


def test_function_argument_errors():
    (q, k, v), pk, pv = _qkv(0, 1, 5, 2, 4, 2)
    sliding_window_attention, segment_causal_attention = (
        attention.sliding_window_attention,
        attention.segment_causal_attention,
    )
    with pytest.raises(ValueError, match=re.escape("window must be an integer ≥ 1, got 0")):
        sliding_window_attention(q, k, v, window=0)
    with pytest.raises(ValueError, match=re.escape("block_size must be an integer ≥ 1, got 0")):
        sliding_window_attention(q, k, v, window=2, block_size=0)
    with pytest.raises(ValueError, match=re.escape("segment must be an integer ≥ 1, got -1")):
        segment_causal_attention(q, k, v, segment=-1)
    with pytest.raises(ValueError, match=re.escape("q, k and v must have the same shape")):
        sliding_window_attention(q, k[:, :4], v, window=2)
    with pytest.raises(ValueError, match=re.escape("persistent_k_PxHxDh and persistent_v_PxHxDh must be given")):
        sliding_window_attention(q, k, v, window=2, persistent_k_PxHxDh=pk)
    with pytest.raises(ValueError, match=re.escape("prefix_k_BxTxHxDh and prefix_v_BxTxHxDh must be given")):
        segment_causal_attention(q, k, v, segment=2, prefix_k_BxTxHxDh=k)
    with pytest.raises(ValueError, match=re.escape("must have shape (P, H, Dh) = (2, 2, 4)")):
        segment_causal_attention(q, k, v, segment=2, persistent_k_PxHxDh=pk[:, :1], persistent_v_PxHxDh=pv)
