"""Training batches as streams (``trainer.carry_memory``): every batch row reads its own contiguous region of the
training tokens, window after window, so that the model's recurrent state can be carried from one window of a
row to the next (truncated back-propagation through time; :mod:`titans_train.carry`).

Decisions:

- **Regions**: the training split (n tokens) is cut into ``batch_size`` equal regions of ``L = n // batch_size``
  tokens; global row r (row ``a · micro_batch + m`` of the flattened ``(grad_accum, micro_batch)`` batch) reads
  region r. Its window k is ``tokens[r·L + k·T : r·L + k·T + T + 1]`` (T = seq_len, consecutive windows share one
  token as in :class:`~titans_train.data.pipeline.Windows`), for k = 0 … W − 1 with ``W = (L − 1) // T`` windows
  per region; after the last one the row starts its region again.
- **Lockstep**: all rows are at the same window index: step s reads window ``s mod W`` of every region. So the
  iterator state is the number of batches read (``{"next_window": s}``, saved with each checkpoint) and equals
  the training step.
- **Resets**: a stream restarts from the model's fresh state (:func:`stream_starts`) at window 0 of every pass
  over the region and every ``trainer.carry_reset_every`` windows (``k mod R == 0``). The token stream has no
  document boundaries (a corpus is its files concatenated), so there are no other resets.
- **Shuffling** does not apply (``data.shuffle: true`` with carry_memory is a spec error); the data order is the
  same for every ``trainer.seed``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from titans_train.data.pipeline import BatchLayout
from titans_train.errors import DataError

#: W of a task's streams: a row's stream is the examples it is given, one after another, with no end to wrap at;
#: it restarts only at step 0 and every ``trainer.carry_reset_every`` examples (see titans_train.carry).
TASK_STREAM = 2**31 - 1


def windows_per_stream(tokens: int, seq_len: int, batch_size: int) -> int:
    """W, the windows of one row's region (DataError when a region holds less than one window)."""
    region = tokens // batch_size
    count = (region - 1) // seq_len
    if count < 1:
        raise DataError(
            f"data: with trainer.carry_memory every batch row reads its own region of the training split: "
            f"{tokens:,} tokens / trainer.batch_size {batch_size} = {region:,} tokens per row, but one window "
            f"needs data.seq_len + 1 = {seq_len + 1:,}"
        )
    return count


def stream_period(windows: int, reset_every: int | None) -> tuple[int, int]:
    """(W, R): a stream starts at window k of a pass when ``k % R == 0`` (R = reset_every, at most W)."""
    return windows, min(reset_every or windows, windows)


def stream_starts(step: Any, windows: int, reset_every: int) -> Any:
    """Whether the batch of ``step`` (an int or a traced int32) starts every stream from a fresh state."""
    return (step % windows) % reset_every == 0


class StreamBatches:
    """The infinite, checkpointable stream of carried-memory training batches of this process:
    ``(grad_accum, row_hi − row_lo, seq_len + 1)`` int32 arrays (see the module docstring)."""

    def __init__(self, tokens: np.ndarray, seq_len: int, layout: BatchLayout):
        self.tokens, self.seq_len, self.layout = np.asarray(tokens), seq_len, layout
        self.windows = windows_per_stream(self.tokens.size, seq_len, layout.batch_size)
        self.region = self.tokens.size // layout.batch_size
        self.next_window = 0

    def __iter__(self) -> StreamBatches:
        return self

    def batch(self, step: int) -> np.ndarray:
        """This process's rows of the batch of ``step``."""
        lay, T = self.layout, self.seq_len
        k = step % self.windows
        rows = np.arange(lay.batch_size).reshape(lay.grad_accum, lay.micro_batch)[:, lay.row_lo : lay.row_hi]
        starts = rows * self.region + k * T
        return self.tokens[starts[..., None] + np.arange(T + 1)].astype(np.int32)

    def __next__(self) -> np.ndarray:
        out = self.batch(self.next_window)
        self.next_window += 1
        return out

    def get_state(self) -> dict[str, Any]:
        """The number of batches read (JSON-serialisable), saved with each checkpoint."""
        return {"next_window": self.next_window}

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from a state returned by :meth:`get_state`."""
        self.next_window = int(state["next_window"])
