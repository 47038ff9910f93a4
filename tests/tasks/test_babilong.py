"""BABILong-style qa1 generator: facts in story order in the noise haystack, the asked person's last location
as the answer, exact lengths, determinism and the first-word scoring rule."""

from __future__ import annotations

import re

import numpy as np
import pytest
from titans_train.tasks.babilong import (
    LOCATIONS,
    NAMES,
    babilong_chance_level,
    babilong_dataset,
    babilong_min_context_length,
    make_babilong_example,
    score_babilong,
)
from titans_train.tasks.niah import MAX_SENTENCE_LENGTH, NIAH_DEPTHS

FACT_RE = re.compile(r"(Mary|John|Daniel|Sandra) (?:moved|went|journeyed|travelled|went back) to the (\w+)\.")


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("length", "num_facts"), [(400, 2), (1000, 4), (4096, 10)])
def test_facts_question_answer_and_length(seed, length, num_facts) -> None:
    ex = make_babilong_example(seed, length, num_facts)
    assert length - MAX_SENTENCE_LENGTH <= len(ex.text) <= length
    haystack, question = ex.prompt.split("\n")
    assert question == f"Question: Where is {ex.name}? Answer: " and ex.name in NAMES
    found = FACT_RE.findall(haystack)
    assert [m.group(0) for m in FACT_RE.finditer(haystack)] == list(ex.facts)  # each once, in story order
    assert list(ex.fact_starts) == sorted(ex.fact_starts)
    assert all(ex.prompt[s:].startswith(f) for s, f in zip(ex.fact_starts, ex.facts, strict=True))
    # the answer is where the asked person went last; nobody moves to where they already are
    last = {}
    for name, location in found:
        assert location in LOCATIONS and last.get(name) != location
        last[name] = location
    assert ex.answer == last[ex.name]
    assert found[ex.support][0] == ex.name and all(n != ex.name for n, _ in found[ex.support + 1 :])
    assert ex.depth in NIAH_DEPTHS


def test_deterministic_from_the_seed() -> None:
    assert make_babilong_example(3, 800) == make_babilong_example(3, 800)
    assert make_babilong_example(3, 800) != make_babilong_example(4, 800)
    assert babilong_dataset(1, 5, 600) == babilong_dataset(1, 5, 600)
    rng = np.random.default_rng(0)
    assert make_babilong_example(rng, 600) != make_babilong_example(rng, 600)
    answers = {e.answer for e in babilong_dataset(0, 60, 500)}
    assert answers == set(LOCATIONS)  # every location is asked about


def test_min_context_length_fits_and_one_less_is_rejected() -> None:
    shortest = babilong_min_context_length(5)
    assert all(len(make_babilong_example(s, shortest, 5).text) <= shortest for s in range(30))
    with pytest.raises(ValueError, match=rf"context_length={shortest - 1} is too short .* with 5 facts"):
        make_babilong_example(0, shortest - 1, 5)
    with pytest.raises(ValueError, match=r"num_facts must be in \[1, 40\], got 0"):
        make_babilong_example(0, 2000, 0)


def test_scoring_is_the_first_word() -> None:
    assert score_babilong(" kitchen.", "kitchen") and score_babilong("kitchen", "kitchen")
    assert score_babilong("kitchen\nQuestion", "kitchen")
    assert not score_babilong("kitchens", "kitchen") and not score_babilong("the kitchen", "kitchen")
    assert not score_babilong("garden", "kitchen") and not score_babilong("", "kitchen")
    assert babilong_chance_level() == pytest.approx(1 / 6)
