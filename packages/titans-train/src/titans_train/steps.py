"""The jitted training and evaluation steps (one ``jax.jit`` each, with explicit in/out shardings).

The training state is a plain pytree (checkpointed as is)::

    {"params": nnx.to_pure_dict(params), "opt": optax state, "rest": other model variables (not trained),
     "step": int32 scalar, "rng": uint32 key data}

A batch is ``(grad_accum, micro_batch, seq_len + 1)`` int32 tokens. The loss is the mean next-token
cross-entropy
(float32) over all tokens of the step; with ``grad_accum > 1`` the gradients of the micro-batches are averaged
inside the step (``lax.scan``). With ``precision.compute_dtype: bfloat16`` floating parameters are cast to
bfloat16
for the forward pass only; gradients and the master weights (and the optimizer state) stay float32.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding

State = dict[str, Any]


def cast_floating(tree: Any, dtype: Any) -> Any:
    """``tree`` with its floating-point leaves cast to ``dtype``."""
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def make_loss(graphdef: nnx.GraphDef, compute_dtype: Any) -> Callable[[Any, Any, jax.Array], jax.Array]:
    """``loss(params, rest, tokens_Bx(T+1))``: mean cross-entropy of predicting ``tokens[:, 1:]``."""

    def loss(params: Any, rest: Any, tokens: jax.Array) -> jax.Array:
        if compute_dtype != jnp.float32:
            params, rest = cast_floating(params, compute_dtype), cast_floating(rest, compute_dtype)
        model = nnx.merge(graphdef, params, rest)
        logits = model(tokens[:, :-1]).astype(jnp.float32)
        return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

    return loss


@dataclass(frozen=True)
class Steps:
    """The compiled steps: ``train(state, batch) -> (state, metrics)``, ``evaluate(state, batch) -> loss``."""

    train: Callable[[State, jax.Array], tuple[State, dict[str, jax.Array]]]
    evaluate: Callable[[State, jax.Array], jax.Array]


def make_steps(
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    *,
    compute_dtype: Any,
    state_shardings: Any,
    batch_sharding: NamedSharding,
    replicated: NamedSharding,
) -> Steps:
    """Build and jit the training and evaluation steps."""
    loss_fn = make_loss(graphdef, compute_dtype)
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

    def train_step(state: State, batch: jax.Array) -> tuple[State, dict[str, jax.Array]]:
        loss, grads = loss_and_grads(state["params"], state["rest"], batch)
        updates, opt = tx.update(grads, state["opt"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        rng = jax.random.key_data(jax.random.split(jax.random.wrap_key_data(state["rng"]))[0])
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "lr": schedule(state["step"])}
        new_state = {**state, "params": params, "opt": opt, "step": state["step"] + 1, "rng": rng}
        return new_state, metrics

    def eval_step(state: State, batch: jax.Array) -> jax.Array:
        losses = jax.lax.map(lambda tokens: loss_fn(state["params"], state["rest"], tokens), batch)
        return losses.mean()

    train = jax.jit(
        train_step,
        in_shardings=(state_shardings, batch_sharding),
        out_shardings=(state_shardings, replicated),
        donate_argnums=0,
    )
    evaluate = jax.jit(eval_step, in_shardings=(state_shardings, batch_sharding), out_shardings=replicated)
    return Steps(train=train, evaluate=evaluate)
