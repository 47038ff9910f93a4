"""Every variant: causal, incremental decoding equals the full pass, trains, and rejects bad specs clearly."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from variants_utils import VARIANTS, tiny

T = 13  # crosses windows (4), segments (4; 6 for MAC with chunk 3) and chunks (3)


def tokens(B=2, T=T, seed=1, vocab=32):
    return jax.random.randint(jax.random.key(seed), (B, T), 0, vocab)


def rel(a, b) -> float:
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(a)))


@pytest.mark.parametrize("variant", VARIANTS)
def test_causal(variant):
    """d logits_t / d x_s == 0 exactly for every s > t (x: the embedded inputs).

    The Jacobian is taken in forward mode (``jax.jacfwd``): the same matrix as reverse mode, whose compiled program
    took about 1.7× as long to build for these models."""
    model = tiny(variant, vocab=8, layers=1)
    x = jax.random.normal(jax.random.key(0), (1, 10, 16))
    jac = nnx.jit(lambda m, x: jax.jacfwd(m.from_embeddings)(x))(model, x)  # 1×T×V×1×T×D
    dep = np.asarray(jnp.max(jnp.abs(jac[0, :, :, 0]), axis=(1, 3)))  # out t × in s
    assert np.all(dep[np.triu_indices(10, k=1)] == 0.0), variant
    assert np.all(np.diag(dep) > 0)
    if variant == "swa":  # one sliding-window layer: nothing older than the window reaches t
        assert dep[9, 0] == 0.0 and dep[9, 6] > 0
    else:  # the long-term memory carries the past beyond the window / segment
        assert dep[9, 0] > 0


@pytest.mark.parametrize("variant", VARIANTS)
def test_incremental_decoding_equals_full_pass(variant):
    """Prefill + token-by-token decoding, and prefill + decoding the rest at once, equal the full pass, in a model of
    two layers (the caches handed from layer to layer; the variant's block reads the first block's decoded output)
    with chunks of 3 tokens (prefills that end mid-chunk, at offsets 1 and 2).

    The variant's mixers are in the second block only (``memory_layers=[1]``; the first block is its attention alone,
    and SWA's blocks are both attention): a variant's block decodes as its full pass whatever its input, and the
    blocks are chained by the variant-independent ``TitansLM``, so a second memory block would prove nothing more at
    twice the compile time. MAC's segment (6) is a multiple of the chunk."""
    segment = {"segment": 6} if variant == "mac" else {}
    model, toks = tiny(variant, chunk=3, layers=2, memory_layers=[1], **segment), tokens()
    full = nnx.jit(lambda m, t: m(t))(model, toks)
    prefill = nnx.jit(lambda m, t: m.prefill(t))
    decode = nnx.jit(lambda m, t, c: m.decode(t, c))
    for a in (1, 5):  # prefill ends mid-chunk (offsets 1 and 2) and mid-segment, in or past a window
        logits, cache = prefill(model, toks[:, :a])
        pieces = [logits]
        for t in range(a, T):  # token by token
            step, cache = decode(model, toks[:, t : t + 1], cache)
            pieces.append(step)
        assert rel(full, jnp.concatenate(pieces, axis=1)) < 1e-4, (variant, a)
    logits, cache = prefill(model, toks[:, :1])
    rest, _ = decode(model, toks[:, 1:], cache)  # the other 12 tokens at once, across chunks, segments and windows
    assert rel(full, jnp.concatenate([logits, rest], axis=1)) < 1e-4


@pytest.mark.parametrize("variant", VARIANTS)
def test_trains_on_a_repeated_pattern(variant):
    """The loss halves in 25 steps; the persistent tokens (Eq 19; in attention, and in the memory's warm-up for LMM)
    receive gradients."""
    model = tiny(variant, layers=1)
    pattern = jnp.tile(jnp.array([3, 1, 4, 1, 5, 9, 2, 6]), 3)[None]
    inputs, targets = pattern[:, :-1], pattern[:, 1:]
    opt = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model, opt):
        def loss_fn(m):
            return optax.softmax_cross_entropy_with_integer_labels(m(inputs), targets).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        opt.update(model, grads)
        flat = {".".join(map(str, p)): v[...] for p, v in nnx.to_flat_state(grads)}
        return loss, {k: jnp.max(jnp.abs(v)) for k, v in flat.items() if "persistent" in k}

    losses, persistent = [], None
    for _ in range(25):
        loss, grads = step(model, opt)
        losses.append(float(loss))
        persistent = persistent or grads  # the first step's
    assert losses[-1] < 0.5 * losses[0], losses
    assert persistent and all(float(v) > 0 for v in persistent.values()), persistent


def test_memory_layers_choose_which_blocks_carry_a_memory():
    with_all = tiny("mag", layers=2)
    only_first = tiny("mag", layers=2, memory_layers=[0])
    kinds = lambda m: [type(b.mixers[0]).__name__ for b in m.blocks]  # noqa: E731
    assert kinds(with_all) == ["MAGMixer", "MAGMixer"]
    assert kinds(only_first) == ["MAGMixer", "AttentionMixer"]


def test_untied_output_head():
    """An untied head adds its D × V matrix and decodes as the full pass. The head is the same for every variant
    (``TitansLM._logits``): one SWA layer is the cheapest model to compile around it."""
    tied, untied = tiny("swa", layers=1), tiny("swa", layers=1, tie_embeddings=False)
    from titans_attention import count_params

    assert count_params(untied) - count_params(tied) == 16 * 32  # the head's D × V matrix
    toks = tokens()
    full = nnx.jit(lambda m, t: m(t))(untied, toks)
    logits, cache = nnx.jit(lambda m, t: m.prefill(t))(untied, toks[:, :6])
    rest, _ = nnx.jit(lambda m, t, c: m.decode(t, c))(untied, toks[:, 6:], cache)
    assert rel(full, jnp.concatenate([logits, rest], axis=1)) < 1e-4
