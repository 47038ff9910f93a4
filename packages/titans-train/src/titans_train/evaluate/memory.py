"""Memory diagnostics in ``titans-eval``: for every (task, context) result of a run with a neural memory, the
statistics of :mod:`titans_memory.diagnostics` for each memory layer (``result["memory"]``, the same keys as
the training records), measured on the first ``--batch-size`` sequences of that task's evaluation inputs:

- ``lm``: the held-out windows (the inputs of the first windows that
  :func:`~titans_train.evaluate.scorers.heldout_lm` scores);
- ``niah``: the S-NIAH prompts, cut to the shortest prompt's length (so that no row is padding);
- ``niah_multikey``, ``niah_multivalue``, ``babilong``: their prompts, cut likewise;
- ``mqar``: the MQAR inputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from titans_train.data.pipeline import Windows
from titans_train.evaluate.scorers import (
    HAYSTACK_TASKS,
    haystack_eval_examples,
    mqar_eval_examples,
    niah_eval_examples,
)
from titans_train.memory_stats import MemoryProbe, MemoryStats
from titans_train.tasks.niah import encode_text


def eval_inputs(plan: Any, options: Any, task: str, context: int) -> np.ndarray:
    """Token ids ``N × T`` (N ≤ options.batch_size) of the evaluation inputs of ``task`` at ``context``."""
    n = options.batch_size
    if task == "lm":
        windows = Windows(plan.lm_tokens, context)
        return windows.gather(np.arange(min(len(windows), n)))[:, :-1]
    if task == "niah" or task in HAYSTACK_TASKS:
        if task == "niah":
            examples = niah_eval_examples(options.seed, context, options.examples, plan.value_kind)
        else:
            examples = haystack_eval_examples(task, options.seed, context, options.examples, **plan.haystack[task])
        prompts = [encode_text(e.prompt) for e in examples[:n]]
        shortest = min(p.size for p in prompts)
        return np.stack([p[:shortest] for p in prompts]).astype(np.int32)
    if task == "mqar":
        inputs, _ = mqar_eval_examples(options.seed, context, options.examples, **plan.mqar)
        return inputs[:n]
    raise ValueError(f"unknown task {task!r}")


class EvalMemoryStats:
    """``stats(task, context)`` for one run (None for a model without neural memory)."""

    def __init__(self, plan: Any, options: Any):
        self.plan, self.options = plan, options
        self.probe = MemoryProbe(plan.model)

    def __call__(self, task: str, context: int) -> MemoryStats | None:
        if not self.probe.active:
            return None
        return self.probe(eval_inputs(self.plan, self.options, task, context))
