"""titans_core.testing.check_variant passes a causal model with a correct cache and fails the broken ones."""

from __future__ import annotations

import jax.numpy as jnp
import pytest
from titans_core.testing import check_variant

V = 7


class RunningMean:
    """logits_t = onehot-mean of tokens ≤ t (causal); the cache is (count, running sum)."""

    def __init__(self, *, leak: bool = False, stale_cache: bool = False):
        self.leak, self.stale_cache = leak, stale_cache

    def _logits(self, onehot_BxTxV, count0, sum0_BxV):
        sums = sum0_BxV[:, None] + jnp.cumsum(onehot_BxTxV, axis=1)
        counts = count0 + jnp.arange(1, onehot_BxTxV.shape[1] + 1)[None, :, None]
        logits = sums / counts
        if self.leak:  # peeks at the last token of the piece
            logits = logits + 0.1 * onehot_BxTxV[:, -1:]
        return logits, (counts[0, -1, 0], sums[:, -1])

    def __call__(self, tokens_BxT):
        return self.prefill(tokens_BxT)[0]

    def init_cache(self, batch_size):
        return (jnp.zeros(()), jnp.zeros((batch_size, V)))

    def prefill(self, tokens_BxT):
        return self.decode(tokens_BxT, self.init_cache(tokens_BxT.shape[0]))

    def decode(self, tokens_BxT, cache):
        logits, new = self._logits(jnp.eye(V)[tokens_BxT], *cache)
        return logits, (cache if self.stale_cache else new)


def test_a_causal_model_with_a_correct_cache_passes():
    check_variant(RunningMean(), vocab_size=V)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (RunningMean(leak=True), "not causal"),
        (RunningMean(stale_cache=True), "prefill \\+ decode differs"),
    ],
)
def test_broken_models_fail(model, message):
    with pytest.raises(AssertionError, match=message):
        check_variant(model, vocab_size=V)
