"""Multi-key / multi-value NIAH generators (RULER ``niah_multikey_1`` / ``niah_multivalue``) and the shared
haystack insertion: layout, distinct needles, depths, exact lengths, determinism, scoring rules."""

from __future__ import annotations

import re

import numpy as np
import pytest
from titans_train.tasks.haystack import insert_at_depths, noise_sentences
from titans_train.tasks.niah import HAYSTACK_SENTENCES, MAX_SENTENCE_LENGTH, NIAH_DEPTHS
from titans_train.tasks.niah_multi import (
    make_multi_example,
    multi_dataset,
    multi_min_context_length,
    score_multikey,
    score_multivalue,
    score_multivalue_all,
)

TASKS = ("niah_multikey", "niah_multivalue")
CASES = [(s, n, t, k) for s in range(3) for n in (800, 1500, 4096) for t in TASKS for k in ("number", "uuid")]
NEEDLE_RE = re.compile(r"One of the special magic (?:number|uuid)s for (\S+) is: (\S+)\.")


def _haystack(ex) -> str:
    return ex.prompt.split("\n")[0]


def test_insert_at_depths_keeps_sentences_and_reports_offsets() -> None:
    sentences = noise_sentences(200)
    text, starts = insert_at_depths(sentences, [(1.0, "B."), (0.0, "A."), (0.5, "M."), (0.5, "N.")])
    assert text.startswith("A. ") and text.endswith(" B.")
    assert [text[s : s + 2] for s in starts] == ["B.", "A.", "M.", "N."]
    assert starts[2] < starts[3]  # same boundary: the order of the pieces
    rest = text
    for piece in ("A. ", "M. ", "N. ", " B."):
        rest = rest.replace(piece, "", 1)
    assert rest == " ".join(sentences)
    assert insert_at_depths([], [(0.3, "X.")]) == ("X.", [0])


@pytest.mark.parametrize(("seed", "length", "task", "kind"), CASES)
def test_length_fits_within_one_sentence_and_needles_are_distinct(seed, length, task, kind) -> None:
    ex = make_multi_example(seed, length, task, 4, kind)
    assert length - MAX_SENTENCE_LENGTH <= len(ex.text) <= length  # less than one sentence unused
    needles = NEEDLE_RE.findall(_haystack(ex))
    assert len(needles) == 4 and [f"One of the special magic {kind}s for {k} is: {v}." for k, v in needles] == list(
        ex.needles
    )
    assert [ex.prompt[s:].startswith(n) for s, n in zip(ex.needle_starts, ex.needles, strict=True)] == [True] * 4
    keys, values = [k for k, _ in needles], [v for _, v in needles]
    assert len(set(values)) == 4 and all(ex.prompt.count(v) == 1 for v in values)  # each value once
    noise = _haystack(ex)
    for needle in ex.needles:  # each needle with its joining space
        noise = noise.replace(needle + " ", "", 1) if needle + " " in noise else noise.replace(" " + needle, "", 1)
    assert noise == " ".join(HAYSTACK_SENTENCES[i % 5] for i in range(ex.num_sentences))
    if task == "niah_multikey":
        assert len(set(keys)) == 4 and ex.key in keys and ex.values == (ex.answer,)
        assert (ex.key, ex.answer) in needles  # the asked key's value; the others are distractors
        assert ex.prompt.endswith(f"The special magic {kind} for {ex.key} mentioned in the provided text is: ")
    else:
        assert set(keys) == {ex.key} and ex.answer == ", ".join(values) and ex.values == tuple(values)
        assert ex.prompt.endswith(f"The special magic {kind}s for {ex.key} mentioned in the provided text are: ")
        assert ex.prompt.split("\n")[1].startswith(f"What are all the special magic {kind}s for {ex.key} ")


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("depth_index", [0, 7, 20, 39])
def test_the_asked_needle_is_at_the_chosen_depth(task, depth_index) -> None:
    ex = make_multi_example(depth_index, 3000, task, 4, depth_index=depth_index)
    assert ex.depth == NIAH_DEPTHS[depth_index] and ex.depth_index == depth_index
    asked = (
        next(i for i, n in enumerate(ex.needles) if n.endswith(f"is: {ex.values[0]}."))
        if task == ("niah_multikey")
        else None
    )
    haystack_bytes = len(_haystack(ex)) - sum(len(n) + 1 for n in ex.needles)
    if asked is not None:
        start = ex.needle_starts[asked] - sum(len(n) + 1 for n in ex.needles[:asked])  # noise bytes before it
        assert abs(start / haystack_bytes - ex.depth) <= (MAX_SENTENCE_LENGTH + 1) / 2 / haystack_bytes + 1e-12
    if depth_index == 0:
        assert ex.needle_starts[0] == 0


def test_deterministic_from_the_seed_and_different_across_seeds() -> None:
    for task in TASKS:
        assert make_multi_example(5, 1500, task) == make_multi_example(5, 1500, task)
        assert make_multi_example(5, 1500, task) != make_multi_example(6, 1500, task)
        assert multi_dataset(3, 6, 900, task) == multi_dataset(3, 6, 900, task)
    rng = np.random.default_rng(1)
    first, second = make_multi_example(rng, 800), make_multi_example(rng, 800)
    assert first != second  # the generator is consumed in place
    assert [e.depth_index for e in multi_dataset(0, 8, 900)] == [i * 40 // 8 for i in range(8)]


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("kind", ["number", "uuid"])
def test_min_context_length_always_fits_and_one_less_is_rejected(task, kind) -> None:
    shortest = multi_min_context_length(task, 3, kind)
    for seed in range(20):
        assert len(make_multi_example(seed, shortest, task, 3, kind).text) <= shortest
    with pytest.raises(ValueError, match=rf"context_length={shortest - 1} is too short for {task} with 3 needles"):
        make_multi_example(0, shortest - 1, task, 3, kind)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="task must be one of"):
        make_multi_example(0, 2000, "niah_single")
    with pytest.raises(ValueError, match=r"number of needles must be in \[2, 40\], got 1"):
        make_multi_example(0, 2000, "niah_multikey", 1)
    with pytest.raises(ValueError, match="value_kind must be one of"):
        make_multi_example(0, 2000, "niah_multikey", 4, "word")
    with pytest.raises(ValueError, match=r"depth_index must be in \[0, 40\)"):
        make_multi_example(0, 2000, depth_index=40)


def test_scoring_rules() -> None:
    # multikey: the S-NIAH rule (the value first, not run on)
    assert score_multikey(" 1234567.", "1234567") and not score_multikey("12345678", "1234567")
    assert not score_multikey("7654321, 1234567", "1234567")  # a distractor first is wrong
    # multivalue: RULER's string_match_all, the fraction present in any order
    values = ("1111111", "2222222", "3333333", "4444444")
    assert score_multivalue("4444444, 2222222, 1111111, 3333333", values) == 1.0
    assert score_multivalue("1111111, 2222222, 9999999", values) == 0.5
    assert score_multivalue("nothing", values) == 0.0
    assert score_multivalue_all("1111111 2222222 3333333 4444444", values)
    assert not score_multivalue_all("1111111 2222222 3333333", values)
    assert score_multivalue("A0B-x", ("a0b",)) == 1.0  # case-insensitive, as RULER
    with pytest.raises(ValueError, match="no values"):
        score_multivalue("x", ())
