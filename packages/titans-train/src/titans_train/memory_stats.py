"""Memory diagnostics during training and evaluation: is each layer's neural memory being written and read?

Every ``trainer.diagnostics_every`` steps (default: ``trainer.log_every``; null: never) the trainer runs
:func:`titans_attention.diagnostics.model_memory_diagnostics` on the first micro-batch of that step's batch,
with the parameters the step starts from, and adds the result to the step's ``metrics.jsonl`` record under
``"memory"``::

    {"kind": "train", "step": 10, "loss": …, …,
     "memory": {"layer0": {"theta_mean": …, "theta_min": …, "theta_max": …, "eta_mean": …, …,
                           "update_norm_mean": …, "update_norm_max": …, "surprise_norm_mean": …, …}, …}}

(the keys are :data:`titans_memory.DIAGNOSTIC_KEYS`). It is a separate jitted function that runs only at those
steps, so the training step itself is unchanged. Models without a neural memory (SWA, plugins that do not
record one) write no ``"memory"`` key.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import NamedSharding
from titans_attention.diagnostics import memory_layers, model_memory_diagnostics
from titans_memory import DIAGNOSTIC_KEYS

from titans_train.steps import cast_floating, inputs_targets

MemoryStats = dict[str, dict[str, float]]


def has_memory(model: nnx.Module) -> bool:
    """Whether ``model`` holds any neural memory to diagnose."""
    return bool(memory_layers(model))


def to_floats(stats: dict[str, dict[str, Any]]) -> MemoryStats:
    """Device arrays → plain floats (for JSON); layers in model order (layer2 before layer10), keys in the
    order of :data:`~titans_memory.DIAGNOSTIC_KEYS`."""
    stats = jax.device_get(stats)
    rank = {key: i for i, key in enumerate(DIAGNOSTIC_KEYS)}
    by_number = lambda name: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]  # noqa: E731
    return {
        layer: {k: float(stats[layer][k]) for k in sorted(stats[layer], key=lambda k: (rank.get(k, len(rank)), k))}
        for layer in sorted(stats, key=by_number)
    }


def make_train_diagnostics(
    graphdef: nnx.GraphDef,
    compute_dtype: Any,
    *,
    state_shardings: Any,
    batch_sharding: NamedSharding,
    replicated: NamedSharding,
) -> Callable[[dict[str, Any], jax.Array], dict[str, dict[str, jax.Array]]]:
    """``diagnostics(state, batch)``: the memory statistics of the training state on the batch's first
    micro-batch (same dtype as the training forward pass), jitted with the training step's shardings."""

    def diagnostics(state: dict[str, Any], batch: jax.Array) -> dict[str, dict[str, jax.Array]]:
        params, rest = state["params"], state["rest"]
        if compute_dtype != jnp.float32:
            params, rest = cast_floating(params, compute_dtype), cast_floating(rest, compute_dtype)
        inputs_BxT, _ = inputs_targets(batch[0])
        return model_memory_diagnostics(nnx.merge(graphdef, params, rest), inputs_BxT)

    return jax.jit(diagnostics, in_shardings=(state_shardings, batch_sharding), out_shardings=replicated)


class MemoryProbe:
    """Memory statistics of a model on batches of token ids (``titans-eval``): one jitted function."""

    def __init__(self, model: nnx.Module):
        graphdef, self.state = nnx.split(model)
        self.active = has_memory(model)
        self._fn = jax.jit(lambda state, tokens: model_memory_diagnostics(nnx.merge(graphdef, state), tokens))

    def __call__(self, tokens_BxT: Any) -> MemoryStats | None:
        """The statistics (None for a model without memory)."""
        if not self.active:
            return None
        return to_floats(self._fn(self.state, jnp.asarray(tokens_BxT, jnp.int32)))


def summary_line(stats: MemoryStats) -> str:
    """A compact one-line summary: per layer θ mean, update and surprise norm means."""
    return "; ".join(
        f"{layer} θ {v['theta_mean']:.2g} η {v['eta_mean']:.2f} α {v['alpha_mean']:.2g} "
        f"ΔM {v['update_norm_mean']:.2g} ‖S‖ {v['surprise_norm_mean']:.2g} ‖y‖ {v['read_norm_mean']:.2g}"
        for layer, v in stats.items()
    )
