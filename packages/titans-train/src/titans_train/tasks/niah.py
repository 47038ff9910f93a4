"""Single-needle "needle in a haystack" (S-NIAH), generated locally following RULER's rules.

Reference: Hsieh et al., "RULER: What's the Real Context Size of Your Long-Context Language Models?" (2024),
``scripts/data/synthetic/niah.py`` -- the ``niah_single_1`` (noise haystack, number value) and
``niah_single_*`` uuid variants. Nothing is downloaded: the haystack, the needle template and the key
words are embedded below, and every random choice comes from a seeded ``numpy.random.Generator``.

Rules (byte level: one token = one byte of the UTF-8 text; all text is ASCII, so characters == bytes):

* **Haystack.** RULER's noise: the sentences of ``"The grass is green. The sky is blue. The sun is yellow.
  Here we go. There and back again."`` repeated in order and joined by single spaces, as many *whole*
  sentences as fit.
* **Needle.** ``"One of the special magic numbers for {key} is: {value}."`` -- ``value`` is a random 7-digit
  number (``value_kind="number"``) or a random version-4 UUID (``value_kind="uuid"``, built from 16 bytes of
  the seeded generator, never from ``uuid.uuid4``). As in RULER, the noun follows the value kind (``numbers``
  / ``uuids`` in the needle, ``number`` / ``uuid`` in the question). ``key`` is an adjective-noun pair such as
  ``"tasteful-tomato"`` (RULER draws them with ``wonderwords``; here from the embedded lists).
* **Depth.** One of :data:`NIAH_DEPTHS`, the 40 evenly spaced fractions ``linspace(0, 1, 40)`` (RULER uses the
  same 40 depths, rounded to whole percents). Depth ``d`` inserts the needle at the sentence boundary closest
  to fraction ``d`` of the haystack (measured in bytes; ties go to the earlier boundary), so ``0`` puts it
  first and ``1`` last. The needle appears exactly once.
* **Question.** After a newline: ``"What is the special magic number for {key} mentioned in the provided text?
  The special magic number for {key} mentioned in the provided text is: "``; the model must generate
  ``value``.
* **Length.** ``context_length`` counts bytes of prompt *and* answer (RULER likewise reserves
  ``tokens_to_generate`` inside ``max_seq_length``): ``len(prompt) + len(answer) <= context_length``, and the
  haystack is filled so that less than one sentence (at most 21 bytes) is left unused. A context that cannot
  hold needle + question + answer for the longest key raises ``ValueError`` (see
  :func:`niah_min_context_length`).
* **Scoring.** :func:`score_niah` -- see :func:`titans_train.tasks.scoring.leading_match`: the value must be
  the first thing generated (leading whitespace ignored), compared exactly, and may be followed by any text
  that does not extend the value.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from titans_train.tasks.scoring import leading_match

HAYSTACK_SENTENCES: tuple[str, ...] = (
    "The grass is green.",
    "The sky is blue.",
    "The sun is yellow.",
    "Here we go.",
    "There and back again.",
)
NOISE_BLOCK = " ".join(HAYSTACK_SENTENCES)
NUM_DEPTHS = 40
NIAH_DEPTHS: tuple[float, ...] = tuple(float(d) for d in np.linspace(0.0, 1.0, NUM_DEPTHS))
VALUE_KINDS = ("number", "uuid")
NEEDLE_TEMPLATE = "One of the special magic {kind}s for {key} is: {value}."
QUESTION_TEMPLATE = (
    "What is the special magic {kind} for {key} mentioned in the provided text? "
    "The special magic {kind} for {key} mentioned in the provided text is: "
)
QUESTION_SEPARATOR = "\n"
VALUE_LENGTHS = {"number": 7, "uuid": 36}

ADJECTIVES: tuple[str, ...] = tuple(
    """
    tasteful abundant adorable agreeable ancient bashful bitter brave breezy brief calm careful cheerful
    chilly clever clumsy cozy curious damp dazzling delightful eager elegant fancy fierce fluffy gentle
    gigantic glossy graceful grumpy handsome hollow humble icy jolly kind lively lucky magnificent
    mellow nervous odd polite proud quiet rapid rustic shiny silent sleepy smooth spicy stormy sturdy
    tender tidy vivid wise zesty
    """.split()
)
NOUNS: tuple[str, ...] = tuple(
    """
    tomato anchor apple badger bakery banjo barrel beacon bicycle blanket bucket butter cabinet camera
    candle canyon carrot castle cello cherry chimney compass cookie cottage crayon dolphin dragon engine
    falcon feather fountain garden giraffe guitar hammer harbor helmet island jacket kettle ladder
    lantern lemon meadow mirror needle orchard otter pebble pencil piano pillow rabbit ribbon saddle
    teapot tunnel violin walrus window
    """.split()
)
_MAX_KEY_LENGTH = max(map(len, ADJECTIVES)) + 1 + max(map(len, NOUNS))
_SENTENCE_COSTS = tuple(len(s) + 1 for s in HAYSTACK_SENTENCES)  # each sentence plus its joining space
MAX_SENTENCE_LENGTH = max(map(len, HAYSTACK_SENTENCES))


@dataclass(frozen=True)
class NiahExample:
    """One S-NIAH example.

    ``prompt`` ends with the question's ``"... is: "``; ``answer`` is the value to generate.
    ``needle_start`` is the byte offset of the needle in ``prompt``; ``depth`` is
    ``NIAH_DEPTHS[depth_index]``.
    """

    prompt: str
    answer: str
    depth: float
    key: str
    needle_start: int
    depth_index: int
    value_kind: str
    num_sentences: int

    @property
    def needle(self) -> str:
        """The needle sentence inserted in the haystack."""
        return NEEDLE_TEMPLATE.format(kind=self.value_kind, key=self.key, value=self.answer)

    @property
    def text(self) -> str:
        """``prompt + answer``: the full sequence a model is trained on."""
        return self.prompt + self.answer


class PromptAnswer(Protocol):
    """An example of any haystack task: the prompt and the answer to generate after it."""

    @property
    def prompt(self) -> str: ...

    @property
    def answer(self) -> str: ...


def _check_value_kind(value_kind: str) -> None:
    if value_kind not in VALUE_KINDS:
        raise ValueError(f"value_kind must be one of {VALUE_KINDS}, got {value_kind!r}")


def _fixed_length(key: str, value_kind: str) -> int:
    """Bytes taken by everything except the haystack sentences: needle + separator + question + answer."""
    needle = NEEDLE_TEMPLATE.format(kind=value_kind, key=key, value="x" * VALUE_LENGTHS[value_kind])
    question = QUESTION_TEMPLATE.format(kind=value_kind, key=key)
    return len(needle) + len(QUESTION_SEPARATOR) + len(question) + VALUE_LENGTHS[value_kind]


def niah_min_context_length(value_kind: str = "number") -> int:
    """Smallest accepted ``context_length``: needle + question + answer for the longest key.

    At this length the haystack may be empty; every longer context adds whole sentences.
    """
    _check_value_kind(value_kind)
    return _fixed_length("k" * _MAX_KEY_LENGTH, value_kind)


def _as_rng(rng_or_seed: int | np.random.Generator) -> np.random.Generator:
    if isinstance(rng_or_seed, np.random.Generator):
        return rng_or_seed
    return np.random.default_rng(rng_or_seed)


def _random_value(rng: np.random.Generator, value_kind: str) -> str:
    if value_kind == "number":
        return str(int(rng.integers(10**6, 10**7)))  # RULER: randint(10**6, 10**7 - 1), exactly 7 digits
    return str(uuid.UUID(bytes=rng.bytes(16), version=4))


def _haystack_sentences(num_sentences: int) -> list[str]:
    n = len(HAYSTACK_SENTENCES)
    return [HAYSTACK_SENTENCES[i % n] for i in range(num_sentences)]


def _num_sentences_fitting(budget: int) -> int:
    """Largest ``N`` such that the first ``N`` cycled sentences (+1 space each) fit in ``budget`` bytes."""
    block_cost = sum(_SENTENCE_COSTS)
    full_blocks, rest = divmod(max(budget, 0), block_cost)
    n = full_blocks * len(HAYSTACK_SENTENCES)
    for cost in _SENTENCE_COSTS:
        if cost > rest:
            break
        rest -= cost
        n += 1
    return n


def _insertion_index(sentences: list[str], depth: float) -> tuple[int, int]:
    """Sentence boundary closest to fraction ``depth`` of the haystack: ``(index, needle byte offset)``."""
    offsets = np.concatenate([[0], np.cumsum([len(s) + 1 for s in sentences])])  # boundary k -> byte offset
    k = int(np.argmin(np.abs(offsets - depth * offsets[-1])))
    return k, int(offsets[k])


def make_niah_example(
    rng_or_seed: int | np.random.Generator,
    context_length: int,
    value_kind: str = "number",
    depth_index: int | None = None,
) -> NiahExample:
    """Build one S-NIAH example (RULER ``niah_single`` rules, see the module docstring).

    ``rng_or_seed``: a seed or a ``numpy.random.Generator`` (consumed in place). ``depth_index`` picks
    ``NIAH_DEPTHS[depth_index]``; ``None`` draws it uniformly from the generator. The example satisfies
    ``context_length - 21 <= len(prompt) + len(answer) <= context_length`` (less than one sentence unused).
    """
    _check_value_kind(value_kind)
    min_length = niah_min_context_length(value_kind)
    if context_length < min_length:
        raise ValueError(
            f"context_length={context_length} is too short for an S-NIAH example with "
            f"value_kind={value_kind!r}: needle + question + answer need up to {min_length} bytes"
        )
    if depth_index is not None and not 0 <= depth_index < NUM_DEPTHS:
        raise ValueError(f"depth_index must be in [0, {NUM_DEPTHS}), got {depth_index}")
    rng = _as_rng(rng_or_seed)
    if depth_index is None:
        depth_index = int(rng.integers(NUM_DEPTHS))
    key = f"{ADJECTIVES[int(rng.integers(len(ADJECTIVES)))]}-{NOUNS[int(rng.integers(len(NOUNS)))]}"
    value = _random_value(rng, value_kind)
    depth = NIAH_DEPTHS[depth_index]

    # the n sentences plus the needle are joined by n spaces: charge one space per sentence
    sentences = _haystack_sentences(_num_sentences_fitting(context_length - _fixed_length(key, value_kind)))
    k, needle_start = _insertion_index(sentences, depth)
    needle = NEEDLE_TEMPLATE.format(kind=value_kind, key=key, value=value)
    haystack = " ".join([*sentences[:k], needle, *sentences[k:]])
    prompt = haystack + QUESTION_SEPARATOR + QUESTION_TEMPLATE.format(kind=value_kind, key=key)
    assert len(prompt) + len(value) <= context_length and prompt[needle_start:].startswith(needle)
    return NiahExample(
        prompt=prompt,
        answer=value,
        depth=depth,
        key=key,
        needle_start=needle_start,
        depth_index=depth_index,
        value_kind=value_kind,
        num_sentences=len(sentences),
    )


def niah_dataset(seed: int, n: int, context_length: int, value_kind: str = "number") -> list[NiahExample]:
    """``n`` examples from one generator seeded with ``seed``, depths spread evenly over :data:`NIAH_DEPTHS`.

    Example ``i`` uses ``depth_index = i * 40 // n``: with ``n = 40 m`` every depth appears ``m`` times; with
    fewer than 40 examples the depths are an evenly spaced subset from 0 to (nearly) 1.
    """
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    rng = np.random.default_rng(seed)
    return [make_niah_example(rng, context_length, value_kind, depth_index=i * NUM_DEPTHS // n) for i in range(n)]


def score_niah(generated: str, answer: str) -> bool:
    """Exact match of the generated value: :func:`~titans_train.tasks.scoring.leading_match`.

    Leading whitespace is ignored; the first ``len(answer)`` characters must equal ``answer`` and the next
    character (if any) must not extend the value (digit, hex letter or ``-``). So ``" 1234567."`` is correct,
    ``"1234568"``, ``"12345678"`` and ``"The number is 1234567"`` are not.
    """
    return leading_match(generated, answer)


def encode_text(text: str) -> np.ndarray:
    """UTF-8 bytes of ``text`` as a ``uint8`` token array (vocabulary 256)."""
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).copy()


def decode_tokens(tokens: np.ndarray) -> str:
    """Inverse of :func:`encode_text`; invalid UTF-8 (e.g. a model's stray bytes) becomes U+FFFD."""
    return np.asarray(tokens, dtype=np.uint8).tobytes().decode("utf-8", errors="replace")


def encode_niah_example(
    example: PromptAnswer, pad_to: int | None = None, pad_id: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``(tokens, loss_mask)`` of ``prompt + answer``; ``loss_mask[i]`` iff ``tokens[i]`` is an answer byte.

    The mask is aligned with the tokens: with the usual shifted next-token loss (logits at ``t`` predict
    ``tokens[t + 1]``) weight the loss at ``t`` by ``loss_mask[t + 1]``. ``pad_to`` right-pads with ``pad_id``
    (mask False) up to that length, which must be at least the sequence length.
    """
    tokens = encode_text(example.prompt + example.answer)
    mask = np.zeros(tokens.shape, dtype=bool)
    mask[len(example.prompt) :] = True
    if pad_to is not None:
        if pad_to < tokens.size:
            raise ValueError(f"pad_to={pad_to} is shorter than the example ({tokens.size} bytes)")
        tokens = np.concatenate([tokens, np.full(pad_to - tokens.size, pad_id, dtype=np.uint8)])
        mask = np.concatenate([mask, np.zeros(pad_to - mask.size, dtype=bool)])
    return tokens, mask


def niah_training_sequence(
    rng_or_seed: int | np.random.Generator,
    context_length: int,
    value_kind: str = "number",
    depth_index: int | None = None,
    *,
    pad: bool = True,
    pad_id: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """A training sequence: :func:`make_niah_example` encoded by :func:`encode_niah_example`.

    Returns ``tokens`` (``uint8``) and ``loss_mask`` (``bool``, True on the answer bytes only), both of length
    ``context_length`` when ``pad`` (right-padded with ``pad_id``), else of the example's own length.
    """
    example = make_niah_example(rng_or_seed, context_length, value_kind, depth_index)
    return encode_niah_example(example, pad_to=context_length if pad else None, pad_id=pad_id)


def niah_training_batch(
    seed: int, n: int, context_length: int, value_kind: str = "number", *, pad_id: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``(tokens uint8 [n, context_length], loss_mask bool [n, context_length])`` of :func:`niah_dataset`."""
    pairs = [
        encode_niah_example(ex, context_length, pad_id) for ex in niah_dataset(seed, n, context_length, value_kind)
    ]
    tokens = np.stack([t for t, _ in pairs]) if pairs else np.zeros((0, context_length), np.uint8)
    mask = np.stack([m for _, m in pairs]) if pairs else np.zeros((0, context_length), bool)
    return tokens, mask
