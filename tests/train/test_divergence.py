"""``titans_train.divergence``: which checkpoint a diverged run offers to fork (the whole runs are in
test_train_flow.py)."""

from __future__ import annotations

import math
from pathlib import Path

from titans_train.divergence import diverged_error, divergence, last_good_checkpoint


def test_a_checkpoint_is_trusted_by_the_loss_its_weights_gave_next():
    losses = {2: 5.0, 3: 40.0, 4: math.nan, 5: 1e6}  # the loss of step c + 1 is that of checkpoint c's weights
    assert last_good_checkpoint([1, 2, 3, 4], losses, bound=11.0) == (1, [4, 3, 2])
    assert last_good_checkpoint([1, 3], {2: 20.0}, bound=11.0) == (3, [])  # step 4 not run: unknown, trusted
    assert last_good_checkpoint([2], losses, bound=11.0) == (None, [2])
    assert last_good_checkpoint([], losses, bound=11.0) == (None, [])


def test_the_message_names_the_fork_and_the_skipped_checkpoints():
    text = str(diverged_error(6, 42.0, "why", [1, 2, 5], {2: 3.0, 3: 4.0, 6: 42.0}, 11.1, Path("run/checkpoints")))
    assert "diverged at step 6 (loss 42): why" in text and "the last good checkpoint is step 2" in text
    assert "not a later one: step 5's weights gave 42" in text and "--fork-from run/checkpoints/2" in text
    none = str(diverged_error(2, 9e9, "why", [1], {2: 9e9}, 11.1, Path("c")))
    assert "no checkpoint is good (step 1's weights gave 9e+09" in none and "--fork-from" not in none
    assert "no checkpoint was written" in str(diverged_error(1, math.nan, "why", [], {1: math.nan}, 11.1, Path("c")))


def test_divergence_reasons():
    fine = {"loss": 3.0, "grad_norm": 1.0, "weight_max": 5.0}
    assert divergence(fine, max_weight=10.0) is None
    assert "not finite" in divergence({**fine, "grad_norm": math.inf}, max_weight=None)
    assert "above trainer.max_weight = 4" in divergence(fine, max_weight=4.0)
    assert divergence({**fine, "weight_max": 1e9}, max_weight=None) is None  # the bound is off
