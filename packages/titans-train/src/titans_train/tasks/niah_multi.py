"""Multi-key and multi-value needle in a haystack, generated locally following RULER's rules.

Reference: Hsieh et al., "RULER" (2024), ``scripts/data/synthetic/niah.py`` with the ``niah_multikey_1`` and
``niah_multivalue`` settings of ``synthetic.yaml``. Byte level, seeded ``numpy.random.Generator``, the noise
haystack, needle template, key words and value kinds of :mod:`titans_train.tasks.niah` (whose rules apply
unless stated here). RULER's ``niah_multikey_1`` uses the Paul Graham essays as haystack; nothing is
downloaded here, so both tasks use the noise haystack.

* **niah_multikey** (RULER ``niah_multikey_1``: ``num_needle_k=4, num_needle_v=1, num_needle_q=1``):
  ``num_keys`` needles ``"One of the special magic numbers for {key} is: {value}."`` with *distinct* keys and
  distinct values; one key is asked (the question of S-NIAH), the others are distractors. The asked needle is
  at depth ``NIAH_DEPTHS[depth_index]``, each distractor at another of the 40 depths drawn without
  replacement (RULER: ``random.sample(DEPTHS, len(needles))``). The answer is the asked key's value. Scored
  like S-NIAH (:func:`~titans_train.tasks.scoring.leading_match`: the value comes first, exactly); RULER's
  looser rule (the value anywhere in the output) would credit a model that lists every value it saw.
* **niah_multivalue** (RULER ``niah_multivalue``: ``num_needle_k=1, num_needle_v=4``): ``num_values`` needles
  with the *same* key and distinct values, at distinct depths (the first drawn at ``NIAH_DEPTHS[depth_index]``,
  which is the example's ``depth``). The question (RULER's plural form): ``"What are all the special magic
  numbers for {key} mentioned in the provided text? The special magic numbers for {key} mentioned in the
  provided text are: "``; the answer is the values *in the order they appear in the text*, joined by
  ``", "``. Scoring follows RULER's ``string_match_all``: the score of an example is the fraction of the
  values present anywhere in the generated text (case-insensitive substring, any order), averaged over
  examples (:func:`score_multivalue`); :func:`score_multivalue_all` is the stricter all-values-present rate,
  reported alongside.
* **Length.** As S-NIAH: ``len(prompt) + len(answer) <= context_length`` with less than one noise sentence
  (at most 21 bytes) unused; :func:`multi_min_context_length` is the shortest context that holds every
  needle, the question and the answer for the longest keys. Every needle appears exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from titans_train.tasks.haystack import insert_at_depths, noise_sentences
from titans_train.tasks.niah import (
    _MAX_KEY_LENGTH,
    ADJECTIVES,
    NEEDLE_TEMPLATE,
    NIAH_DEPTHS,
    NOUNS,
    NUM_DEPTHS,
    QUESTION_SEPARATOR,
    QUESTION_TEMPLATE,
    VALUE_LENGTHS,
    _as_rng,
    _check_value_kind,
    _random_value,
)
from titans_train.tasks.scoring import leading_match

MULTI_TASKS = ("niah_multikey", "niah_multivalue")
DEFAULT_NEEDLES = 4  # RULER: num_needle_k = 4 (multikey_1), num_needle_v = 4 (multivalue)
PLURAL_QUESTION_TEMPLATE = (
    "What are all the special magic {kind}s for {key} mentioned in the provided text? "
    "The special magic {kind}s for {key} mentioned in the provided text are: "
)
VALUE_JOINER = ", "


@dataclass(frozen=True)
class MultiNeedleExample:
    """One multi-key or multi-value example; ``needles`` / ``needle_starts`` / ``values`` are in text order."""

    task: str  # niah_multikey | niah_multivalue
    prompt: str  # haystack with the needles, newline, question ending in "is: " / "are: "
    answer: str  # the asked value (multikey) or every value in text order joined by ", " (multivalue)
    key: str  # the asked key
    values: tuple[str, ...]  # the values scored: (asked value,) for multikey, every value for multivalue
    needles: tuple[str, ...]  # every needle sentence (distractors included), in text order
    needle_starts: tuple[int, ...]  # byte offset of each needle in prompt
    depth: float  # NIAH_DEPTHS[depth_index]: the asked needle (multikey) / the first drawn needle (multivalue)
    depth_index: int
    value_kind: str
    num_sentences: int  # noise sentences in the haystack

    @property
    def text(self) -> str:
        """``prompt + answer``: the full sequence a model is trained on."""
        return self.prompt + self.answer


def _check(task: str, num_needles: int, value_kind: str) -> None:
    if task not in MULTI_TASKS:
        raise ValueError(f"task must be one of {MULTI_TASKS}, got {task!r}")
    _check_value_kind(value_kind)
    if not 2 <= num_needles <= NUM_DEPTHS:
        raise ValueError(f"the number of needles must be in [2, {NUM_DEPTHS}], got {num_needles}")


def _fixed_length(task: str, keys: list[str], value_kind: str) -> int:
    """Bytes of everything but the noise: needles and their joining spaces, separator, question, answer."""
    width = VALUE_LENGTHS[value_kind]
    needles = sum(len(NEEDLE_TEMPLATE.format(kind=value_kind, key=k, value="x" * width)) + 1 for k in keys) - 1
    if task == "niah_multikey":
        question, answer = QUESTION_TEMPLATE.format(kind=value_kind, key=keys[0]), width
    else:
        question = PLURAL_QUESTION_TEMPLATE.format(kind=value_kind, key=keys[0])
        answer = len(keys) * width + (len(keys) - 1) * len(VALUE_JOINER)
    return needles + len(QUESTION_SEPARATOR) + len(question) + answer


def multi_min_context_length(task: str, num_needles: int = DEFAULT_NEEDLES, value_kind: str = "number") -> int:
    """Smallest accepted ``context_length`` of ``task`` (every key of the longest length, an empty haystack)."""
    _check(task, num_needles, value_kind)
    return _fixed_length(task, ["k" * _MAX_KEY_LENGTH] * num_needles, value_kind)


def _distinct_keys(rng: np.random.Generator, n: int) -> list[str]:
    picks = rng.choice(len(ADJECTIVES) * len(NOUNS), size=n, replace=False)
    return [f"{ADJECTIVES[int(i) // len(NOUNS)]}-{NOUNS[int(i) % len(NOUNS)]}" for i in picks]


def _distinct_values(rng: np.random.Generator, n: int, value_kind: str) -> list[str]:
    values: list[str] = []
    while len(values) < n:
        value = _random_value(rng, value_kind)
        if value not in values:
            values.append(value)
    return values


def make_multi_example(
    rng_or_seed: int | np.random.Generator,
    context_length: int,
    task: str = "niah_multikey",
    num_needles: int = DEFAULT_NEEDLES,
    value_kind: str = "number",
    depth_index: int | None = None,
) -> MultiNeedleExample:
    """One ``niah_multikey`` (``num_needles`` keys) or ``niah_multivalue`` (``num_needles`` values) example.

    ``depth_index`` places the asked needle (multikey) / the first drawn needle (multivalue) at
    ``NIAH_DEPTHS[depth_index]`` (``None``: drawn from the generator); the other needles take distinct other
    depths drawn from the generator."""
    _check(task, num_needles, value_kind)
    shortest = multi_min_context_length(task, num_needles, value_kind)
    if context_length < shortest:
        raise ValueError(
            f"context_length={context_length} is too short for {task} with {num_needles} needles and "
            f"value_kind={value_kind!r}: needles + question + answer need up to {shortest} bytes"
        )
    if depth_index is not None and not 0 <= depth_index < NUM_DEPTHS:
        raise ValueError(f"depth_index must be in [0, {NUM_DEPTHS}), got {depth_index}")
    rng = _as_rng(rng_or_seed)
    if depth_index is None:
        depth_index = int(rng.integers(NUM_DEPTHS))
    others = [d for d in range(NUM_DEPTHS) if d != depth_index]
    depth_indices = [depth_index, *(others[int(i)] for i in rng.choice(len(others), num_needles - 1, replace=False))]
    if task == "niah_multikey":
        keys = _distinct_keys(rng, num_needles)
    else:
        keys = _distinct_keys(rng, 1) * num_needles
    values = _distinct_values(rng, num_needles, value_kind)
    needles = [NEEDLE_TEMPLATE.format(kind=value_kind, key=k, value=v) for k, v in zip(keys, values, strict=True)]

    sentences = noise_sentences(context_length - _fixed_length(task, keys, value_kind))
    pieces = [(NIAH_DEPTHS[d], n) for d, n in zip(depth_indices, needles, strict=True)]
    haystack, starts = insert_at_depths(sentences, pieces)
    order = sorted(range(num_needles), key=lambda i: starts[i])  # text order
    scored: tuple[str, ...]
    if task == "niah_multikey":
        question = QUESTION_TEMPLATE.format(kind=value_kind, key=keys[0])
        scored, answer = (values[0],), values[0]
    else:
        question = PLURAL_QUESTION_TEMPLATE.format(kind=value_kind, key=keys[0])
        scored = tuple(values[i] for i in order)
        answer = VALUE_JOINER.join(scored)
    prompt = haystack + QUESTION_SEPARATOR + question
    assert len(prompt) + len(answer) <= context_length
    return MultiNeedleExample(
        task=task,
        prompt=prompt,
        answer=answer,
        key=keys[0],
        values=scored,
        needles=tuple(needles[i] for i in order),
        needle_starts=tuple(starts[i] for i in order),
        depth=NIAH_DEPTHS[depth_index],
        depth_index=depth_index,
        value_kind=value_kind,
        num_sentences=len(sentences),
    )


def multi_dataset(
    seed: int,
    n: int,
    context_length: int,
    task: str = "niah_multikey",
    num_needles: int = DEFAULT_NEEDLES,
    value_kind: str = "number",
) -> list[MultiNeedleExample]:
    """``n`` examples from one generator seeded with ``seed``; ``depth_index = i * 40 // n`` as in S-NIAH."""
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    rng = np.random.default_rng(seed)
    return [
        make_multi_example(rng, context_length, task, num_needles, value_kind, depth_index=i * NUM_DEPTHS // n)
        for i in range(n)
    ]


def score_multikey(generated: str, answer: str) -> bool:
    """The S-NIAH rule: the asked value first, exactly (:func:`~titans_train.tasks.scoring.leading_match`)."""
    return leading_match(generated, answer)


def score_multivalue(generated: str, values: tuple[str, ...] | list[str]) -> float:
    """RULER's ``string_match_all``: the fraction of ``values`` found in ``generated`` (case-insensitive
    substring, in any order)."""
    if not values:
        raise ValueError("no values to score")
    text = generated.lower()
    return sum(v.lower() in text for v in values) / len(values)


def score_multivalue_all(generated: str, values: tuple[str, ...] | list[str]) -> bool:
    """Whether every value is present (the all-match rate reported next to RULER's partial score)."""
    return score_multivalue(generated, values) == 1.0
