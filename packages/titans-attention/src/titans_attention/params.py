"""Parameter counts (the evaluation compares variants at equal size)."""

from __future__ import annotations

import math
from collections import defaultdict

import jax
from flax import nnx


def count_params(model_or_params: nnx.Module | nnx.State) -> int:
    """Number of trainable parameters (nnx.Param leaves, the learned initial memory M_0 included) of a model, or of
    its parameter state — abstract (shapes only, from ``nnx.eval_shape``) or concrete."""
    params = model_or_params if isinstance(model_or_params, nnx.State) else nnx.state(model_or_params, nnx.Param)
    return sum(math.prod(x.shape) for x in jax.tree.leaves(params))


def param_report(model: nnx.Module) -> dict[str, int]:
    """Trainable parameters grouped by top-level part (embed, blocks.<i>.<mixer>, ...), plus 'total'."""
    groups: dict[str, int] = defaultdict(int)
    for path, leaf in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        head = [str(p) for p in path[:4]]
        key = ".".join(head[:3]) if head[0] == "blocks" else head[0]
        groups[key] += leaf[...].size
    groups["total"] = count_params(model)
    return dict(groups)
