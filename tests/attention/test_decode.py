"""Incremental decoding: prefill + decode (token by token or in pieces) equals the full pass; fixed caches."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from titans_attention.attention import SegmentAttention, SlidingWindowAttention

D, H, T, W, S = 8, 2, 13, 4, 4


class Jitted:
    """The module's full pass, prefill and decode under jax.jit (one compile per shape, shared by tests)."""

    def __init__(self, module):
        g, st = nnx.split(module)
        self.module = module
        self.full = jax.jit(lambda x, h: nnx.merge(g, st)(x, prefix_BxTxD=h))
        self.prefill = jax.jit(lambda x, h: nnx.merge(g, st).prefill(x, prefix_BxTxD=h))
        self.decode = jax.jit(lambda x, c, h: nnx.merge(g, st).decode(x, c, prefix_BxTxD=h))


@pytest.fixture(scope="module")
def swa():
    return Jitted(SlidingWindowAttention(D, H, W, 2, rngs=nnx.Rngs(0)))


@pytest.fixture(scope="module")
def seg():
    return Jitted(SegmentAttention(D, H, S, 2, rngs=nnx.Rngs(1)))


def _x(seed, B=2, T=T):
    return jax.random.normal(jax.random.key(seed), (B, T, D), jnp.float32)


def _run_incremental(m: Jitted, x, h, a: int, chunk: int):
    """prefill(x[:, :a]) (or an empty cache when a = 0), then decode the rest in pieces of `chunk` tokens."""
    sl = lambda arr, i, j: None if arr is None else arr[:, i:j]
    if a:
        y, cache = m.prefill(x[:, :a], sl(h, 0, a))
        ys = [y]
    else:
        cache, ys = m.module.init_cache(x.shape[0]), []
    for i in range(a, x.shape[1], chunk):
        y, cache = m.decode(x[:, i : i + chunk], cache, sl(h, i, i + chunk))
        ys.append(y)
    return jnp.concatenate(ys, axis=1), cache


@pytest.mark.parametrize("a", [0, 1, 3, 6, 9])  # empty, short, < window, > window, mid-block
@pytest.mark.parametrize("chunk", [1, 3, 6])  # 6 > window: a piece longer than the ring buffer
def test_sliding_window_decode_equals_full(oracle, swa, a, chunk):
    x = _x(a * 10 + chunk)
    y, cache = _run_incremental(swa, x, None, a, chunk)
    oracle.assert_close(y, swa.full(x, None))
    assert int(cache.pos) == T


@pytest.mark.parametrize("a", [0, 2, 4, 5, 9])  # empty, mid-segment, at a boundary, just past one, later
@pytest.mark.parametrize("chunk", [1, 3, 6])  # 6 > segment: a piece spanning a whole segment boundary
@pytest.mark.parametrize("with_prefix", [False, True])
def test_segment_decode_equals_full(oracle, seg, a, chunk, with_prefix):
    x = _x(a * 10 + chunk)
    h = _x(a * 10 + chunk + 1000) if with_prefix else None
    y, cache = _run_incremental(seg, x, h, a, chunk)
    oracle.assert_close(y, seg.full(x, h))
    assert int(cache.pos) == T


def test_sliding_window_ring_buffer_is_fixed_size(swa):
    swa = Jitted(swa.module)  # fresh jit caches, to count compilations
    x = _x(0, T=3 * W + 2)
    _, cache = swa.prefill(x[:, :1], None)
    init = swa.module.init_cache(2)
    assert cache.k_BxWxHxDh.shape == (2, W, H, D // H)
    for t in range(1, x.shape[1]):
        _, cache = swa.decode(x[:, t : t + 1], cache, None)
        assert jax.tree.map(jnp.shape, cache) == jax.tree.map(jnp.shape, init)
    assert swa.decode._cache_size() == 1, "one compiled step serves every context length"
    # a long prefill leaves exactly the last `window` rotated keys, slot p mod W holding position p
    _, long_cache = swa.prefill(x, None)
    assert long_cache.k_BxWxHxDh.shape[1] == W
    # two compiled programs (one long prefill, many decode steps) may round differently in the last bit (1.2e-7
    # seen here); a key in the wrong slot would differ by O(1), so a float32-tight bound still checks the layout
    np.testing.assert_allclose(np.asarray(long_cache.k_BxWxHxDh), np.asarray(cache.k_BxWxHxDh), rtol=1e-6, atol=1e-6)


def test_segment_cache_resets_when_a_segment_completes(seg):
    x, h = _x(1, T=2 * S), _x(2, T=2 * S)
    init = seg.module.init_cache(2)
    _, cache = seg.prefill(x[:, : S - 1], h[:, : S - 1])
    assert np.asarray(cache.has_prefix_S).tolist() == [True] * (S - 1) + [False]
    _, cache = seg.decode(x[:, S - 1 : S], cache, h[:, S - 1 : S])
    assert int(cache.pos) == S
    assert jax.tree.map(jnp.shape, cache) == jax.tree.map(jnp.shape, init)
    for leaf in (cache.k_BxSxHxDh, cache.v_BxSxHxDh, cache.hk_BxSxHxDh, cache.hv_BxSxHxDh):
        assert not np.any(np.asarray(leaf)), "a completed segment leaves nothing behind"
    assert not np.any(np.asarray(cache.has_prefix_S))
    _, cache = seg.prefill(x, h)  # prefill over whole segments: an empty cache at pos 2S
    assert int(cache.pos) == 2 * S and not np.any(np.asarray(cache.k_BxSxHxDh))
