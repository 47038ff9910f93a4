"""Scoring of the haystack tasks in ``titans-eval`` (``score_haystack_examples``) with scripted generations:
an oracle scores 100 %, a distractor / partial / wrong answer exactly what the task's rule says."""

from __future__ import annotations

import numpy as np
import pytest
from titans_train.evaluate.scorers import haystack_eval_examples, score_haystack_examples
from titans_train.tasks.niah import encode_text


class Oracle:
    """``argmax`` that continues each prompt with ``reply(example)`` then ``"."``."""

    def __init__(self, examples, reply):
        self.texts = [(encode_text(e.prompt), encode_text(reply(e) + ". . . . . . .")) for e in examples]

    def argmax(self, tokens_NxT: np.ndarray) -> np.ndarray:
        out = np.zeros_like(tokens_NxT)
        for i, row in enumerate(tokens_NxT):
            prompt, reply = next((p, r) for p, r in self.texts if np.array_equal(row[: p.size], p))
            for j in range(min(reply.size, row.size - prompt.size + 1)):
                out[i, prompt.size - 1 + j] = reply[j]
        return out


def _score(task, reply, n=4, context=700):
    examples = haystack_eval_examples(task, 0, context, n)
    return score_haystack_examples(Oracle(examples, reply), task, examples)


@pytest.mark.parametrize("task", ["niah_multikey", "niah_multivalue", "babilong"])
def test_an_oracle_scores_100_percent(task: str) -> None:
    result = _score(task, lambda e: e.answer)
    assert result["accuracy"] == 1.0 and result["stderr"] == 0.0 and result["n"] == 4
    assert result["samples"][0]["generated"].startswith(result["samples"][0]["answer"] + ".")


def test_multikey_distractor_and_multivalue_partial_and_babilong_wrong() -> None:
    distractor = lambda e: next(n.split("is: ")[1][:-1] for n in e.needles if e.answer not in n)  # noqa: E731
    assert _score("niah_multikey", distractor)["accuracy"] == 0.0
    half = _score("niah_multivalue", lambda e: ", ".join(e.values[:2]))  # RULER: 2 of 4 values = 0.5
    assert half["accuracy"] == 0.5 and half["all_accuracy"] == 0.0
    reordered = _score("niah_multivalue", lambda e: ", ".join(reversed(e.values)))
    assert reordered["accuracy"] == 1.0 and reordered["all_accuracy"] == 1.0  # any order
    wrong = _score("babilong", lambda e: "garden" if e.answer != "garden" else "office")
    assert wrong["accuracy"] == 0.0 and wrong["chance"] == pytest.approx(1 / 6)
    mixed = _score("babilong", lambda e: e.answer + "s")  # runs on into a longer word
    assert mixed["accuracy"] == 0.0
