"""MAC's write (``model.mac_write``): what the memory stores and reads back in Eq 24–25.

Each option keeps MAC causal and its incremental decoding equal to the full pass, and the memory receives exactly
the documented signal (y, x + y, RMSNorm(x + y) or x).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from titans_attention.mixers import MACMixer
from titans_core.spec import SpecError
from variants_utils import full_pass_and_dependence, tiny

WRITES = ["y", "norm(x+y)", "x"]  # the default, "x+y", is covered by test_variants.py (the MAC rows)


@pytest.mark.parametrize("write", WRITES)
def test_causal_and_decoding_equals_full_pass(write):
    """d logits_t / d x_s == 0 for every s > t, and prefill + decoding the rest equals the full pass. One compiled
    program gives the full pass and its Jacobian with respect to the embedded inputs
    (``variants_utils.full_pass_and_dependence``)."""
    model = tiny("mac", layers=1, mac_write=write)
    toks = jax.random.randint(jax.random.key(1), (2, 11), 0, 32)

    full, dep = full_pass_and_dependence(model, toks)  # out (b, t) × in (c, s)
    dep = np.asarray(dep)
    for b in range(2):
        assert np.all(dep[b, :, b][np.triu_indices(11, k=1)] == 0.0)
        assert dep[b, 10, b, 0] > 0  # the memory carries token 0 past the 4-token segment
    logits, cache = nnx.jit(lambda m, t: m.prefill(t))(model, toks[:, :3])  # ends mid-segment, mid-chunk
    rest, _ = nnx.jit(lambda m, t, c: m.decode(t, c))(model, toks[:, 3:], cache)
    out = jnp.concatenate([logits, rest], axis=1)
    assert float(jnp.max(jnp.abs(out - full)) / jnp.max(jnp.abs(full))) < 1e-4


def _mixer(model) -> MACMixer:
    mixer = model.blocks[0].mixers[0]
    assert isinstance(mixer, MACMixer)
    return mixer


@partial(nnx.jit, static_argnames="write")
def _written_and_expected(mixer: MACMixer, x, write: str):
    """One compiled program: the memory state after MAC's prefill of one segment x; NeuralMemory's state after
    writing u = y, x + y, RMSNorm(x + y) or x from the state that segment starts from; and after writing y alone."""
    _, cache = mixer.prefill(x)
    h, state = mixer.memory.retrieve(x, mixer.memory.init_state(x.shape[0]))
    y = mixer.attn(x, prefix_BxTxD=h, positions=jnp.arange(x.shape[1]))
    u = {"y": y, "x": x, "x+y": x + y, "norm(x+y)": (mixer.write_norm(x + y) if mixer.write_norm else None)}[write]
    _, expected = mixer.memory(u, state, aligned=True)
    _, from_y = mixer.memory(y, state, aligned=True)
    return cache.memory, expected, from_y


@pytest.mark.parametrize("write", ["x+y", *WRITES])
def test_the_memory_writes_the_documented_signal(write):
    """After one segment the memory state equals NeuralMemory called on u = y, x + y, RMSNorm(x + y) or x."""
    mixer = _mixer(tiny("mac", layers=1, mac_write=write))
    x = jax.random.normal(jax.random.key(2), (2, 4, 16))  # one segment
    got_state, expected, from_y = _written_and_expected(mixer, x, write)
    for got, want in zip(jax.tree.leaves(got_state), jax.tree.leaves(expected), strict=True):
        scale = max(float(jnp.max(jnp.abs(want))), 1e-30)
        assert float(jnp.max(jnp.abs(got - want))) / scale < 1e-5  # float32: the segment scan vs one call
    if write != "y":  # and it is not what y alone would have written
        pairs = zip(jax.tree.leaves(from_y), jax.tree.leaves(got_state), strict=True)
        assert any(not np.allclose(a, b) for a, b in pairs)


def test_norm_write_has_its_own_scale_and_other_writes_add_no_parameters():
    def count(write):
        return sum(p.size for p in jax.tree.leaves(nnx.state(tiny("mac", mac_write=write), nnx.Param)))

    counts = {w: count(w) for w in ["x+y", *WRITES]}
    assert counts["x+y"] == counts["y"] == counts["x"]
    assert counts["norm(x+y)"] == counts["y"] + 2 * 16  # one RMSNorm scale per MAC block (2 blocks, D = 16)


def test_unknown_write_is_a_spec_error():
    with pytest.raises(SpecError, match="mac_write"):
        tiny("mac", mac_write="x*y")
