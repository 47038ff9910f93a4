"""From a :class:`Corpus` to batches: validation split, fixed-length windows, deterministic shuffling
(grain), and
the slice of every global batch that this process loads.

Decisions:

- **Validation split**: the *tail* of the token stream, ``floor(val_fraction · n)`` tokens (for the stdlib
  that is
  the alphabetically last modules, so nothing of them is trained on), unless the source brings its own split
  (``Corpus.val_tokens``, e.g. a nanoGPT ``val.bin``).
- **Windows**: window *i* is ``tokens[i·T : i·T + T + 1]`` (T = seq_len), inputs ``[:-1]``, targets ``[1:]``;
  consecutive windows share one token so every token is a target exactly once per epoch. A split shorter than
  one
  window (T + 1 tokens) is a :class:`~titans_train.errors.DataError`.
- **Order**: ``grain.MapDataset.range(n).shuffle(seed).repeat()`` — a global permutation per epoch, different
  in
  every epoch, a pure function of ``trainer.seed``; then batches of ``batch_size`` windows. The position in
  this
  stream is the grain iterator state (``{"next_index": k}``) saved with every checkpoint.
- **Many processes**: every process walks the same global stream of batches and loads only its rows
  ``[lo, hi)`` of each micro-batch: the rows its devices hold under the batch sharding (see
  :func:`titans_train.mesh.local_rows`). The union over processes is the single-process batch, so losses do
  not
  depend on the number of processes.
- **Synthetic tasks** (``mqar``, ``niah``): the source returns a
  :class:`~titans_train.data.examples.LabelledTask`; its examples (int32 ``[2, T]``: inputs, targets with
  -100)
  take the place of the windows everywhere below, and ``val_fraction`` does not apply.
- **Evaluation**: the first ``eval_batches · batch_size`` validation windows in order (indices wrap around
  when the
  split has fewer windows than one batch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grain
import numpy as np

from titans_train.data.corpus import Corpus
from titans_train.data.examples import ExampleSet, LabelledTask, TaskSplits
from titans_train.errors import DataError


@dataclass(frozen=True)
class BatchLayout:
    """A global batch of ``batch_size`` windows in ``grad_accum`` micro-batches; this process loads rows
    ``[row_lo, row_hi)`` of every micro-batch."""

    batch_size: int
    grad_accum: int
    row_lo: int
    row_hi: int

    @property
    def micro_batch(self) -> int:
        return self.batch_size // self.grad_accum


@dataclass(frozen=True)
class Splits:
    """Training and validation token streams (``val`` is None when nothing is held out)."""

    train: np.ndarray
    val: np.ndarray | None
    byte_level: bool
    description: str


def split_corpus(corpus: Corpus, *, seq_len: int, val_fraction: float, vocab_size: int) -> Splits:
    """Hold out the validation split and check that both splits hold a window and fit the vocabulary."""
    tokens, val = corpus.tokens, corpus.val_tokens
    if val is None and val_fraction > 0:
        cut = int(tokens.size * (1.0 - val_fraction))
        tokens, val = tokens[:cut], tokens[cut:]
    window = seq_len + 1
    where = corpus.single_file or corpus.description
    for name, part in (("training", tokens), ("validation", val)):
        if part is not None and part.size < window:
            held = f" (with val_fraction {val_fraction})" if corpus.val_tokens is None and val_fraction > 0 else ""
            raise DataError(
                f"data: {where}: corpus too short: its {name} split has {part.size:,} tokens{held}, "
                f"but one window needs data.seq_len + 1 = {window:,}"
            )
    for part, file in ((tokens, corpus.single_file), (val, None)):
        if part is None or not part.size:
            continue
        for bad in (int(part.min()), int(part.max())):  # negative ids would also collide with the ignore −100
            if not 0 <= bad < vocab_size:
                raise DataError(
                    f"data: {file or corpus.description}: token id {bad} is outside the model's "
                    f"vocabulary (model.vocab_size = {vocab_size})"
                )
    return Splits(tokens, val, corpus.byte_level, corpus.description)


def split_task(task: LabelledTask, *, seq_len: int, vocab_size: int) -> TaskSplits:
    """The examples of a synthetic task at ``seq_len``, checked against the model's vocabulary."""
    problem = task.check_length(seq_len)
    if problem:
        raise DataError(problem)
    if task.vocab_size > vocab_size:
        raise DataError(
            f"data: {task.description}: the task uses token ids up to {task.vocab_size - 1}, outside the "
            f"model's vocabulary (model.vocab_size = {vocab_size})"
        )
    return TaskSplits(task, seq_len)


class Windows:
    """Random access to the windows ``tokens[i·T : i·T + T + 1]`` of a token stream (a grain data source)."""

    def __init__(self, tokens: np.ndarray, seq_len: int):
        self.tokens, self.seq_len = tokens, seq_len
        self.count = (tokens.size - 1) // seq_len
        self.row_shape: tuple[int, ...] = (seq_len + 1,)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> np.ndarray:
        start = int(index) * self.seq_len
        return np.asarray(self.tokens[start : start + self.seq_len + 1], dtype=np.int32)

    def gather(self, indices: np.ndarray) -> np.ndarray:
        """Windows at ``indices`` (any shape S) as an int32 array S × (T + 1)."""
        flat = [self[i] for i in np.asarray(indices).reshape(-1)]
        return np.stack(flat).reshape(*np.shape(indices), *self.row_shape)


Rows = Windows | ExampleSet
"""Random access to training rows: windows of a stream, or labelled examples of a task."""


def as_rows(data: np.ndarray | Rows, seq_len: int) -> Rows:
    """``data`` itself if it is already random-access rows, else the windows of the token stream ``data``."""
    return data if isinstance(data, Windows | ExampleSet) else Windows(np.asarray(data), seq_len)


class _LocalRows:
    """grain map: a global batch of row indices → this process's rows, (grad_accum, rows, *row_shape)."""

    def __init__(self, windows: Rows, layout: BatchLayout):
        self.windows, self.layout = windows, layout

    def __call__(self, indices: np.ndarray) -> np.ndarray:
        lay = self.layout
        micro = np.asarray(indices).reshape(lay.grad_accum, lay.micro_batch)
        return self.windows.gather(micro[:, lay.row_lo : lay.row_hi])


class TrainBatches:
    """The infinite, checkpointable stream of training batches of this process (a grain dataset iterator)."""

    def __init__(self, data: np.ndarray | Rows, seq_len: int, layout: BatchLayout, *, seed: int, shuffle: bool):
        windows = as_rows(data, seq_len)
        dataset = grain.MapDataset.range(len(windows))
        if shuffle:
            dataset = dataset.shuffle(seed=seed)
        dataset = dataset.repeat(None).batch(layout.batch_size, drop_remainder=True).map(_LocalRows(windows, layout))
        options = grain.ReadOptions(num_threads=1, prefetch_buffer_size=4)
        self.windows = windows
        self._iterator = iter(dataset.to_iter_dataset(options))

    def __iter__(self) -> TrainBatches:
        return self

    def __next__(self) -> np.ndarray:
        return next(self._iterator)

    def get_state(self) -> dict[str, Any]:
        """The grain iterator state (JSON-serialisable), saved with each checkpoint."""
        return dict(self._iterator.get_state())

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from a state returned by :meth:`get_state`."""
        self._iterator.set_state(dict(state))


def eval_batches(data: np.ndarray | Rows, seq_len: int, layout: BatchLayout, max_batches: int) -> list[np.ndarray]:
    """This process's fixed validation batches: up to ``max_batches`` global batches of rows in order."""
    windows = as_rows(data, seq_len)
    count = max(1, min(max_batches, len(windows) // layout.batch_size))
    indices = np.arange(count * layout.batch_size) % len(windows)
    local = _LocalRows(windows, layout)
    return [local(indices[i * layout.batch_size : (i + 1) * layout.batch_size]) for i in range(count)]
