"""Every variant: causal, incremental decoding equals the full pass, trains, and rejects bad specs clearly."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from variants_utils import VARIANTS, full_pass_and_dependence, tiny

T = 13  # crosses windows (4), segments (4; 6 for MAC with chunk 3) and chunks (3)


def tokens(B=2, T=T, seed=1, vocab=32):
    return jax.random.randint(jax.random.key(seed), (B, T), 0, vocab)


def rel(a, b) -> float:
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(a)))


@pytest.fixture(scope="module", params=VARIANTS)
def decoder(request):
    """(variant, model, tokens, full pass, dependence matrices) of a model of two layers with chunks of 3 tokens,
    shared by test_causal and test_incremental_decoding_equals_full_pass (neither changes the model).

    The variant's mixers are in the second block only (``memory_layers=[1]``; the first block is its attention
    alone, and SWA's blocks are both attention): a variant's block decodes as its full pass whatever its input, and
    the blocks are chained by the variant-independent ``TitansLM``, so a second memory block would prove nothing
    more at twice the compile time. MAC's segment (6) is a multiple of the chunk.

    One compiled program gives the full pass and its Jacobian with respect to the embedded inputs
    (``variants_utils.full_pass_and_dependence``)."""
    variant = request.param
    segment = {"segment": 6} if variant == "mac" else {}
    model, toks = tiny(variant, chunk=3, layers=2, memory_layers=[1], **segment), tokens()

    full, dep = full_pass_and_dependence(model, toks)  # out (b, t) × in (c, s)
    return variant, model, toks, full, np.asarray(dep)


def test_causal(decoder):
    """d logits_t / d x_s == 0 exactly for every s > t (x: the embedded inputs), and the rows of a batch are
    independent."""
    variant, *_, dep = decoder
    for b in range(dep.shape[0]):
        d = dep[b, :, b]  # out t × in s
        assert np.all(d[np.triu_indices(T, k=1)] == 0.0), variant
        assert np.all(np.diag(d) > 0)
        if variant == "swa":  # two sliding-window layers: nothing older than 2 × (window − 1) reaches t
            assert d[T - 1, T - 8] == 0.0 and d[T - 1, T - 7] > 0
        else:  # the long-term memory carries the past beyond the windows / segment
            assert d[T - 1, 0] > 0
    assert np.all(dep[0, :, 1] == 0.0) and np.all(dep[1, :, 0] == 0.0), variant


def test_incremental_decoding_equals_full_pass(decoder):
    """Prefill + token-by-token decoding, and prefill + decoding the rest at once, equal the full pass, in a model of
    two layers (the caches handed from layer to layer; the variant's block reads the first block's decoded output)
    with chunks of 3 tokens (prefills that end mid-chunk, at offsets 1 and 2); the model: see ``decoder``."""
    variant, model, toks, full, _ = decoder
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


# The training test's memory is one matrix per head (an MLP of depth 1): the loss and the gradients still flow through
# the memory's update rule and its persistent-token warm-up, and the step traces and compiles in about 2/3 of the time
# of the depth-2 memory. The depth-2 memory's outer gradients are checked against the sequential reference in
# tests/memory (check_rules_agree).
LINEAR_MEMORY = {
    "num_heads": 2,
    "rule": {"name": "momentum_scan", "chunk_size": 2},
    "model": {"name": "mlp", "depth": 1},
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_trains_on_a_repeated_pattern(variant):
    """The loss halves in 25 steps; the persistent tokens (Eq 19; in attention, and in the memory's warm-up for LMM)
    receive gradients. One layer, with a linear memory (``LINEAR_MEMORY``)."""
    model = tiny(variant, layers=1, memory=LINEAR_MEMORY)
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
