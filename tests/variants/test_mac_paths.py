"""``benchmarks/mac_paths.py``: cutting one of MAC's two memory reads off from what earlier segments stored.

In the first segment nothing is stored yet, so every mode equals the trained model there; after it each cut read
changes the output, and ``NeuralMemory``'s own methods are back once the ablation ends.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from benchmark_scripts import benchmark_script
from titans_memory import NeuralMemory
from titans_train.tasks.niah import decode_tokens
from variants_utils import tiny

mac_paths = benchmark_script("mac_paths")


def _logits(model, toks, mode):
    with mac_paths._patched(mode):
        return np.asarray(jax.jit(lambda t: model(t))(toks))


@pytest.mark.parametrize("mode", ["no_h", "no_gate"])
def test_a_cut_read_changes_only_what_follows_the_first_segment(mode):
    methods = (NeuralMemory.retrieve, NeuralMemory.__call__)
    model = tiny("mac", layers=1, mac_write="x")
    toks = jax.random.randint(jax.random.key(0), (2, 12), 0, 32)  # three segments of 4
    intact, cut = _logits(model, toks, "intact"), _logits(model, toks, mode)
    scale = np.max(np.abs(intact))
    assert np.max(np.abs(intact - np.asarray(model(toks)))) / scale < 1e-5  # "intact": the model as it is (eager)
    assert np.max(np.abs(cut[:, :4] - intact[:, :4])) / scale < 1e-6  # nothing stored before segment 1
    assert np.max(np.abs(cut[:, 4:] - intact[:, 4:])) / scale > 1e-4  # the stored memory mattered after it
    assert (NeuralMemory.retrieve, NeuralMemory.__call__) == methods  # restored once the ablation ends


def test_batch_puts_each_answer_after_its_prompt_and_pads_with_zeros():
    tokens, starts, lengths = mac_paths._batch(320, 3, "number")
    assert tokens.shape == (3, 320)
    for row, s, n in zip(tokens, starts, lengths, strict=True):
        assert decode_tokens(row[s : s + n]).isdigit() and n == 7
        assert np.all(row[s + n :] == 0) and np.all(row[:s] > 0)


def test_exact_match_counts_an_example_only_when_every_answer_byte_is_predicted():
    class Echo:  # predicts the true next byte everywhere except where told to fail
        def __init__(self, tokens, wrong):
            self.tokens, self.wrong = tokens, wrong

        def __call__(self, t):
            nxt = jnp.roll(t, -1, axis=1)
            nxt = nxt.at[self.wrong].set((nxt[self.wrong] + 1) % 256)
            return jax.nn.one_hot(nxt, 256)

    tokens, starts, lengths = mac_paths._batch(320, 4, "number")
    assert mac_paths.exact_match(Echo(tokens, (0, 0)), tokens, starts, lengths) == 1.0  # a prompt byte: no miss
    last = int(starts[1] + lengths[1] - 2)  # the position that predicts answer 1's last byte
    assert mac_paths.exact_match(Echo(tokens, (1, last)), tokens, starts, lengths) == 0.75
