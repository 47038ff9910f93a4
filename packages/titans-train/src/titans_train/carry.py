"""Carried memory (``trainer.carry_memory``): truncated back-propagation through time across windows.

Each batch row is a stream of consecutive windows (:mod:`titans_train.data.streams`). The training step of window
k continues from the model's recurrent state after window k − 1 — every block's cache as ``TitansLM.decode``
takes and returns it: the neural memory's state (weights M, momentum S, the convolution's last inputs) and the
attention caches — and returns the state after window k for the next step:

    logits_k, cache_k = model.decode(window_k, stop_gradient(cache_{k−1}))

``stop_gradient``: the loss of window k trains the parameters through window k's computation only (gradients do
not flow into earlier windows, as in Transformer-XL's cached segments). At a stream start the cache is the model's
fresh ``init_cache`` computed inside the loss, so the initial memory weights and persistent tokens still receive
their gradient. ``decode`` from a fresh cache is the same computation as the plain forward pass (the mixers'
prefill/decode contract), so window 0 of a stream is trained exactly as without carry_memory.

The carried cache lives in the training state as ``state["carry"]``: its leaves (``jax.tree.leaves`` of the
model's cache), each stacked over the ``grad_accum`` micro-batches, float32 (the dtype of a float32 model's
cache, also under ``precision.compute_dtype: bfloat16``). So it is checkpointed with the rest of the state, and
a resumed run continues bit for bit.

Task data (labelled examples, e.g. S-NIAH): a row's stream is the examples that row is given, one after another
(``titans_train.data.streams.TASK_STREAM``): example n starts from the state after example n − 1 of the same row,
and the loss is, as without carry_memory, the mean over the scored targets. The examples are independent: nothing
is learned across them; what changes is the state each example starts from. Decision (the paper is silent): this
lets a model trained on examples of length T meet, in training, a memory that has already taken up to
``carry_reset_every`` × T tokens of writes — the state of a long evaluation context — while gradients still flow
through one example only. Streams restart from the fresh state at step 0 and every ``carry_reset_every`` examples
(null: never again).

Sharding: the cache is kept replicated, which is the batch's layout only on a one-device mesh; carry_memory
therefore refuses meshes of more than one device and runs of more than one process (a spec error in the plan).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from titans_train.steps import cast_floating, inputs_targets, scored_mean
from titans_train.tasks.scoring import IGNORE_INDEX

Leaves = list[Any]  # arrays, or ShapeDtypeStructs


@dataclass(frozen=True)
class CarrySetup:
    """What the training step needs to carry the cache (built by the plan)."""

    treedef: Any  # the structure of the model's cache (jax.tree.flatten of init_cache)
    leaves: Leaves  # ShapeDtypeStructs of the cache leaves of one micro-batch
    windows: int  # W: windows per stream (one pass over a row's region)
    reset_every: int  # R ≤ W: a stream restarts from a fresh cache at window k of a pass when k % R == 0


def cache_structure(graphdef: nnx.GraphDef, params: Any, rest: Any, micro_batch: int) -> tuple[Any, Leaves]:
    """(treedef, leaf shapes) of the model's cache for ``micro_batch`` rows (shapes only; nothing is computed).

    ``params`` and ``rest`` are nnx states (abstract or concrete). They are arguments of the traced function, not
    constants it closes over: a cache made from the parameters (the neural memory's M_0) reads them, and abstract
    ShapeDtypeStruct leaves can only be read as tracers."""

    def fresh(params: Any, rest: Any) -> Any:
        return nnx.merge(graphdef, params, rest).init_cache(micro_batch)

    shapes = jax.eval_shape(fresh, params, rest)
    leaves, treedef = jax.tree.flatten(shapes)
    return treedef, leaves


def carry_shapes(leaves: Leaves, grad_accum: int) -> Leaves:
    """ShapeDtypeStructs of ``state["carry"]``: every cache leaf stacked over the micro-batches."""
    return [jax.ShapeDtypeStruct((grad_accum, *x.shape), x.dtype) for x in leaves]


def zero_carry(leaves: Leaves, grad_accum: int) -> Leaves:
    """The carry of a fresh run (never read: step 0 starts every stream from the fresh cache)."""
    return [jnp.zeros(s.shape, s.dtype) for s in carry_shapes(leaves, grad_accum)]


def make_carry_loss(
    graphdef: nnx.GraphDef, compute_dtype: Any, treedef: Any
) -> Callable[[Any, Any, jax.Array, Leaves, jax.Array], tuple[jax.Array, Leaves]]:
    """``loss(params, rest, rows, carried, reset) -> (loss, new_carried)`` of one micro-batch of windows.

    ``rows``: ``B × (T + 1)`` tokens or ``B × 2 × T`` labelled examples; ``carried``: the cache leaves after the
    previous window of each row; ``reset`` (bool scalar): start every row from the fresh cache instead. The loss is
    the mean next-token cross-entropy of the window (of the scored targets of labelled examples); ``new_carried``
    (no gradient) is the cache after it, in the carried dtypes."""

    def loss(params: Any, rest: Any, rows: jax.Array, carried: Leaves, reset: jax.Array) -> tuple[jax.Array, Leaves]:
        if compute_dtype != jnp.float32:
            params, rest = cast_floating(params, compute_dtype), cast_floating(rest, compute_dtype)
        model = nnx.merge(graphdef, params, rest)
        inputs_BxT, targets_BxT = inputs_targets(rows)
        fresh = jax.tree.leaves(model.init_cache(inputs_BxT.shape[0]))
        start = [
            jnp.where(reset, f, jax.lax.stop_gradient(c).astype(f.dtype)) for f, c in zip(fresh, carried, strict=True)
        ]
        logits_BxTxV, cache = model.decode(inputs_BxT, jax.tree.unflatten(treedef, start))
        new = [jax.lax.stop_gradient(n).astype(c.dtype) for n, c in zip(jax.tree.leaves(cache), carried, strict=True)]
        scored_BxT = targets_BxT != IGNORE_INDEX  # every target of a window; the answers of labelled examples
        safe_BxT = jnp.where(scored_BxT, targets_BxT, 0)
        ce_BxT = optax.softmax_cross_entropy_with_integer_labels(logits_BxTxV.astype(jnp.float32), safe_BxT)
        return scored_mean(ce_BxT, scored_BxT), new

    return loss


def make_carry_loss_and_grads(
    graphdef: nnx.GraphDef, compute_dtype: Any, treedef: Any
) -> Callable[[Any, Any, jax.Array, Leaves, jax.Array], tuple[jax.Array, Any, Leaves]]:
    """``(params, rest, batch, carry, reset) -> (loss, grads, new_carry)`` over the ``grad_accum`` micro-batches
    of ``batch`` (``carry`` stacked over them); loss and gradients are averaged as in the plain step."""
    grad_fn = jax.value_and_grad(make_carry_loss(graphdef, compute_dtype, treedef), has_aux=True)

    def run(params: Any, rest: Any, batch: jax.Array, carry: Leaves, reset: jax.Array) -> tuple[jax.Array, Any, Leaves]:
        accum = batch.shape[0]
        if accum == 1:
            (loss, new), grads = grad_fn(params, rest, batch[0], [c[0] for c in carry], reset)
            return loss, grads, [n[None] for n in new]

        def micro(acc: tuple[jax.Array, Any], xs: tuple[jax.Array, Leaves]) -> tuple[tuple[jax.Array, Any], Leaves]:
            loss_sum, grad_sum = acc
            (loss, new), grads = grad_fn(params, rest, xs[0], xs[1], reset)
            return (loss_sum + loss, jax.tree.map(jnp.add, grad_sum, grads)), new

        zeros = jax.tree.map(jnp.zeros_like, params)
        (loss_sum, grad_sum), new = jax.lax.scan(micro, (jnp.zeros((), jnp.float32), zeros), (batch, carry))
        return loss_sum / accum, jax.tree.map(lambda g: g / accum, grad_sum), new

    return run
