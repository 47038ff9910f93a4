"""Checks a plugin author runs on their own variant (any model satisfying ``titans_core.protocols.Variant``)::

    from titans_core.testing import check_variant

    def test_my_variant():
        check_variant(get_registry().build(make_config("variant", "mine", d_model=32), rngs=nnx.Rngs(0)),
                      vocab_size=256)

The registry checks the variant's methods when it is built (titans_core.contracts); this checks behaviour.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def _max_abs(x: Any) -> float:
    return float(np.max(np.abs(np.asarray(x))))


def check_variant(
    model: Any,
    *,
    vocab_size: int,
    T: int = 12,
    split: int = 5,
    batch: int = 2,
    seed: int = 0,
    tol: float = 1e-4,
) -> None:
    """Assert the two properties every variant must have, on random tokens (relative tolerance ``tol``):

    - **causality**: the logits at positions < t do not change when the tokens at positions ≥ t change
      (and the logits at t do, so the check can fail);
    - **cached decoding**: ``prefill(x[:, :split])`` then ``decode(x[:, split:], cache)`` gives the logits
      of one full pass ``model(x)``, and so does decoding the rest one token at a time.
    """
    # Tokens, slices and comparisons in NumPy: done with jax.numpy outside the model, each compiled a small program.
    tokens = np.asarray(jax.random.randint(jax.random.key(seed), (batch, T), 0, vocab_size))
    full = np.asarray(model(tokens))
    assert full.shape == (batch, T, vocab_size), f"logits must be {(batch, T, vocab_size)}, got {full.shape}"
    scale = _max_abs(full) + 1e-30
    t = T // 2
    later = tokens.copy()
    later[:, t:] = (tokens[:, t:] + 1) % vocab_size
    changed = np.asarray(model(later))
    leak = _max_abs(changed[:, :t] - full[:, :t]) / scale
    assert leak <= tol, f"not causal: changing tokens ≥ {t} changed earlier logits (relative {leak:.2e})"
    assert _max_abs(changed[:, t] - full[:, t]) > 0, f"the logits at {t} ignore the token at {t}"
    head, cache = model.prefill(tokens[:, :split])
    rest, _ = model.decode(tokens[:, split:], cache)
    err = _max_abs(np.concatenate([np.asarray(head), np.asarray(rest)], axis=1) - full) / scale
    assert err <= tol, f"prefill + decode differs from the full pass (relative {err:.2e})"
    outs = [np.asarray(head)]  # the cache is a value: decode did not change it
    for i in range(split, T):
        logits, cache = model.decode(tokens[:, i : i + 1], cache)
        outs.append(np.asarray(logits))
    err = _max_abs(np.concatenate(outs, axis=1) - full) / scale
    assert err <= tol, f"token-by-token decoding differs from the full pass (relative {err:.2e})"
