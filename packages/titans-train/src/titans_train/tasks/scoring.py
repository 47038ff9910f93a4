"""Scoring helpers shared by the synthetic tasks: exact match, masked accuracy and chance levels.

Everything here is plain Python / numpy so that it can be used from evaluation loops, notebooks and tests
without touching JAX.

* :func:`exact_match` compares two strings (optionally whitespace-stripped).
* :func:`leading_match` is the S-NIAH rule: the answer must be the *first* thing generated (leading whitespace
  is ignored) and must not run on into a longer value (``"12345678"`` does not match ``"1234567"``); any
  trailing text after a word boundary (``"."``, a newline, more words, ...) is allowed, because a free-running
  decoder rarely stops exactly after the value.
* :func:`masked_accuracy` is token accuracy over labelled positions only (labels equal to ``ignore_index``,
  ``-100`` by default, are skipped) -- the MQAR metric of Zoology.
* ``*_chance_level`` give the accuracy of an uninformed guesser, used by tests and evaluation reports to tell
  "learned something" from "guessing".
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

IGNORE_INDEX = -100
"""Label value that losses and metrics skip (PyTorch / Zoology convention)."""

_VALUE_CONTINUATION = frozenset("0123456789abcdefABCDEF-")
"""Characters that, right after a matched value, mean the generated value is longer than the answer."""


def exact_match(prediction: str, reference: str, *, strip: bool = True) -> bool:
    """``prediction == reference``, after stripping surrounding whitespace from both when ``strip``."""
    if strip:
        prediction, reference = prediction.strip(), reference.strip()
    return prediction == reference


def leading_match(generated: str, answer: str) -> bool:
    """Whether ``generated`` *starts with* ``answer`` as a whole value (the S-NIAH scoring rule).

    Rule, in order:

    1. leading whitespace of ``generated`` is dropped (``answer`` is stripped as well);
    2. the first ``len(answer)`` characters must equal ``answer`` exactly (case-sensitive);
    3. the character right after them, if any, must not continue the value: it may not be a digit, a hex
       letter or ``-`` (so ``"12345678"`` is wrong for ``"1234567"``, but ``"1234567."``,
       ``"1234567\\n..."`` and ``"1234567 is the number"`` are right).

    An empty answer never matches.
    """
    answer = answer.strip()
    if not answer:
        return False
    text = generated.lstrip()
    if not text.startswith(answer):
        return False
    rest = text[len(answer) :]
    return not rest or rest[0] not in _VALUE_CONTINUATION


def accuracy(flags: Iterable[bool]) -> float:
    """Fraction of true flags; raises ``ValueError`` on an empty iterable (it would be undefined)."""
    values = [bool(f) for f in flags]
    if not values:
        raise ValueError("accuracy of an empty list of results is undefined")
    return sum(values) / len(values)


def masked_accuracy(pred_ids: np.ndarray, labels: np.ndarray, *, ignore_index: int = IGNORE_INDEX) -> float:
    """Token accuracy over positions whose label is not ``ignore_index``.

    ``pred_ids`` and ``labels`` must have the same shape (any rank). Raises ``ValueError`` on a shape mismatch
    or when no position is labelled.
    """
    pred_ids = np.asarray(pred_ids)
    labels = np.asarray(labels)
    if pred_ids.shape != labels.shape:
        raise ValueError(f"pred_ids shape {pred_ids.shape} does not match labels shape {labels.shape}")
    mask = labels != ignore_index
    n = int(mask.sum())
    if n == 0:
        raise ValueError("no labelled positions (every label equals ignore_index)")
    return float((pred_ids[mask] == labels[mask]).sum() / n)


def accuracy_stderr(p: float, n: int) -> float:
    """Binomial standard error ``sqrt(p (1 - p) / n)`` of an accuracy ``p`` measured on ``n`` trials."""
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    return math.sqrt(p * (1.0 - p) / n)


def mqar_num_values(vocab_size: int) -> int:
    """Number of value tokens in MQAR: the upper half ``[vocab_size // 2, vocab_size)``."""
    return vocab_size - vocab_size // 2


def mqar_chance_level(vocab_size: int, num_kv_pairs: int | None = None) -> float:
    """Accuracy of a uniform guesser on MQAR.

    * ``num_kv_pairs=None``: guessing uniformly among all value tokens ->
      ``1 / (vocab_size - vocab_size // 2)``.
    * ``num_kv_pairs=k``: guessing uniformly among the ``k`` values present in the context (a model that has
      learned the format but not the bindings) -> ``1 / k``.
    """
    if num_kv_pairs is not None:
        if num_kv_pairs <= 0:
            raise ValueError(f"num_kv_pairs must be positive, got {num_kv_pairs}")
        return 1.0 / num_kv_pairs
    if vocab_size < 4:  # keys need [1, vocab_size // 2) to be non-empty
        raise ValueError(f"vocab_size must be at least 4 for MQAR, got {vocab_size}")
    return 1.0 / mqar_num_values(vocab_size)


def niah_chance_level(value_kind: str = "number") -> float:
    """Probability of guessing an S-NIAH value uniformly at random.

    ``"number"``: one of the ``9 * 10**6`` seven-digit numbers; ``"uuid"``: one of ``2**122`` random version-4
    UUIDs. Both are effectively zero -- S-NIAH has no meaningful chance floor.
    """
    if value_kind == "number":
        return 1.0 / (9 * 10**6)
    if value_kind == "uuid":
        return 2.0**-122
    raise ValueError(f"value_kind must be 'number' or 'uuid', got {value_kind!r}")
