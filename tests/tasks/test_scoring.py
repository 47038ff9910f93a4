"""Scoring helpers: exact match, the leading-match rule, accuracy, masked accuracy and chance levels."""

from __future__ import annotations

import math

import numpy as np
import pytest
from titans_train.tasks.scoring import (
    accuracy,
    accuracy_stderr,
    exact_match,
    leading_match,
    masked_accuracy,
    mqar_chance_level,
    niah_chance_level,
)


def test_exact_match():
    assert exact_match(" 42\n", "42")
    assert not exact_match(" 42", "42", strip=False)
    assert not exact_match("42.", "42")


def test_leading_match_rule():
    assert leading_match("\n\t42 apples", "42")
    assert leading_match("42", " 42 ")
    assert not leading_match("420", "42") and not leading_match("42-", "42") and not leading_match("42a", "42")
    assert leading_match("42,", "42") and leading_match("42!", "42")
    assert not leading_match("x42", "42")
    assert not leading_match("anything", "") and not leading_match("", "42")


def test_accuracy_helpers():
    assert accuracy([True, False, True, True]) == 0.75
    assert accuracy(x > 1 for x in [1, 2, 3]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="empty"):
        accuracy([])
    labels = np.array([[-100, 3, -100], [5, -100, 6]])
    assert masked_accuracy(np.array([[0, 3, 0], [5, 0, 0]]), labels) == pytest.approx(2 / 3)
    assert masked_accuracy(np.array([1, 2]), np.array([9, 2]), ignore_index=9) == 1.0
    assert accuracy_stderr(0.5, 100) == pytest.approx(0.05)
    with pytest.raises(ValueError):
        accuracy_stderr(0.5, 0)


def test_chance_levels():
    assert mqar_chance_level(8192) == 1 / 4096
    assert mqar_chance_level(257) == 1 / 129  # values are [vocab // 2, vocab)
    assert mqar_chance_level(8192, num_kv_pairs=8) == 1 / 8
    with pytest.raises(ValueError):
        mqar_chance_level(64, num_kv_pairs=0)
    with pytest.raises(ValueError):
        mqar_chance_level(3)
    assert niah_chance_level("number") == 1 / 9_000_000
    assert math.isclose(niah_chance_level("uuid"), 2.0**-122)
    with pytest.raises(ValueError, match="value_kind"):
        niah_chance_level("word")
