"""S-NIAH generator (RULER single-needle rules): layout, depth, length, determinism, scoring, encoding."""

from __future__ import annotations

import re
import uuid

import numpy as np
import pytest
from titans_train.tasks import niah
from titans_train.tasks.niah import (
    ADJECTIVES,
    HAYSTACK_SENTENCES,
    MAX_SENTENCE_LENGTH,
    NIAH_DEPTHS,
    NOUNS,
    decode_tokens,
    encode_text,
    make_niah_example,
    niah_dataset,
    niah_min_context_length,
    niah_training_batch,
    niah_training_sequence,
    score_niah,
)

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
CASES = [(seed, length, kind) for seed in range(3) for length in (400, 1000, 4096) for kind in ("number", "uuid")]


def _haystack(ex):
    """The haystack with the needle (everything before the question)."""
    return ex.prompt.split("\n")[0]


def test_depths_are_40_evenly_spaced_in_unit_interval():
    assert len(NIAH_DEPTHS) == 40
    assert NIAH_DEPTHS[0] == 0.0 and NIAH_DEPTHS[-1] == 1.0
    np.testing.assert_allclose(np.diff(NIAH_DEPTHS), 1 / 39, rtol=1e-12)


@pytest.mark.parametrize("seed,length,kind", CASES)
def test_needle_present_exactly_once_and_value_once(seed, length, kind):
    ex = make_niah_example(seed, length, kind)
    assert ex.prompt.count(ex.needle) == 1
    assert ex.prompt.count(ex.answer) == 1  # the value only occurs in the needle
    assert ex.prompt.count("special magic") == 3  # needle + question twice
    assert ex.prompt[ex.needle_start :].startswith(ex.needle)
    assert ex.needle == f"One of the special magic {kind}s for {ex.key} is: {ex.answer}."


@pytest.mark.parametrize("seed,length,kind", CASES)
def test_length_fits_and_is_within_one_sentence_of_budget(seed, length, kind):
    ex = make_niah_example(seed, length, kind)
    total = len(ex.text.encode("utf-8"))
    assert total == len(ex.text)  # ASCII: bytes == characters
    assert length - MAX_SENTENCE_LENGTH <= total <= length
    assert MAX_SENTENCE_LENGTH == 21


def test_question_layout_and_haystack_sentences():
    ex = make_niah_example(7, 2000, depth_index=13)
    question = (
        f"What is the special magic number for {ex.key} mentioned in the provided text? "
        f"The special magic number for {ex.key} mentioned in the provided text is: "
    )
    assert ex.prompt.endswith("\n" + question)
    haystack = _haystack(ex).replace(ex.needle + " ", "").replace(" " + ex.needle, "")
    assert haystack.startswith(" ".join(HAYSTACK_SENTENCES))
    sentences = re.findall(r"[^.]+\.", haystack)
    assert [s.strip() for s in sentences] == [HAYSTACK_SENTENCES[i % 5] for i in range(len(sentences))]
    assert len(sentences) == ex.num_sentences


@pytest.mark.parametrize("kind", ["number", "uuid"])
@pytest.mark.parametrize("depth_index", range(40))
def test_needle_at_chosen_depth_within_half_a_sentence(depth_index, kind):
    ex = make_niah_example(depth_index, 3000, kind, depth_index=depth_index)
    assert ex.depth == NIAH_DEPTHS[depth_index] and ex.depth_index == depth_index
    before = ex.prompt[: ex.needle_start]
    assert before == "" or before.endswith(". ")  # a sentence boundary
    haystack_bytes = len(_haystack(ex)) - len(ex.needle)  # sentences + spaces (one per sentence)
    tolerance = (MAX_SENTENCE_LENGTH + 1) / 2 / haystack_bytes
    assert abs(ex.needle_start / haystack_bytes - ex.depth) <= tolerance + 1e-12
    if depth_index == 0:
        assert ex.needle_start == 0
    if depth_index == 39:
        assert ex.prompt[ex.needle_start + len(ex.needle) :].startswith("\nWhat is")


def test_deterministic_for_seed_and_different_across_seeds():
    assert make_niah_example(5, 1500) == make_niah_example(5, 1500)
    assert make_niah_example(5, 1500, "uuid") == make_niah_example(5, 1500, "uuid")
    assert niah_dataset(3, 12, 800) == niah_dataset(3, 12, 800)
    prompts = {make_niah_example(s, 1500, depth_index=10).prompt for s in range(20)}
    assert len(prompts) == 20
    assert niah_dataset(3, 12, 800) != niah_dataset(4, 12, 800)


def test_generator_is_consumed_in_place():
    rng = np.random.default_rng(0)
    a, b = make_niah_example(rng, 800), make_niah_example(rng, 800)
    assert a != b
    rng2 = np.random.default_rng(0)
    assert make_niah_example(rng2, 800) == a


def test_values_keys_and_uuid_format(monkeypatch):
    monkeypatch.setattr(uuid, "uuid4", lambda: pytest.fail("uuid4's global randomness must not be used"))
    for seed in range(30):
        num = make_niah_example(seed, 600, "number")
        assert re.fullmatch(r"[1-9]\d{6}", num.answer)
        adjective, noun = num.key.split("-")
        assert adjective in ADJECTIVES and noun in NOUNS
        uid = make_niah_example(seed, 600, "uuid")
        assert UUID_RE.fullmatch(uid.answer)
        assert uuid.UUID(uid.answer).version == 4 and str(uuid.UUID(uid.answer)) == uid.answer
    assert len(ADJECTIVES) + len(NOUNS) >= 100


def test_dataset_iterates_depths_evenly():
    ds = niah_dataset(0, 80, 700)
    assert [ex.depth_index for ex in ds] == [i // 2 for i in range(80)]
    assert [ex.depth_index for ex in niah_dataset(0, 40, 700)] == list(range(40))
    assert [ex.depth_index for ex in niah_dataset(0, 10, 700)] == list(range(0, 40, 4))
    assert niah_dataset(0, 0, 700) == []


def test_too_short_context_error_message_is_exact():
    assert niah_min_context_length("number") == 253
    assert niah_min_context_length("uuid") == 305
    msg = (
        "context_length=252 is too short for an S-NIAH example with value_kind='number': "
        "needle + question + answer need up to 253 bytes"
    )
    with pytest.raises(ValueError) as info:
        make_niah_example(0, 252)
    assert str(info.value) == msg
    with pytest.raises(ValueError, match=re.escape("context_length=304 is too short")):
        make_niah_example(0, 304, "uuid")


@pytest.mark.parametrize("kind", ["number", "uuid"])
def test_min_context_length_always_fits(kind):
    n = niah_min_context_length(kind)
    for seed in range(50):
        ex = make_niah_example(seed, n, kind)
        assert len(ex.text) <= n and ex.prompt.count(ex.needle) == 1


def test_bad_arguments():
    with pytest.raises(ValueError, match="value_kind must be one of"):
        make_niah_example(0, 1000, "word")
    with pytest.raises(ValueError, match=r"depth_index must be in \[0, 40\)"):
        make_niah_example(0, 1000, depth_index=40)
    with pytest.raises(ValueError, match="n must be non-negative"):
        niah_dataset(0, -1, 1000)


def test_score_niah_exact_match_semantics():
    answer = "4821937"
    assert score_niah("4821937", answer)
    assert score_niah(" 4821937", answer)  # leading whitespace ignored
    assert score_niah("4821937.", answer)  # trailing punctuation / text allowed
    assert score_niah("4821937\nWhat else", answer)
    assert score_niah("4821937 is the number", answer)
    assert not score_niah("4821938", answer)  # wrong digit
    assert not score_niah("482193", answer)  # truncated
    assert not score_niah("48219370", answer)  # runs on into a longer number
    assert not score_niah("The number is 4821937", answer)  # the value must come first
    assert not score_niah("", answer)
    uid = "66a852c1-bb96-41f3-8d18-ec08f6a4e724"
    assert score_niah(uid + ".", uid)
    assert not score_niah(uid.upper(), uid)  # case-sensitive
    assert not score_niah(uid + "f", uid)


def test_training_sequence_masks_only_the_answer():
    ex = make_niah_example(11, 1024, depth_index=5)
    tokens, mask = niah_training_sequence(11, 1024, depth_index=5)
    assert tokens.dtype == np.uint8 and mask.dtype == np.bool_
    assert tokens.shape == mask.shape == (1024,)
    assert decode_tokens(tokens[: len(ex.text)]) == ex.text
    assert decode_tokens(tokens[mask]) == ex.answer
    assert mask.sum() == len(ex.answer)
    assert np.flatnonzero(mask).tolist() == list(range(len(ex.prompt), len(ex.text)))
    assert not tokens[len(ex.text) :].any()  # zero padding, unmasked
    tokens, mask = niah_training_sequence(11, 1024, depth_index=5, pad=False)
    assert tokens.shape == (len(ex.text),) and mask[-len(ex.answer) :].all()


def test_training_batch_and_byte_codec():
    tokens, mask = niah_training_batch(2, 6, 512, "uuid")
    assert tokens.shape == mask.shape == (6, 512)
    for row, m, ex in zip(tokens, mask, niah_dataset(2, 6, 512, "uuid"), strict=True):
        assert decode_tokens(row[m]) == ex.answer
    assert decode_tokens(encode_text("héllo")) == "héllo"
    assert encode_text("AB").tolist() == [65, 66]
    with pytest.raises(ValueError, match="pad_to=10 is shorter"):
        niah.encode_niah_example(make_niah_example(0, 400), pad_to=10)
