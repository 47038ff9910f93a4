"""Cached generation: greedy equals re-running the full model; sampling is reproducible; per-token cost is flat."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import pytest
from flax import nnx
from titans_attention import count_params, generate, param_report
from titans_attention.decoding import filter_logits
from variants_utils import tiny

PROMPT = jnp.array([[1, 2, 3, 4, 5], [5, 4, 3, 2, 1]])


@pytest.mark.parametrize("variant", ["mac", "mag"])
def test_greedy_generation_equals_argmax_of_the_full_pass(variant):
    """One layer: ``generate`` drives the model's own prefill / decode and never looks inside its blocks; that
    decoding chains the caches of several blocks exactly is test_variants.py's
    test_incremental_decoding_equals_full_pass (two layers)."""
    model = tiny(variant, layers=1)
    out = generate(model, PROMPT, 6, temperature=0.0)
    # The full pass is causal (tests/variants/test_variants.py), so one pass over prompt + generated tokens gives
    # at every position the logits a re-run on the sequence up to there would give.
    seq = jnp.concatenate([PROMPT, out], axis=1)
    logits = nnx.jit(lambda m, t: m(t))(model, seq[:, :-1])
    assert out.tolist() == jnp.argmax(logits[:, PROMPT.shape[1] - 1 :], axis=-1).tolist()
    assert generate(model, PROMPT, 6, temperature=0.0).tolist() == out.tolist()  # deterministic


def test_sampling_is_reproducible_from_the_seed():
    model = tiny("mal", layers=1)  # sampling and its compiled program do not depend on the depth
    a = generate(model, PROMPT, 8, temperature=1.0, seed=3)
    b = generate(model, PROMPT, 8, temperature=1.0, seed=3)
    c = generate(model, PROMPT, 8, temperature=1.0, seed=4)
    assert a.tolist() == b.tolist()
    assert a.tolist() != c.tolist()
    compiles: list[str] = []

    def listen(event: str, _secs: float, **_: object) -> None:
        if event.endswith("backend_compile_duration"):
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:  # the sampling options are traced: every setting below runs a's compiled program
        greedy = generate(model, PROMPT, 8, temperature=0.0)
        assert generate(model, PROMPT, 8, temperature=1.0, top_k=1, seed=5).tolist() == greedy.tolist()
        assert generate(model, PROMPT, 8, temperature=1e-6, top_p=0.5, seed=6).tolist() == greedy.tolist()
        generate(model, PROMPT, 8, temperature=0.7, top_k=3, top_p=0.9, seed=7)
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert compiles == [], compiles


def test_filter_logits_top_k_and_top_p():
    logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
    assert jnp.isinf(filter_logits(logits, top_k=2)).tolist() == [[False, False, True, True]]
    assert jnp.isinf(filter_logits(logits, top_p=0.7)).tolist() == [[False, False, True, True]]
    assert jnp.isinf(filter_logits(logits, top_p=0.85)).tolist() == [[False, False, False, True]]


def test_bad_generation_arguments():
    model = tiny("swa")
    with pytest.raises(ValueError, match="max_new_tokens must be ≥ 1, got 0"):
        generate(model, PROMPT, 0)
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\], got 1.5"):
        generate(model, PROMPT, 2, top_p=1.5)


def test_cache_size_does_not_grow_with_context():
    model = tiny("mac", layers=1)  # one block's cache; a deeper model's is one such cache per block
    sizes = []
    for T in (8, 40):
        # shapes only: traced, not compiled
        _, cache = nnx.eval_shape(lambda m, t: m.prefill(t), model, jnp.zeros((1, T), jnp.int32))
        sizes.append(sum(math.prod(x.shape) for x in jax.tree.leaves(cache)))
    assert sizes[0] == sizes[1]


def test_param_report_adds_up():
    model = tiny("mag")
    report = param_report(model)
    assert report["total"] == count_params(model) == sum(v for k, v in report.items() if k != "total")
