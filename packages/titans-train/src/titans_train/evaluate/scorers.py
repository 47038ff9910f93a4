"""Scoring a model on the evaluation tasks: held-out LM loss, S-NIAH, multi-key / multi-value NIAH, BABILong-style
and MQAR (what ``titans-eval`` runs).

Every function takes a :class:`Predictor` (a model wrapped in jitted, fixed-shape forward passes), so any
model with ``model(tokens_BxT) -> logits_BxTxV`` can be evaluated, and returns a plain dict that goes into the
result JSON as is.

Decisions:

- **S-NIAH is scored on greedy generation.** The model generates ``len(answer) + 4`` tokens greedily after the
  prompt and :func:`~titans_train.tasks.niah.score_niah` checks them (the value must come first; up to three
  leading whitespace bytes are tolerated; it must not run on into a longer value). Generation runs as
  repeated *full* forward passes over the prompt plus the tokens generated so far, right-padded to one fixed
  length per context: exactly greedy decoding (the models are causal, so padding after a position never
  changes its logits), batched over examples whose prompts differ in length, and compiled once per context.
- **The other haystack tasks are generated and scored the same way** (:func:`haystack_eval`): ``niah_multikey``
  by the S-NIAH rule; ``niah_multivalue`` by RULER's ``string_match_all`` (``accuracy`` is the mean fraction of
  the values present in the generation, ``all_accuracy`` the rate of generations holding every value);
  ``babilong`` by the first generated word (chance: one location in six).
- **MQAR accuracy** is the argmax at every labelled position (the value after each query) against the label,
  over all queries of all examples (Zoology's metric). Its chance level is 1 / num_kv_pairs (a guesser that
  sees the pairs' values but not the binding), or 1 / (number of value ids) with a ``delay`` (the pairs out
  of reach: nothing tells which values are present).
- **Held-out LM** is the mean next-token cross-entropy over whole windows of ``context`` tokens of the
  validation stream (at most ``max_tokens`` of them), reported in nats and bits per token (bits per byte for
  byte-level data).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from titans_train.data.examples import STREAM_TAGS
from titans_train.data.pipeline import Windows
from titans_train.tasks.babilong import babilong_chance_level, babilong_dataset, score_babilong
from titans_train.tasks.mqar import mqar_accuracy, mqar_batch
from titans_train.tasks.niah import NiahExample, decode_tokens, encode_text, niah_dataset, score_niah
from titans_train.tasks.niah_multi import multi_dataset, score_multikey, score_multivalue
from titans_train.tasks.scoring import (
    IGNORE_INDEX,
    accuracy_stderr,
    mqar_chance_level,
    niah_chance_level,
)

NIAH_EXTRA_TOKENS = 4
"""Tokens generated beyond the answer's length: up to three leading whitespace bytes, then one byte that must
not continue the value (so a generation with four or more leading whitespace bytes is wrong)."""


def score_generation(generated: str, answer: str) -> bool:
    """S-NIAH score of ``len(answer) + NIAH_EXTRA_TOKENS`` greedily generated characters."""
    leading = len(generated) - len(generated.lstrip())
    return leading < NIAH_EXTRA_TOKENS and score_niah(generated, answer)


class Predictor:
    """A model behind two jitted functions on fixed-shape batches: the argmax ids and the per-token loss.

    ``cache``: a batch-1 decoding cache (a memory session, :mod:`titans_train.sessions`); every sequence then
    continues from it (``model.decode``) instead of starting from a fresh memory (``model(tokens)``)."""

    def __init__(self, model: nnx.Module, batch_size: int = 8, cache: Any = None):
        graphdef, params = nnx.split(model)
        if cache is not None:
            from titans_train.sessions import broadcast_cache

            cache = broadcast_cache(model, cache, batch_size)
        self.state, self.batch_size = (params, cache), batch_size

        def logits_of(state: Any, tokens_BxT: jax.Array) -> jax.Array:
            params, cache = state
            model: Any = nnx.merge(graphdef, params)
            return model(tokens_BxT) if cache is None else model.decode(tokens_BxT, cache)[0]

        @jax.jit
        def argmax(state: Any, tokens_BxT: jax.Array) -> jax.Array:
            return jnp.argmax(logits_of(state, tokens_BxT), axis=-1).astype(jnp.int32)

        @jax.jit
        def cross_entropy(state: Any, tokens_BxT: jax.Array, targets_BxT: jax.Array) -> jax.Array:
            logits = logits_of(state, tokens_BxT).astype(jnp.float32)
            return optax.softmax_cross_entropy_with_integer_labels(logits, targets_BxT)

        self._argmax, self._cross_entropy = argmax, cross_entropy

    def _batched(self, fn: Any, *arrays: np.ndarray) -> np.ndarray:
        """``fn`` over ``arrays`` in batches of ``batch_size`` rows (the last one padded by repetition)."""
        n, out = arrays[0].shape[0], []
        for lo in range(0, n, self.batch_size):
            rows = [a[lo : lo + self.batch_size] for a in arrays]
            short = self.batch_size - rows[0].shape[0]
            if short:
                rows = [np.concatenate([r, np.repeat(r[-1:], short, axis=0)]) for r in rows]
            out.append(np.asarray(fn(self.state, *[jnp.asarray(r, jnp.int32) for r in rows])))
        return np.concatenate(out)[:n]

    def argmax(self, tokens_NxT: np.ndarray) -> np.ndarray:
        """Greedy next-token ids at every position, ``N × T``."""
        return self._batched(self._argmax, tokens_NxT)

    def cross_entropy(self, tokens_NxT: np.ndarray, targets_NxT: np.ndarray) -> np.ndarray:
        """Cross-entropy (nats) of ``targets`` at every position, ``N × T``."""
        return self._batched(self._cross_entropy, tokens_NxT, targets_NxT)


# ------------------------------------------------------------------------------------------------ held-out
def heldout_lm(
    predictor: Predictor, tokens: np.ndarray, context: int, *, max_tokens: int, byte_level: bool
) -> dict[str, Any]:
    """Mean cross-entropy of the training pipeline's windows ``tokens[i·C : i·C + C + 1]`` (up to
    ``max_tokens`` predictions, at least one window)."""
    all_windows = Windows(tokens, context)
    if len(all_windows) < 1:
        raise ValueError(f"the held-out stream ({tokens.size} tokens) is shorter than one window of {context + 1}")
    windows = all_windows.gather(np.arange(min(len(all_windows), max(1, max_tokens // context))))
    ce = predictor.cross_entropy(windows[:, :-1], windows[:, 1:])
    loss = float(ce.mean())
    unit = "bits_per_byte" if byte_level else "bits_per_token"
    return {
        "task": "lm",
        "context": context,
        "loss": loss,
        unit: loss / math.log(2),
        "tokens": int(ce.size),
        "by_position": bits_by_position(ce),
    }


def position_buckets(context: int, first: int = 64) -> list[tuple[int, int]]:
    """Position ranges ``[lo, hi)`` that split ``range(context)`` at ``first``, 2·first, 4·first, …"""
    edges = [0]
    edge = first
    while edge < context:
        edges.append(edge)
        edge *= 2
    edges.append(context)
    return list(zip(edges[:-1], edges[1:], strict=True))


def bits_by_position(ce_NxC: np.ndarray) -> list[dict[str, float]]:
    """Mean cross-entropy in bits per position range (:func:`position_buckets`): does a model get better or
    worse further into a window, e.g. beyond the length it was trained at?"""
    return [
        {"from": lo, "to": hi, "bits": float(ce_NxC[:, lo:hi].mean() / math.log(2))}
        for lo, hi in position_buckets(ce_NxC.shape[1])
    ]


# -------------------------------------------------------------------------------------------------- S-NIAH
def greedy_continuations(predictor: Predictor, prompts: Sequence[np.ndarray], new_tokens: int) -> np.ndarray:
    """``new_tokens`` greedy ids after each prompt (``N × new_tokens``), by full forward passes (above)."""
    lengths = np.array([p.size for p in prompts])
    width = int(lengths.max()) + new_tokens
    tokens = np.zeros((len(prompts), width), dtype=np.int32)
    for i, prompt in enumerate(prompts):
        tokens[i, : prompt.size] = prompt
    rows = np.arange(len(prompts))
    for j in range(new_tokens):
        ids = predictor.argmax(tokens)
        tokens[rows, lengths + j] = ids[rows, lengths + j - 1]
    return np.stack([tokens[i, lengths[i] : lengths[i] + new_tokens] for i in rows])


def generate_answers(predictor: Predictor, examples: Sequence[Any]) -> list[str]:
    """``len(answer) + NIAH_EXTRA_TOKENS`` (longest answer) greedily generated characters after each prompt."""
    new_tokens = max(len(e.answer) for e in examples) + NIAH_EXTRA_TOKENS
    generated = greedy_continuations(predictor, [encode_text(e.prompt) for e in examples], new_tokens)
    return [decode_tokens(g) for g in generated]


def _by_depth(examples: Sequence[Any], hits: Sequence[bool]) -> dict[str, list[int]]:
    """``{depth: [correct, total]}`` over the examples (several examples may share a depth)."""
    out: dict[str, list[int]] = {}
    for example, hit in zip(examples, hits, strict=True):
        counts = out.setdefault(f"{example.depth:.3f}", [0, 0])
        counts[0] += int(hit)
        counts[1] += 1
    return out


def score_niah_examples(predictor: Predictor, examples: Sequence[NiahExample]) -> dict[str, Any]:
    """Exact-match accuracy of greedy generation on ``examples`` (one context length), with per-depth hits."""
    if not examples:
        raise ValueError("no S-NIAH examples to score")
    texts = generate_answers(predictor, examples)
    hits = [score_generation(text, e.answer) for text, e in zip(texts, examples, strict=True)]
    acc = float(np.mean(hits))
    return {
        "accuracy": acc,
        "stderr": accuracy_stderr(acc, len(hits)),
        "n": len(hits),
        "chance": niah_chance_level(examples[0].value_kind),
        "by_depth": _by_depth(examples, hits),
        "samples": [{"answer": e.answer, "generated": t} for e, t in zip(examples[:3], texts[:3], strict=True)],
    }


def eval_seed(seed: int, task: str, context: int) -> int:
    """The integer seed of the evaluation examples of ``task`` at ``context``: a stream of its own, shared
    with no training example (see :data:`titans_train.data.examples.STREAM_TAGS`)."""
    return int(np.random.SeedSequence([seed, STREAM_TAGS[f"eval_{task}"], context]).generate_state(1)[0])


def niah_eval_examples(seed: int, context: int, n: int, value_kind: str = "number") -> list[NiahExample]:
    """The S-NIAH examples :func:`niah_eval` scores."""
    return niah_dataset(eval_seed(seed, "niah", context), n, context, value_kind)


def mqar_eval_examples(
    seed: int,
    context: int,
    n: int,
    vocab_size: int,
    num_kv_pairs: int,
    power_a: float = 0.01,
    random_non_queries: bool = True,
    delay: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """The MQAR examples (inputs, labels) :func:`mqar_eval` scores."""
    rng = np.random.default_rng(eval_seed(seed, "mqar", context))
    return mqar_batch(rng, n, vocab_size, context, num_kv_pairs, power_a, random_non_queries, delay)


def niah_eval(predictor: Predictor, context: int, *, n: int, seed: int, value_kind: str = "number") -> dict[str, Any]:
    """S-NIAH at one context length (bytes): ``n`` examples over the 40 depths, from ``seed``."""
    examples = niah_eval_examples(seed, context, n, value_kind)
    return {
        "task": "niah",
        "context": context,
        "value_kind": value_kind,
        **score_niah_examples(predictor, examples),
    }


# ------------------------------------------------------------------- multi-key / multi-value NIAH, BABILong
HAYSTACK_TASKS = ("niah_multikey", "niah_multivalue", "babilong")
"""The generated haystack tasks besides S-NIAH; their options (``num_needles``, ``value_kind`` / ``num_facts``)
default to RULER's and the module defaults (4 needles, numbers, 4 facts)."""


def haystack_eval_examples(task: str, seed: int, context: int, n: int, **options: Any) -> list[Any]:
    """The examples :func:`haystack_eval` scores (``options``: the generator's keyword arguments)."""
    stream = eval_seed(seed, task, context)
    if task == "babilong":
        return list(babilong_dataset(stream, n, context, **options))
    if task in ("niah_multikey", "niah_multivalue"):
        return list(multi_dataset(stream, n, context, task, **options))
    raise ValueError(f"unknown haystack task {task!r} (choose from {', '.join(HAYSTACK_TASKS)})")


def score_haystack_examples(predictor: Predictor, task: str, examples: Sequence[Any]) -> dict[str, Any]:
    """Greedy generation scored by the task's rule (module docstring), with per-depth hits and 3 samples."""
    if not examples:
        raise ValueError(f"no {task} examples to score")
    texts = generate_answers(predictor, examples)
    pairs = list(zip(texts, examples, strict=True))
    extra: dict[str, Any] = {}
    if task == "niah_multivalue":
        scores = [score_multivalue(t, e.values) if _prefix_ok(t) else 0.0 for t, e in pairs]
        hits = [s == 1.0 for s in scores]
        extra["all_accuracy"] = float(np.mean(hits))
        chance = niah_chance_level(examples[0].value_kind)
    else:
        rule = score_multikey if task == "niah_multikey" else score_babilong
        hits = [_prefix_ok(t) and rule(t, e.answer) for t, e in pairs]
        scores = [float(h) for h in hits]
        # multikey: a guesser that picks one of the values it saw; babilong: one of the locations
        chance = 1.0 / len(examples[0].needles) if task == "niah_multikey" else babilong_chance_level()
    acc = float(np.mean(scores))
    return {
        "accuracy": acc,
        **extra,
        "stderr": float(np.std(scores) / math.sqrt(len(scores))),  # = binomial stderr for 0/1 scores
        "n": len(scores),
        "chance": chance,
        "by_depth": _by_depth(examples, hits),
        "samples": [{"answer": e.answer, "generated": t} for t, e in pairs[:3]],
    }


def _prefix_ok(generated: str) -> bool:
    """At most ``NIAH_EXTRA_TOKENS - 1`` leading whitespace bytes (as :func:`score_generation`)."""
    return len(generated) - len(generated.lstrip()) < NIAH_EXTRA_TOKENS


def haystack_eval(predictor: Predictor, task: str, context: int, *, n: int, seed: int, **options: Any) -> dict:
    """One of :data:`HAYSTACK_TASKS` at one context length (bytes): ``n`` examples from ``seed``."""
    examples = haystack_eval_examples(task, seed, context, n, **options)
    return {"task": task, "context": context, **options, **score_haystack_examples(predictor, task, examples)}


# ---------------------------------------------------------------------------------------------------- MQAR
def score_mqar_examples(predictor: Predictor, inputs: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Accuracy of the argmax on the labelled positions of MQAR examples (``N × T`` inputs and labels)."""
    acc = mqar_accuracy(predictor.argmax(inputs), labels)
    queries = int((labels != IGNORE_INDEX).sum())
    return {
        "accuracy": acc,
        "stderr": accuracy_stderr(acc, queries),
        "n": int(inputs.shape[0]),
        "queries": queries,
    }


def mqar_eval(
    predictor: Predictor,
    context: int,
    *,
    n: int,
    seed: int,
    vocab_size: int,
    num_kv_pairs: int,
    power_a: float = 0.01,
    random_non_queries: bool = True,
    delay: int = 0,
) -> dict[str, Any]:
    """MQAR at sequence length ``context``: ``n`` examples from ``seed`` (a stream no training set uses)."""
    inputs, labels = mqar_eval_examples(seed, context, n, vocab_size, num_kv_pairs, power_a, random_non_queries, delay)
    return {
        "task": "mqar",
        "context": context,
        "num_kv_pairs": num_kv_pairs,
        "delay": delay,
        **score_mqar_examples(predictor, inputs, labels),
        # with a delay, a model that cannot reach the pairs knows nothing of which values are present: uniform
        # over every value id; without one, uniform over the values in the context (Zoology's reading)
        "chance": mqar_chance_level(vocab_size, None if delay else num_kv_pairs),
    }
