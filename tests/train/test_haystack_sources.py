"""The haystack tasks as data sources (``niah_multikey``, ``niah_multivalue``, ``babilong``): targets on the
answer bytes and the byte that ends them only, determinism per (seed, split, index), lengths, config errors."""

from __future__ import annotations

import numpy as np
import pytest
from titans_core import SpecError, get_registry, make_config
from titans_train.data import LabelledTask
from titans_train.tasks.babilong import babilong_min_context_length
from titans_train.tasks.niah import MAX_SENTENCE_LENGTH
from titans_train.tasks.niah_multi import multi_min_context_length
from titans_train.tasks.scoring import IGNORE_INDEX

SHORTEST = {
    "niah_multikey": multi_min_context_length("niah_multikey", 3),
    "niah_multivalue": multi_min_context_length("niah_multivalue", 3),
    "babilong": babilong_min_context_length(3),
}
OPTIONS = {"niah_multikey": {"num_keys": 3}, "niah_multivalue": {"num_values": 3}, "babilong": {"num_facts": 3}}
ENDINGS = {
    "niah_multikey": " mentioned in the provided text is: ",
    "niah_multivalue": " mentioned in the provided text are: ",
    "babilong": "? Answer: ",
}


def _task(name: str, **options) -> LabelledTask:
    task = get_registry().build(make_config("data_source", name, **options)).load()
    assert isinstance(task, LabelledTask)
    return task


def _text(tokens: np.ndarray) -> str:
    return np.asarray(tokens, dtype=np.uint8).tobytes().decode("ascii")


@pytest.mark.parametrize("name", list(SHORTEST))
def test_targets_are_the_answer_bytes_and_the_end(name: str) -> None:
    assert name in get_registry().names("data_source")
    T = SHORTEST[name] + 80
    task = _task(name, num_train=8, num_val=8, **OPTIONS[name])
    assert task.byte_level and task.vocab_size == 256
    for index in range(4):
        inputs, targets = task.example("train", index, T)
        scored = np.flatnonzero((targets != IGNORE_INDEX) & (targets != 0))
        assert np.array_equal(scored, np.arange(scored[0], scored[-1] + 1))  # one contiguous answer
        length = int(scored[-1]) + 2  # text length
        assert T + 1 - MAX_SENTENCE_LENGTH <= length <= T + 1
        prompt, answer = _text(inputs[: scored[0] + 1]), _text(targets[scored])
        assert prompt.endswith(ENDINGS[name])
        labelled = np.flatnonzero(targets != IGNORE_INDEX)
        assert set(labelled) - set(scored) <= {length - 1}  # besides the answer: the end-of-answer byte only
        if name == "niah_multivalue":
            values = answer.split(", ")
            assert len(values) == 3 and all(prompt.count(f"is: {v}.") == 1 for v in values)
        elif name == "niah_multikey":
            assert prompt.count(f"is: {answer}.") == 1 and prompt.count("One of the special magic") == 3
        else:
            assert answer.isalpha() and prompt.count(" the ") >= 3


@pytest.mark.parametrize("name", list(SHORTEST))
def test_examples_are_deterministic_and_split(name: str) -> None:
    T = SHORTEST[name] + 40
    a, b = _task(name, **OPTIONS[name]), _task(name, **OPTIONS[name])
    assert np.array_equal(a.example("train", 3, T), b.example("train", 3, T))
    assert not np.array_equal(a.example("train", 3, T), a.example("val", 3, T))
    assert not np.array_equal(a.example("train", 3, T), a.example("train", 4, T))
    other = _task(name, seed=1, **OPTIONS[name])
    assert not np.array_equal(a.example("train", 3, T), other.example("train", 3, T))


@pytest.mark.parametrize("name", list(SHORTEST))
def test_min_length_and_check_length(name: str) -> None:
    shortest = SHORTEST[name]
    task = _task(name, min_length=shortest, num_train=30, **OPTIONS[name])
    T = shortest + 300
    lengths = {int(np.flatnonzero(task.example("train", i, T)[1] == 0)[0]) for i in range(12)}
    assert len(lengths) > 3 and min(lengths) < T - 100  # lengths vary below seq_len
    assert task.check_length(shortest - 1) is None
    assert f"data.seq_len {shortest - 2} is too short for {name}" in task.check_length(shortest - 2)
    with pytest.raises((SpecError, ValueError), match=f"min_length {shortest - 1} is shorter than an example"):
        make_config("data_source", name, min_length=shortest - 1, **OPTIONS[name])


def test_config_errors() -> None:
    with pytest.raises((SpecError, ValueError), match="value_kind must be one of"):
        make_config("data_source", "niah_multikey", value_kind="word")
    with pytest.raises((SpecError, ValueError)):
        make_config("data_source", "niah_multivalue", num_values=1)
    with pytest.raises((SpecError, ValueError)):
        make_config("data_source", "babilong", num_facts=41)
