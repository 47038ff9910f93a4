"""Multi-query associative recall (MQAR), generated following Zoology's rules.

Reference: Arora, Eyuboglu et al., "Zoology: Measuring and Improving Recall in Efficient Language Models"
(2023), ``zoology/data/associative_recall.py`` (``multiquery_ar`` / ``_mqar``). Same construction, same label
convention and same gap distribution; the differences are the random plumbing (a seeded
``numpy.random.Generator`` instead of the global ``np.random.seed`` + ``torch.randint``), numpy ``int32``
outputs instead of torch tensors, and clear ``ValueError`` s instead of asserts.

Example (``vocab_size=12, seq_len=16, num_kv_pairs=2, random_non_queries=False``)::

            k    v    k    v              query          query
    inputs: 2    8    4    7    0    0    4    0    0    0    2    0    0    0    0    0
    labels: -100 -100 -100 -100 -100 -100 7    -100 -100 -100 8    -100 -100 -100 -100 -100

Rules:

* **Vocabulary.** Keys are distinct ids from ``[1, vocab_size // 2)`` (the first half; id ``0`` is reserved as
  the filler token), values are distinct ids from ``[vocab_size // 2, vocab_size)`` (the second half). Any
  vocabulary size works as long as both halves hold ``num_kv_pairs`` ids.
* **Context.** The first ``2 * num_kv_pairs`` positions are the pairs ``k1 v1 k2 v2 ...``.
* **Queries.** Each key appears once more after the context, at position
  ``2 * num_kv_pairs + delay + 2 * gap`` where the gaps are drawn *without replacement* from ``range(space)``,
  ``space = (seq_len - 2 * num_kv_pairs - delay) // 2``, with probabilities
  ``p(x) ∝ power_a * x ** (power_a - 1)`` for ``x = gap + 1`` (a power law: small gaps are much more
  likely; ``power_a = 1`` is uniform). Sampling is sequential, so key ``i`` gets the ``i``-th draw exactly as
  in Zoology (done here with the equivalent Gumbel-top-k trick).
* **Delay** (our addition; ``delay = 0`` is Zoology exactly). ``delay`` filler tokens separate the last pair
  from the first query slot, so every query lies more than ``delay`` tokens after its value: with ``delay``
  beyond the reach of the stacked attention windows (L layers of window W reach L·(W − 1) tokens back), no
  query can see its pair through attention, and only a memory recalls it.
* **Labels.** ``labels[t]`` is the next-token target of the model's output at position ``t`` (Zoology already
  shifts them): it is the key's value at each query position ("the position right after the query holds the
  value") and ``-100`` (ignored) everywhere else -- exactly ``num_kv_pairs`` labelled positions per row.
  The value itself is *not* in ``inputs``: the model must recall it. Loss and accuracy use labelled
  positions only.
* **Filler.** Every other position is ``0``, or, when ``random_non_queries`` (Zoology's default), a token
  drawn uniformly from the whole vocabulary ``[0, vocab_size)``. As in Zoology, filler may by chance repeat a
  key or value id; such positions are unlabelled and never scored.

Zoology also asserts ``vocab_size > seq_len`` and an even ``seq_len``; neither is needed by the construction,
so neither is required here. What is required: ``seq_len >= 4 * num_kv_pairs + delay`` (context, delay and
one query slot per key), ``num_kv_pairs <= vocab_size // 2 - 1`` (distinct keys), ``power_a > 0`` and
``delay >= 0``.
"""

from __future__ import annotations

import numpy as np

from titans_train.tasks.scoring import IGNORE_INDEX, masked_accuracy

__all__ = [
    "IGNORE_INDEX",
    "mqar_accuracy",
    "mqar_batch",
    "mqar_gap_probabilities",
    "mqar_query_positions",
    "validate_mqar_config",
]


def validate_mqar_config(
    vocab_size: int, seq_len: int, num_kv_pairs: int, power_a: float = 0.01, delay: int = 0
) -> None:
    """Raise ``ValueError`` with a clear message when an MQAR setting is impossible."""
    if num_kv_pairs < 1:
        raise ValueError(f"num_kv_pairs must be at least 1, got {num_kv_pairs}")
    if delay < 0:
        raise ValueError(f"delay must be non-negative, got {delay}")
    if seq_len < 4 * num_kv_pairs + delay:
        with_delay = (f" and delay={delay}", " + delay", " the delay,") if delay else ("", "", "")
        raise ValueError(
            f"seq_len={seq_len} is too short for num_kv_pairs={num_kv_pairs}{with_delay[0]}: MQAR needs "
            f"seq_len >= 4 * num_kv_pairs{with_delay[1]} = {4 * num_kv_pairs + delay} (2 tokens per pair in "
            f"the context,{with_delay[2]} 2 per query slot)"
        )
    n_keys = vocab_size // 2 - 1
    n_values = vocab_size - vocab_size // 2
    if n_keys < num_kv_pairs:
        raise ValueError(
            f"vocab_size={vocab_size} is too small for num_kv_pairs={num_kv_pairs}: keys come from "
            f"[1, {vocab_size // 2}) which holds only {max(n_keys, 0)} distinct ids "
            f"(need vocab_size >= {2 * num_kv_pairs + 2})"
        )
    if n_values < num_kv_pairs:  # unreachable given the key check, kept for clarity
        raise ValueError(f"vocab_size={vocab_size} holds only {n_values} value ids, need {num_kv_pairs}")
    if not power_a > 0:
        raise ValueError(f"power_a must be positive, got {power_a}")


def mqar_gap_probabilities(space: int, power_a: float = 0.01) -> np.ndarray:
    """Zoology's gap distribution over ``range(space)``: ``p[g] ∝ power_a * (g + 1) ** (power_a - 1)``."""
    if space < 1:
        raise ValueError(f"space must be at least 1, got {space}")
    if not power_a > 0:
        raise ValueError(f"power_a must be positive, got {power_a}")
    p = power_a * np.arange(1, space + 1, dtype=np.float64) ** (power_a - 1)
    return p / p.sum()


def _distinct_per_row(rng: np.random.Generator, n: int, low: int, high: int, k: int) -> np.ndarray:
    """``[n, k]`` ids, each row ``k`` distinct draws from ``[low, high)`` in random order."""
    out = np.empty((n, k), dtype=np.int64)
    for i in range(n):
        out[i] = rng.choice(high - low, size=k, replace=False) + low
    return out


def mqar_batch(
    seed: int | np.random.Generator,
    n: int,
    vocab_size: int,
    seq_len: int,
    num_kv_pairs: int,
    power_a: float = 0.01,
    random_non_queries: bool = True,
    delay: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` MQAR rows: ``(inputs int32 [n, seq_len], labels int32 [n, seq_len])``, ``-100`` = ignored.

    Deterministic for an integer ``seed``; a ``numpy.random.Generator`` is consumed in place. See the module
    docstring for the rules.
    """
    validate_mqar_config(vocab_size, seq_len, num_kv_pairs, power_a, delay)
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    half = vocab_size // 2
    context = 2 * num_kv_pairs
    space = (seq_len - context - delay) // 2

    keys = _distinct_per_row(rng, n, 1, half, num_kv_pairs)
    values = _distinct_per_row(rng, n, half, vocab_size, num_kv_pairs)

    # sequential sampling without replacement with probabilities p == Gumbel-top-k on log p
    log_p = np.log(mqar_gap_probabilities(space, power_a))
    scores = log_p[None, :] + rng.gumbel(size=(n, space))
    gaps = np.argsort(-scores, axis=1, kind="stable")[:, :num_kv_pairs]  # gaps[:, i]: draw i, for key i
    query_pos = context + delay + 2 * gaps

    inputs = np.zeros((n, seq_len), dtype=np.int64)
    labels = np.full((n, seq_len), IGNORE_INDEX, dtype=np.int64)
    inputs[:, 0:context:2] = keys
    inputs[:, 1:context:2] = values
    np.put_along_axis(inputs, query_pos, keys, axis=1)
    np.put_along_axis(labels, query_pos, values, axis=1)

    if random_non_queries:
        filler = np.ones((n, seq_len), dtype=bool)
        filler[:, :context] = False
        np.put_along_axis(filler, query_pos, False, axis=1)
        inputs[filler] = rng.integers(0, vocab_size, size=int(filler.sum()))
    return inputs.astype(np.int32), labels.astype(np.int32)


def mqar_query_positions(labels: np.ndarray) -> np.ndarray:
    """Boolean mask of the labelled (query) positions: ``labels != -100``."""
    return np.asarray(labels) != IGNORE_INDEX


def mqar_accuracy(pred_ids: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy of ``pred_ids`` (``[..., seq_len]``, the model's argmax per position) on labelled positions.

    ``pred_ids[t]`` is compared with ``labels[t]`` wherever ``labels[t] != -100``; all other positions are
    ignored, as in Zoology. Raises ``ValueError`` on a shape mismatch or when nothing is labelled.
    """
    return masked_accuracy(pred_ids, labels, ignore_index=IGNORE_INDEX)
