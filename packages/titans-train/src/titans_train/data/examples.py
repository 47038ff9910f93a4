"""Labelled examples: what a synthetic-task data source produces instead of a token stream.

A stream (:class:`~titans_train.data.corpus.Corpus`) is cut into windows whose every next token is a target. A
task (MQAR, S-NIAH) instead has *examples*: fixed-length sequences whose targets are only some positions (the
value after an MQAR query, the answer bytes of S-NIAH); every other target is ``IGNORE_INDEX`` (``-100``) and
takes no part in the loss or the accuracy.

An example of length ``T`` is an int32 array ``[2, T]``: row 0 the model's inputs, row 1 the target of each
input position (``targets[t]`` is what the output at ``t`` should predict, already shifted). Batches of
examples
have the shape ``(grad_accum, micro_batch, 2, T)``; batches of stream windows ``(grad_accum, micro_batch,
T + 1)`` -- the training step tells them apart by rank (see :mod:`titans_train.steps`).

A data source returns :class:`LabelledTask` from ``load()``; the task is asked for examples of the spec's
``data.seq_len`` (:meth:`LabelledTask.example`). Examples are generated on demand from ``(seed, split,
index)``, so the training set is a pure function of the spec (nothing is stored, resuming is exact) and the
validation split never shares a generator stream with the training split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from titans_train.tasks.scoring import IGNORE_INDEX

Split = Literal["train", "val"]
#: Stream tags: numpy treats seed lists that differ only by trailing zeros alike, so no tag is 0, and the
#: evaluation streams of :mod:`titans_train.evaluate.scorers` use tags of their own.
STREAM_TAGS = {
    "train": 1,
    "val": 2,
    "eval_mqar": 3,
    "eval_niah": 4,
    "eval_niah_multikey": 5,
    "eval_niah_multivalue": 6,
    "eval_babilong": 7,
}


def example_rng(seed: int, split: Split, index: int) -> np.random.Generator:
    """The generator of example ``index`` of ``split``: independent of every other example and split."""
    return np.random.default_rng([int(seed), STREAM_TAGS[split], int(index)])


@runtime_checkable
class LabelledTask(Protocol):
    """A synthetic task as a data source result: ``num_train`` / ``num_val`` examples of any length."""

    byte_level: bool
    description: str
    num_train: int
    num_val: int
    vocab_size: int

    def check_length(self, seq_len: int) -> str | None:
        """A message when examples of ``seq_len`` inputs cannot be built (else None)."""

    def example(self, split: Split, index: int, seq_len: int) -> np.ndarray:
        """Example ``index`` of ``split``: int32 ``[2, seq_len]`` (inputs, targets with -100 = ignored)."""


@dataclass(frozen=True)
class TaskSplits:
    """The training and validation examples of a :class:`LabelledTask` at one sequence length."""

    task: LabelledTask
    seq_len: int

    @property
    def byte_level(self) -> bool:
        return self.task.byte_level

    @property
    def description(self) -> str:
        return self.task.description

    @property
    def train(self) -> ExampleSet:
        return ExampleSet(self.task, "train", self.seq_len, self.task.num_train)

    @property
    def val(self) -> ExampleSet:
        return ExampleSet(self.task, "val", self.seq_len, self.task.num_val)


class ExampleSet:
    """Random access to the examples of one split (a grain data source, like ``Windows``)."""

    def __init__(self, task: LabelledTask, split: Split, seq_len: int, count: int):
        self.task, self.split, self.seq_len, self.count = task, split, seq_len, count
        self.row_shape = (2, seq_len)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> np.ndarray:
        return np.asarray(self.task.example(self.split, int(index), self.seq_len), dtype=np.int32)

    def gather(self, indices: np.ndarray) -> np.ndarray:
        """Examples at ``indices`` (any shape S) as an int32 array S × 2 × T."""
        flat = [self[i] for i in np.asarray(indices).reshape(-1)]
        return np.stack(flat).reshape(*np.shape(indices), *self.row_shape)


def shift_with_mask(tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``[2, T]`` from ``T + 1`` tokens: inputs ``tokens[:-1]``, targets ``tokens[1:]`` where ``mask[1:]``."""
    targets = np.where(mask[1:], tokens[1:], IGNORE_INDEX)
    return np.stack([tokens[:-1], targets]).astype(np.int32)
