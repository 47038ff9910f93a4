"""MAC's decode of whole segments from a segment boundary: segment by segment (``MACMixer._decode_segments``, the
path carried-memory training takes), equal to the token-by-token path and to the full pass; off a boundary the same
call decodes token by token."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from titans_attention.mixers import MACMixer
from variants_utils import tiny

T = 16  # four segments of 4 (chunks of 2)


def _rel(a, b) -> float:
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


@partial(nnx.jit, static_argnames="a")
def _paths(mixer: MACMixer, x, a: int = 8):
    """The full pass; prefill(x[:, :a]) then decode(x[:, a:]) through ``decode`` and through each path."""
    full, _ = mixer.prefill(x)
    _, cache = mixer.prefill(x[:, :a])
    return (
        full,
        mixer.decode(x[:, a:], cache),
        mixer._decode_segments(x[:, a:], cache),
        mixer._decode_tokens(x[:, a:], cache),
    )


def test_whole_segments_from_a_boundary_equal_the_token_path_and_the_full_pass() -> None:
    mixer = tiny("mac", layers=1).blocks[0].mixers[0]
    assert isinstance(mixer, MACMixer)
    x = jax.random.normal(jax.random.key(0), (2, T, 16))
    full, (o, cache), (o_seg, cache_seg), (o_tok, cache_tok) = _paths(mixer, x)
    assert _rel(o, full[:, 8:]) < 1e-5 and _rel(o_seg, full[:, 8:]) < 1e-5 and _rel(o_tok, full[:, 8:]) < 1e-5
    np.testing.assert_array_equal(o, o_seg)  # decode took the segment path
    assert int(cache.attn.pos) == T and int(cache_tok.attn.pos) == T
    for got, want in zip(jax.tree.leaves(cache.memory), jax.tree.leaves(cache_tok.memory), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    for got, want in zip(jax.tree.leaves(cache.attn), jax.tree.leaves(cache_tok.attn), strict=True):
        np.testing.assert_array_equal(got, want)  # both empty: the last segment is complete


def test_whole_segments_off_a_boundary_decode_token_by_token() -> None:
    """Eight tokens from position 2: a multiple of the segment, but the boundaries fall inside; decode takes the
    token path (the segment path would be wrong here) and equals the full pass."""
    mixer = tiny("mac", layers=1).blocks[0].mixers[0]
    x = jax.random.normal(jax.random.key(1), (2, 10, 16))
    full, (o, _), (o_seg, _), (o_tok, _) = _paths(mixer, x, 2)
    np.testing.assert_array_equal(o, o_tok)
    assert _rel(o, full[:, 2:]) < 1e-5
    assert _rel(o_seg, full[:, 2:]) > 1e-3  # what the check on the boundary prevents
