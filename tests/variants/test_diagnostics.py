"""Memory diagnostics of whole models (titans_attention.diagnostics): every memory layer is reported, on the
very inputs the forward pass writes into it; SWA reports none; the forward pass is unchanged outside
capture."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.extend import core as jax_core
from titans_attention.diagnostics import capture_memory_inputs, memory_layers, model_memory_diagnostics
from titans_memory import DIAGNOSTIC_KEYS, MemoryState
from titans_memory.diagnostics import trace_chunks
from variants_utils import tiny

T = 11  # crosses segments (4) and chunks (2); the persistent tokens (2) leave MAG/MAL/LMM on a chunk boundary


def _tokens():
    return jax.random.randint(jax.random.key(3), (2, T), 0, 32)


def _memory_state(cache):
    """The MemoryState inside one block's cache (MAC keeps it in MACCache.memory)."""
    found = [
        c for c in jax.tree.leaves(cache, is_leaf=lambda c: isinstance(c, MemoryState)) if isinstance(c, MemoryState)
    ]
    assert len(found) == 1
    return found[0]


@pytest.mark.parametrize("variant", ["mac", "mag", "mal", "lmm"])
def test_every_memory_layer_on_the_inputs_it_writes(variant):
    """The recorded input, replayed from the recorded state, ends where the model's pass leaves the memory."""
    model, toks = tiny(variant, layers=2, memory_layers=[1]), _tokens()
    assert list(memory_layers(model)) == ["layer1"]

    @nnx.jit
    def run(model, toks):
        stats = model_memory_diagnostics(model, toks)
        with capture_memory_inputs() as taps:
            model(toks)
        ((memory, x, state),) = taps
        assert memory is memory_layers(model)["layer1"]
        return stats, trace_chunks(memory, x, state).rule_state, model.prefill(toks)[1]

    stats, replayed, caches = run(model, toks)
    assert list(stats) == ["layer1"] and sorted(stats["layer1"]) == sorted(DIAGNOSTIC_KEYS)
    assert all(np.isfinite(v) for v in stats["layer1"].values())
    assert float(stats["layer1"]["update_norm_mean"]) > 0 and float(stats["layer1"]["read_norm_mean"]) > 0
    expected = _memory_state(caches[1]).rule
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(replayed), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_layers_are_named_by_block():
    model = tiny("mag", layers=3, memory_layers=[0, 2])
    assert list(memory_layers(model)) == ["layer0", "layer2"]


def test_swa_has_no_memory_diagnostics():
    model = tiny("swa")
    assert memory_layers(model) == {}
    assert model_memory_diagnostics(model, _tokens()) == {}


def test_forward_pass_unchanged_outside_capture():
    """Capture is a trace-time switch: the MAC pass traced outside it is the same before and after
    diagnostics, and only inside it does the segment scan keep the memory's inputs; the two traced passes give the
    same logits."""
    model, toks = tiny("mac", layers=1), _tokens()
    graphdef, state = nnx.split(model)

    def forward():  # a new function each time, so that no trace is reused from JAX's caches
        return lambda s, t: nnx.merge(graphdef, s)(t)

    before = jax.make_jaxpr(forward())(state, toks)
    nnx.eval_shape(model_memory_diagnostics, model, toks)  # traced (the capture switch flips), not compiled
    assert str(jax.make_jaxpr(forward())(state, toks)) == str(before)
    with capture_memory_inputs():
        inside = jax.make_jaxpr(forward())(state, toks)
    assert str(inside) != str(before)
    # the two traces themselves, compiled (not traced a third and fourth time)
    flat = jax.tree.leaves((state, toks))
    (logits,) = jax.jit(jax_core.jaxpr_as_fun(before))(*flat)
    (captured,) = jax.jit(jax_core.jaxpr_as_fun(inside))(*flat)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(captured), rtol=1e-5, atol=1e-6)
    assert jnp.all(jnp.isfinite(logits))
