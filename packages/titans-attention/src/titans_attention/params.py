"""Parameter counts (the evaluation compares variants at equal size)."""

from __future__ import annotations

from collections import defaultdict

import jax
from flax import nnx


def count_params(model: nnx.Module) -> int:
    """Number of trainable parameters (nnx.Param leaves, the learned initial memory M_0 included)."""
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def param_report(model: nnx.Module) -> dict[str, int]:
    """Trainable parameters grouped by top-level part (embed, blocks.<i>.<mixer>, ...), plus 'total'."""
    groups: dict[str, int] = defaultdict(int)
    for path, leaf in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        head = [str(p) for p in path[:4]]
        key = ".".join(head[:3]) if head[0] == "blocks" else head[0]
        groups[key] += leaf[...].size
    groups["total"] = count_params(model)
    return dict(groups)
