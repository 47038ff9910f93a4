"""The optimizer: AdamW with a warmup + cosine learning-rate schedule, global-norm clipping and masked weight
decay.

Decisions:

- **Schedule**: at update ``s`` (0-based) the learning rate is ``lr · (s + 1) / warmup_steps`` during the
  warmup
  (so the first update is not wasted at 0), then a cosine from ``lr`` down to ``min_lr_ratio · lr`` reached at
  ``decay_steps`` (default ``trainer.steps``), constant after that.
- **Weight decay** applies to a parameter iff it has ``ndim ≥ 2`` (so never to norm scales, biases, scalar
  gates)
  and none of its path segments matches a regex of ``optimizer.no_decay`` (default ``norm``, ``^gate_``,
  ``_gate$``: norms, the memory's data-dependent gates ``gate_theta/eta/alpha`` and output gates ``out_gate``;
  the SwiGLU ``gate`` matrix *is* decayed). Embeddings and the learned memory init are decayed.
- **Gradient accumulation** is done inside the jitted step (see :mod:`titans_train.steps`), so the optimizer
  sees
  one averaged gradient per step and its state has no accumulation buffers.
"""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import optax

from titans_train.spec import TrainSpec


def lr_schedule(spec: TrainSpec) -> optax.Schedule:
    """The learning rate as a function of the update count (see the module docstring)."""
    peak = spec.optimizer.lr
    floor = peak * spec.schedule.min_lr_ratio
    warmup = spec.schedule.warmup_steps
    total = spec.schedule.decay_steps or spec.trainer.steps

    def schedule(count: jax.Array) -> jax.Array:
        step = jnp.asarray(count, jnp.float32)
        warm = peak * jnp.minimum(1.0, (step + 1.0) / max(warmup, 1))
        progress = jnp.clip((step - warmup) / max(total - warmup, 1), 0.0, 1.0)
        cosine = floor + (peak - floor) * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
        return jnp.where(step < warmup, warm, cosine)

    return schedule


def _segments(path: tuple[Any, ...]) -> list[str]:
    return [str(getattr(key, "key", getattr(key, "idx", getattr(key, "name", key)))) for key in path]


def decay_mask(params: Any, no_decay: list[str]) -> Any:
    """A tree of bools like ``params``: True where weight decay applies."""
    patterns = [re.compile(p) for p in no_decay]

    def decide(path: tuple[Any, ...], leaf: Any) -> bool:
        if len(getattr(leaf, "shape", ())) < 2:
            return False
        return not any(p.search(segment) for segment in _segments(path) for p in patterns)

    return jax.tree_util.tree_map_with_path(decide, params)


def param_path(path: tuple[Any, ...]) -> str:
    """A dotted parameter path from a tree path."""
    return ".".join(_segments(path))


def make_optimizer(spec: TrainSpec, params: Any) -> optax.GradientTransformation:
    """AdamW (+ clipping) for ``params`` (arrays or ShapeDtypeStructs; used for the decay mask only)."""
    opt = spec.optimizer
    adamw = optax.adamw(
        lr_schedule(spec),
        b1=opt.b1,
        b2=opt.b2,
        eps=opt.eps,
        weight_decay=opt.weight_decay,
        mask=decay_mask(params, opt.no_decay),
    )
    if opt.clip_norm is None:
        return adamw
    return optax.chain(optax.clip_by_global_norm(opt.clip_norm), adamw)
