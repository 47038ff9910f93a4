"""BABILong-*style* task: bAbI qa1 facts scattered in a noise haystack, the question at the end.

Reference: Kuratov et al., "BABILong: Testing the Limits of LLMs with Long Context Reasoning-in-a-Haystack"
(2024), which hides the facts of bAbI (Weston et al., 2015) task qa1 *single supporting fact* in PG19 text.
Neither bAbI nor PG19 is downloaded: the facts are generated here from embedded name / verb / location lists in
bAbI qa1's own vocabulary, and the haystack is RULER's noise (:mod:`titans_train.tasks.niah`). So this is
BABILong-*style*, not BABILong: the reasoning (track where each person went last) is qa1's, the text is not.

Rules (byte level, seeded ``numpy.random.Generator``):

* **Facts.** ``num_facts`` sentences ``"{name} {verb} the {location}."`` in story order, each about a random
  person of :data:`NAMES` moving to a random location of :data:`LOCATIONS` other than where that person already
  is (bAbI's world never "moves" anyone to where they stand).
* **Placement.** The facts go to ``num_facts`` distinct depths of :data:`~titans_train.tasks.niah.NIAH_DEPTHS`
  drawn without replacement and sorted, so the story order is kept (BABILong likewise keeps the facts in
  order at random positions of the book text).
* **Question.** After a newline: ``"Question: Where is {name}? Answer: "``, ``name`` drawn among the people
  the facts mention; the answer is the location of that person's *last* fact (the supporting fact, whose
  depth is the example's ``depth``).
* **Length.** As S-NIAH: ``len(prompt) + len(answer) <= context_length`` with less than one noise sentence
  unused; :func:`babilong_min_context_length` holds the longest facts, question and answer.
* **Scoring.** :func:`score_babilong`: the location must be the first word generated (leading whitespace
  ignored, exact, not followed by a letter). Chance: ``1 / len(LOCATIONS)``, a guesser that knows the format.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from titans_train.tasks.haystack import insert_at_depths, noise_sentences
from titans_train.tasks.niah import NIAH_DEPTHS, NUM_DEPTHS, QUESTION_SEPARATOR, _as_rng

NAMES: tuple[str, ...] = ("Mary", "John", "Daniel", "Sandra")  # bAbI qa1's people
VERBS: tuple[str, ...] = ("moved to", "went to", "journeyed to", "travelled to", "went back to")
LOCATIONS: tuple[str, ...] = ("bathroom", "hallway", "kitchen", "garden", "office", "bedroom")
FACT_TEMPLATE = "{name} {verb} the {location}."
QUESTION_TEMPLATE = "Question: Where is {name}? Answer: "
DEFAULT_FACTS = 4
_LONGEST_FACT = len(FACT_TEMPLATE.format(name=max(NAMES, key=len), verb=max(VERBS, key=len), location="x" * 8))


@dataclass(frozen=True)
class BabilongExample:
    """One example; ``facts`` and ``fact_starts`` (byte offsets in ``prompt``) are in story order."""

    prompt: str  # haystack with the facts, newline, "Question: Where is {name}? Answer: "
    answer: str  # the location of the asked person's last fact
    name: str  # the asked person
    facts: tuple[str, ...]
    fact_starts: tuple[int, ...]
    support: int  # index in ``facts`` of the supporting fact (the asked person's last)
    depth: float  # depth of the supporting fact (one of NIAH_DEPTHS)
    num_sentences: int  # noise sentences in the haystack

    @property
    def text(self) -> str:
        """``prompt + answer``: the full sequence a model is trained on."""
        return self.prompt + self.answer


def _check(num_facts: int) -> None:
    if not 1 <= num_facts <= NUM_DEPTHS:
        raise ValueError(f"num_facts must be in [1, {NUM_DEPTHS}], got {num_facts}")


def babilong_min_context_length(num_facts: int = DEFAULT_FACTS) -> int:
    """Smallest accepted ``context_length``: the longest facts, question and answer, an empty haystack."""
    _check(num_facts)
    question = QUESTION_TEMPLATE.format(name=max(NAMES, key=len))
    longest_location = max(map(len, LOCATIONS))
    return num_facts * (_LONGEST_FACT + 1) - 1 + len(QUESTION_SEPARATOR) + len(question) + longest_location


def make_babilong_example(
    rng_or_seed: int | np.random.Generator, context_length: int, num_facts: int = DEFAULT_FACTS
) -> BabilongExample:
    """Build one example (see the module docstring); ``rng_or_seed`` is a seed or a generator used in place."""
    _check(num_facts)
    shortest = babilong_min_context_length(num_facts)
    if context_length < shortest:
        raise ValueError(
            f"context_length={context_length} is too short for a BABILong-style example with {num_facts} facts: "
            f"facts + question + answer need up to {shortest} bytes"
        )
    rng = _as_rng(rng_or_seed)
    where: dict[str, str] = {}
    facts, actors = [], []
    for _ in range(num_facts):
        name = NAMES[int(rng.integers(len(NAMES)))]
        choices = [loc for loc in LOCATIONS if loc != where.get(name)]
        where[name] = choices[int(rng.integers(len(choices)))]
        verb = VERBS[int(rng.integers(len(VERBS)))]
        facts.append(FACT_TEMPLATE.format(name=name, verb=verb, location=where[name]))
        actors.append(name)
    mentioned = sorted(set(actors), key=actors.index)
    name = mentioned[int(rng.integers(len(mentioned)))]
    support = max(i for i, a in enumerate(actors) if a == name)
    depth_indices = sorted(int(d) for d in rng.choice(NUM_DEPTHS, size=num_facts, replace=False))

    question = QUESTION_TEMPLATE.format(name=name)
    answer = where[name]
    fixed = sum(len(f) + 1 for f in facts) - 1 + len(QUESTION_SEPARATOR) + len(question) + len(answer)
    sentences = noise_sentences(context_length - fixed)
    pieces = [(NIAH_DEPTHS[d], f) for d, f in zip(depth_indices, facts, strict=True)]
    haystack, starts = insert_at_depths(sentences, pieces)
    prompt = haystack + QUESTION_SEPARATOR + question
    assert len(prompt) + len(answer) <= context_length
    return BabilongExample(
        prompt=prompt,
        answer=answer,
        name=name,
        facts=tuple(facts),
        fact_starts=tuple(starts),
        support=support,
        depth=NIAH_DEPTHS[depth_indices[support]],
        num_sentences=len(sentences),
    )


def babilong_dataset(seed: int, n: int, context_length: int, num_facts: int = DEFAULT_FACTS) -> list[BabilongExample]:
    """``n`` examples from one generator seeded with ``seed``."""
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    rng = np.random.default_rng(seed)
    return [make_babilong_example(rng, context_length, num_facts) for _ in range(n)]


def score_babilong(generated: str, answer: str) -> bool:
    """The location is the first word generated: leading whitespace dropped, then ``answer`` exactly, then
    anything but a letter (``" kitchen."`` is right; ``"kitchens"``, ``"the kitchen"`` are not)."""
    answer = answer.strip()
    text = generated.lstrip()
    if not answer or not text.startswith(answer):
        return False
    rest = text[len(answer) :]
    return not rest or not rest[0].isalpha()


def babilong_chance_level() -> float:
    """A guesser that knows the format and picks a location uniformly: ``1 / len(LOCATIONS)``."""
    return 1.0 / len(LOCATIONS)
