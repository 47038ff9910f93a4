"""The jitted training and evaluation steps (one ``jax.jit`` each, with explicit in/out shardings).

The training state is a plain pytree (checkpointed as is)::

    {"params": nnx.to_pure_dict(params), "opt": optax state, "rest": other model variables (not trained),
     "step": int32 scalar, "rng": uint32 key data}

A batch is ``(grad_accum, micro_batch, seq_len + 1)`` int32 tokens (windows of a stream) or
``(grad_accum, micro_batch, 2, seq_len)`` labelled examples (inputs, targets; target -100 = not scored, see
:mod:`titans_train.data.examples`). The loss is the mean next-token cross-entropy (float32) over the scored
tokens of each micro-batch (every token of a window); with ``grad_accum > 1`` the
gradients of the micro-batches are averaged
inside the step (``lax.scan``). With ``precision.compute_dtype: bfloat16`` floating parameters are cast to
bfloat16
for the forward pass only; gradients and the master weights (and the optimizer state) stay float32.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding

from titans_train.tasks.scoring import IGNORE_INDEX

if TYPE_CHECKING:
    from titans_train.carry import CarrySetup

State = dict[str, Any]


def cast_floating(tree: Any, dtype: Any) -> Any:
    """``tree`` with its floating-point leaves cast to ``dtype``."""
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def inputs_targets(rows: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(inputs_BxT, targets_BxT) of a micro-batch: windows ``B × (T + 1)`` or labelled examples ``B×2×T``."""
    if rows.ndim == 3:
        return rows[:, 0], rows[:, 1]
    return rows[:, :-1], rows[:, 1:]


def make_forward(
    graphdef: nnx.GraphDef, compute_dtype: Any
) -> Callable[[Any, Any, jax.Array], tuple[jax.Array, jax.Array, jax.Array]]:
    """``forward(params, rest, rows) -> (cross_entropy_BxT, correct_BxT, scored_BxT)``; see make_loss."""

    def forward(params: Any, rest: Any, rows: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        if compute_dtype != jnp.float32:
            params, rest = cast_floating(params, compute_dtype), cast_floating(rest, compute_dtype)
        model = nnx.merge(graphdef, params, rest)
        inputs_BxT, targets_BxT = inputs_targets(rows)
        scored_BxT = targets_BxT != IGNORE_INDEX
        safe_BxT = jnp.where(scored_BxT, targets_BxT, 0)
        logits_BxTxV = model(inputs_BxT).astype(jnp.float32)
        ce_BxT = optax.softmax_cross_entropy_with_integer_labels(logits_BxTxV, safe_BxT)
        correct_BxT = jnp.argmax(logits_BxTxV, axis=-1) == safe_BxT
        return ce_BxT, correct_BxT, scored_BxT

    return forward


def scored_mean(values: jax.Array, scored: jax.Array) -> jax.Array:
    """The mean of ``values`` over the positions where ``scored`` is true (0 where none is)."""
    return jnp.sum(jnp.where(scored, values, 0.0)) / jnp.maximum(jnp.sum(scored), 1)


def make_loss(graphdef: nnx.GraphDef, compute_dtype: Any) -> Callable[[Any, Any, jax.Array], jax.Array]:
    """``loss(params, rest, rows)``: mean cross-entropy over the scored targets of a micro-batch.

    ``rows`` is ``B × (T + 1)`` tokens (every next token is a target) or ``B × 2 × T`` (inputs, targets with
    ``-100`` on positions that are not scored). A micro-batch without any scored target has loss 0.
    """
    forward = make_forward(graphdef, compute_dtype)

    def loss(params: Any, rest: Any, rows: jax.Array) -> jax.Array:
        ce_BxT, _, scored_BxT = forward(params, rest, rows)
        return scored_mean(ce_BxT, scored_BxT)

    return loss


@dataclass(frozen=True)
class Steps:
    """The compiled steps: ``train(state, batch) -> (state, metrics)``,
    ``evaluate(state, batch) -> {"loss", "accuracy"}`` (means over the micro-batches)."""

    train: Callable[[State, jax.Array], tuple[State, dict[str, jax.Array]]]
    evaluate: Callable[[State, jax.Array], dict[str, jax.Array]]


def make_steps(
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    *,
    compute_dtype: Any,
    state_shardings: Any,
    batch_sharding: NamedSharding,
    replicated: NamedSharding,
    carry: CarrySetup | None = None,
) -> Steps:
    """Build and jit the training and evaluation steps.

    ``carry`` (``trainer.carry_memory``): the training step continues every row from the cache in
    ``state["carry"]`` and stores the cache after its window there (:mod:`titans_train.carry`)."""
    loss_fn = make_loss(graphdef, compute_dtype)
    forward = make_forward(graphdef, compute_dtype)
    grad_fn = jax.value_and_grad(loss_fn)

    def loss_and_grads(params: Any, rest: Any, batch: jax.Array) -> tuple[jax.Array, Any]:
        accum = batch.shape[0]
        if accum == 1:
            return grad_fn(params, rest, batch[0])

        def micro(carry: tuple[jax.Array, Any], tokens: jax.Array) -> tuple[tuple[jax.Array, Any], None]:
            loss_sum, grad_sum = carry
            loss, grads = grad_fn(params, rest, tokens)
            return (loss_sum + loss, jax.tree.map(jnp.add, grad_sum, grads)), None

        zeros = jax.tree.map(jnp.zeros_like, params)
        (loss_sum, grad_sum), _ = jax.lax.scan(micro, (jnp.zeros((), jnp.float32), zeros), batch)
        return loss_sum / accum, jax.tree.map(lambda g: g / accum, grad_sum)

    if carry is not None:
        from titans_train.carry import make_carry_loss_and_grads  # (it builds on this module)
        from titans_train.data.streams import stream_starts

        carried_loss_and_grads = make_carry_loss_and_grads(graphdef, compute_dtype, carry.treedef)

    def train_step(state: State, batch: jax.Array) -> tuple[State, dict[str, jax.Array]]:
        extra: State = {}
        if carry is None:
            loss, grads = loss_and_grads(state["params"], state["rest"], batch)
        else:
            reset = stream_starts(state["step"], carry.windows, carry.reset_every)
            loss, grads, extra["carry"] = carried_loss_and_grads(
                state["params"], state["rest"], batch, state["carry"], reset
            )
        updates, opt = tx.update(grads, state["opt"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        rng = jax.random.key_data(jax.random.split(jax.random.wrap_key_data(state["rng"]))[0])
        weight_max = jnp.max(jnp.stack([jnp.max(jnp.abs(p)) for p in jax.tree.leaves(params)]))  # NaN if any is
        metrics = {
            "loss": loss,
            "grad_norm": optax.tree.norm(grads),
            "lr": schedule(state["step"]),
            "weight_max": weight_max.astype(jnp.float32),
        }
        new_state = {**state, "params": params, "opt": opt, "step": state["step"] + 1, "rng": rng, **extra}
        return new_state, metrics

    def eval_micro(state: State, rows: jax.Array) -> dict[str, jax.Array]:
        ce, correct, scored = forward(state["params"], state["rest"], rows)
        return {"loss": scored_mean(ce, scored), "accuracy": scored_mean(correct, scored)}

    def eval_step(state: State, batch: jax.Array) -> dict[str, jax.Array]:
        metrics = jax.lax.map(lambda rows: eval_micro(state, rows), batch)
        return jax.tree.map(jnp.mean, metrics)

    train = jax.jit(
        train_step,
        in_shardings=(state_shardings, batch_sharding),
        out_shardings=(state_shardings, replicated),
        donate_argnums=0,
    )
    evaluate = jax.jit(eval_step, in_shardings=(state_shardings, batch_sharding), out_shardings=replicated)
    return Steps(train=train, evaluate=evaluate)
