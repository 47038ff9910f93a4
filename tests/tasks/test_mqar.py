"""MQAR generator (Zoology rules): vocabulary halves, query/label layout, power-law gaps, accuracy."""

from __future__ import annotations

import numpy as np
import pytest
from titans_train.tasks.mqar import (
    IGNORE_INDEX,
    mqar_accuracy,
    mqar_batch,
    mqar_gap_probabilities,
    mqar_query_positions,
)
from titans_train.tasks.scoring import accuracy_stderr, mqar_chance_level

SETTINGS = [  # (vocab_size, seq_len, num_kv_pairs)
    (64, 64, 8),
    (256, 128, 16),  # byte-level vocabulary
    (8192, 256, 32),
    (12, 16, 2),  # Zoology's docstring example (vocab_size < seq_len is fine)
    (20, 33, 4),  # odd seq_len is fine too
]


def _oracle(inputs: np.ndarray, num_kv_pairs: int) -> np.ndarray:
    """Predict, at every position, the value bound to the current token in the row's kv prefix (else 0)."""
    preds = np.zeros_like(inputs)
    for r, row in enumerate(inputs):
        table = dict(zip(row[0 : 2 * num_kv_pairs : 2].tolist(), row[1 : 2 * num_kv_pairs : 2].tolist(), strict=True))
        preds[r] = [table.get(tok, 0) for tok in row.tolist()]
    return preds


@pytest.mark.parametrize("vocab,seq_len,k", SETTINGS)
@pytest.mark.parametrize("random_non_queries", [True, False])
def test_layout_keys_values_queries_and_labels(vocab, seq_len, k, random_non_queries):
    inputs, labels = mqar_batch(0, 50, vocab, seq_len, k, random_non_queries=random_non_queries)
    assert inputs.shape == labels.shape == (50, seq_len)
    assert inputs.dtype == labels.dtype == np.int32
    half = vocab // 2
    keys, values = inputs[:, 0 : 2 * k : 2], inputs[:, 1 : 2 * k : 2]
    assert keys.min() >= 1 and keys.max() < half  # first half, 0 reserved
    assert values.min() >= half and values.max() < vocab  # second half
    assert set(keys.ravel().tolist()).isdisjoint(values.ravel().tolist())
    assert inputs.min() >= 0 and inputs.max() < vocab
    query = mqar_query_positions(labels)
    assert (query.sum(axis=1) == k).all()  # one labelled position per kv pair
    assert not query[:, : 2 * k].any()
    for r in range(50):
        pos = np.flatnonzero(query[r])
        assert ((pos - 2 * k) % 2 == 0).all()
        prefix = inputs[r, : 2 * k].tolist()
        binding = dict(zip(keys[r].tolist(), values[r].tolist(), strict=True))
        assert len(binding) == k and len(set(values[r].tolist())) == k  # distinct keys and values
        assert sorted(inputs[r, pos].tolist()) == sorted(binding)  # every key queried exactly once
        for p in pos:
            q = int(inputs[r, p])
            assert prefix.count(q) == 1  # the query key appears exactly once in the prefix
            assert labels[r, p] == binding[q]  # ... and its label is its value
        others = np.ones(seq_len, bool)
        others[: 2 * k] = False
        others[pos] = False
        assert (labels[r, ~query[r]] == IGNORE_INDEX).all()
        if not random_non_queries:
            assert (inputs[r, others] == 0).all()
    if random_non_queries and seq_len - 3 * k > 20:
        filler = inputs[:, 2 * k :][~query[:, 2 * k :]]
        assert (filler != 0).mean() > 0.5 and len(np.unique(filler)) > 5


def test_zoology_docstring_shape_example():
    inputs, labels = mqar_batch(3, 1, 12, 16, 2, random_non_queries=False)
    row, lab = inputs[0], labels[0]
    assert (lab != -100).sum() == 2
    for p in np.flatnonzero(lab != -100):
        key = row[p]
        assert lab[p] == row[int(np.flatnonzero(row[:4] == key)[0]) + 1]


def test_power_law_gaps_small_more_frequent():
    seq_len, k, n = 128, 4, 4000
    space = (seq_len - 2 * k) // 2
    _, labels = mqar_batch(1, n, 64, seq_len, k)
    gaps = (np.flatnonzero(labels.ravel() != -100) % seq_len - 2 * k) // 2
    counts = np.bincount(gaps, minlength=space)
    quarter = space // 4
    assert counts[:quarter].sum() > 2 * counts[-quarter:].sum()
    assert counts[0] > counts[space // 2] and counts[1] > counts[-1]
    # num_kv_pairs == 1: the gap is one draw from p, so its frequencies match p
    _, labels = mqar_batch(2, 20000, 64, 64, 1)
    g = (np.flatnonzero(labels.ravel() != -100) % 64 - 2) // 2
    p = mqar_gap_probabilities(31, 0.01)
    emp = np.bincount(g, minlength=31) / g.size
    assert abs(emp[0] - p[0]) < 4 * accuracy_stderr(p[0], g.size)
    assert abs(emp[:8].sum() - p[:8].sum()) < 4 * accuracy_stderr(p[:8].sum(), g.size)


def test_power_a_one_is_uniform_and_probabilities_follow_zoology():
    p = mqar_gap_probabilities(10, 0.01)
    x = np.arange(1, 11)
    np.testing.assert_allclose(p, 0.01 * x**-0.99 / (0.01 * x**-0.99).sum())
    assert np.all(np.diff(p) < 0) and np.isclose(p.sum(), 1.0)
    np.testing.assert_allclose(mqar_gap_probabilities(7, 1.0), np.full(7, 1 / 7))
    _, labels = mqar_batch(4, 20000, 64, 64, 1, power_a=1.0)
    g = (np.flatnonzero(labels.ravel() != -100) % 64 - 2) // 2
    emp = np.bincount(g, minlength=31) / g.size
    assert np.abs(emp - 1 / 31).max() < 4 * accuracy_stderr(1 / 31, g.size)


def test_deterministic_for_seed():
    a = mqar_batch(9, 16, 256, 128, 8)
    b = mqar_batch(9, 16, 256, 128, 8)
    c = mqar_batch(10, 16, 256, 128, 8)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    rng = np.random.default_rng(9)
    first, second = mqar_batch(rng, 4, 64, 64, 4), mqar_batch(rng, 4, 64, 64, 4)
    assert not np.array_equal(first[0], second[0])
    np.testing.assert_array_equal(mqar_batch(np.random.default_rng(9), 4, 64, 64, 4)[0], first[0])


@pytest.mark.parametrize("vocab,seq_len,k", SETTINGS)
def test_oracle_is_perfect_and_random_is_at_chance(vocab, seq_len, k):
    inputs, labels = mqar_batch(5, 400, vocab, seq_len, k)
    assert mqar_accuracy(_oracle(inputs, k), labels) == 1.0
    rng = np.random.default_rng(0)
    random_values = rng.integers(vocab // 2, vocab, size=labels.shape)
    chance = mqar_chance_level(vocab)
    assert chance == 1 / (vocab - vocab // 2)
    acc = mqar_accuracy(random_values, labels)
    assert abs(acc - chance) < 4 * accuracy_stderr(chance, 400 * k) + 1e-9
    # guessing among the values of the row's own context: chance 1 / num_kv_pairs
    ctx_values = inputs[:, 1 : 2 * k : 2]
    guess = np.take_along_axis(ctx_values, rng.integers(0, k, size=labels.shape), axis=1)
    acc = mqar_accuracy(guess, labels)
    assert abs(acc - mqar_chance_level(vocab, k)) < 4 * accuracy_stderr(1 / k, 400 * k) + 1e-9


def test_accuracy_ignores_unlabelled_positions():
    labels = np.full((2, 6), -100)
    labels[0, 2], labels[1, 4] = 7, 9
    preds = np.zeros((2, 6), int)
    assert mqar_accuracy(preds, labels) == 0.0
    preds[0, 2] = 7
    assert mqar_accuracy(preds, labels) == 0.5
    preds[labels == -100] = -100  # predicting -100 at ignored positions scores nothing either way
    preds[1, 4] = 9
    assert mqar_accuracy(preds, labels) == 1.0
    with pytest.raises(ValueError, match="no labelled positions"):
        mqar_accuracy(preds, np.full((2, 6), -100))
    with pytest.raises(ValueError, match="does not match"):
        mqar_accuracy(preds[:, :3], labels)


def test_impossible_settings_raise_clear_errors():
    with pytest.raises(ValueError, match=r"seq_len=31 is too short for num_kv_pairs=8: .* = 32"):
        mqar_batch(0, 1, 64, 31, 8)
    with pytest.raises(ValueError, match=r"vocab_size=16 is too small for num_kv_pairs=8: .*only 7 distinct"):
        mqar_batch(0, 1, 16, 64, 8)
    mqar_batch(0, 1, 18, 64, 8)  # the smallest vocabulary that fits 8 pairs
    with pytest.raises(ValueError, match="num_kv_pairs must be at least 1"):
        mqar_batch(0, 1, 64, 64, 0)
    with pytest.raises(ValueError, match="power_a must be positive"):
        mqar_batch(0, 1, 64, 64, 4, power_a=0.0)
    with pytest.raises(ValueError, match="n must be non-negative"):
        mqar_batch(0, -1, 64, 64, 4)
    inputs, labels = mqar_batch(0, 0, 64, 64, 4)
    assert inputs.shape == labels.shape == (0, 64)


def test_tight_sequence_uses_every_query_slot():
    inputs, labels = mqar_batch(0, 20, 64, 32, 8)  # seq_len == 4 * num_kv_pairs: all 8 slots used
    assert (np.flatnonzero(labels[0] != -100) == np.arange(16, 32, 2)).all()
    assert mqar_accuracy(_oracle(inputs, 8), labels) == 1.0


# ------------------------------------------------------------------------------------------- delay
@pytest.mark.parametrize("vocab,seq_len,k,delay", [(64, 64, 4, 16), (64, 128, 8, 32), (20, 33, 4, 1)])
def test_delay_puts_every_query_more_than_delay_after_its_pair(vocab, seq_len, k, delay):
    inputs, labels = mqar_batch(3, 64, vocab, seq_len, k, delay=delay)
    query = mqar_query_positions(labels)
    assert (query.sum(axis=1) == k).all()
    assert not query[:, : 2 * k + delay].any()
    for r in range(64):
        value_pos = {int(inputs[r, 2 * i]): 2 * i + 1 for i in range(k)}
        for p in np.flatnonzero(query[r]):
            assert p - value_pos[int(inputs[r, p])] > delay
            assert labels[r, p] == inputs[r, value_pos[int(inputs[r, p])]]
            assert ((p - 2 * k - delay) % 2) == 0
    # the oracle that reads the prefix still solves it: the binding is intact
    assert mqar_accuracy(_oracle(inputs, k), labels) == 1.0


def test_zero_delay_is_zoology_exactly():
    a = mqar_batch(7, 16, 64, 64, 4)
    b = mqar_batch(7, 16, 64, 64, 4, delay=0)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_delay_must_fit_and_be_non_negative():
    with pytest.raises(ValueError, match="delay must be non-negative"):
        mqar_batch(0, 1, 64, 64, 4, delay=-1)
    with pytest.raises(ValueError, match=r"4 \* num_kv_pairs \+ delay = 65"):
        mqar_batch(0, 1, 64, 64, 4, delay=49)
    mqar_batch(0, 1, 64, 64, 4, delay=48)  # exactly fits: one query slot per key after the delay
