"""Memory diagnostics: is the neural memory being written and read? (any update rule, any memory model)

:func:`memory_diagnostics` runs a :class:`~titans_memory.NeuralMemory` on ``x_BxTxD`` exactly as its
``__call__`` does — the same projections, convolutions and gates — but feeds the update rule one piece of
``update_rule.chunk_size`` tokens at a time (``lax.scan`` over the pieces with the rule's state carried, which
the ``UpdateRule`` protocol guarantees equals one call on the whole sequence), so that the memory can be
observed at every chunk boundary. It returns scalar statistics (float32):

- ``theta_mean/min/max``, ``eta_mean/min/max``, ``alpha_mean/min/max``: the gates θ_t (step size), η_t
  (surprise decay), α_t (forgetting) over batch, heads and tokens (and α's channels);
- ``update_norm_mean/max``: ‖M after the chunk − M before the chunk‖ (global ℓ2 norm over one head's memory
  parameters), over chunks, batch and heads — ≈ 0 means the memory is not being written;
- ``surprise_norm_mean/max``: ‖S‖ at the end of each chunk (same reduction);
- ``read_norm_mean/max``: ‖y_t‖ of the memory read y_t = M*(q_t) (per token and head, before the output norm).

Chunks are the pieces x[:, i·b : (i+1)·b] (the last one may be shorter). When ``state`` starts mid-chunk
(``state.rule.pos`` > 0, e.g. after persistent tokens), the pieces are still b tokens long but straddle the
rule's chunk boundaries; the norms then measure the change per b tokens. This is a separate, slower pass for
logging: the model's own forward pass is unchanged.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from titans_memory.memory import MemoryState, NeuralMemory, vmap_rule

#: The keys of :func:`memory_diagnostics`, in display order.
DIAGNOSTIC_KEYS = tuple(
    [f"{g}_{s}" for g in ("theta", "eta", "alpha") for s in ("mean", "min", "max")]
    + [f"{n}_norm_{s}" for n in ("update", "surprise", "read") for s in ("mean", "max")]
)


class ChunkTrace(NamedTuple):
    """What :func:`trace_chunks` observed: the reads y (B×H×T×Dh), the gates (B×H×T, B×H×T, B×H×T×C), the
    norm of the memory update and of the surprise per chunk, batch element and head (N×B×H, N = ⌈T / b⌉), and
    the rule state after the last token (equal to ``memory(x, state)[1].rule``)."""

    y_BxHxTxDh: jax.Array
    theta_BxHxT: jax.Array
    eta_BxHxT: jax.Array
    alpha_BxHxTxC: jax.Array
    update_norm_NxBxH: jax.Array
    surprise_norm_NxBxH: jax.Array
    rule_state: Any


def _head_norms(tree: Any) -> jax.Array:
    """Global ℓ2 norm per batch element and head of a tree with leaves B×H×… → B×H (float32)."""
    sq = sum(
        jnp.sum(jnp.square(x.astype(jnp.float32)).reshape(x.shape[:2] + (-1,)), axis=-1) for x in jax.tree.leaves(tree)
    )
    return jnp.sqrt(sq)


def trace_chunks(memory: NeuralMemory, x_BxTxD: jax.Array, state: MemoryState | None = None) -> ChunkTrace:
    """Run ``memory`` on x chunk by chunk from ``state`` (None: a fresh memory, as ``memory(x)``); see the
    module docstring. Works for any update rule and memory model: only the ``UpdateRule`` protocol is used."""
    B, T, _ = x_BxTxD.shape
    if T == 0:
        raise ValueError("memory diagnostics need at least one token")
    aligned = state is None  # memory(x) promises a chunk boundary for a fresh memory; a given state may be mid-chunk
    if state is None:
        state = memory.init_state(B)
    HD = memory.num_heads * memory.head_dim
    # the same inputs as NeuralMemory.__call__
    qkv = memory.qkv(x_BxTxD)
    q, _ = memory._query(qkv[..., :HD], state.conv.get("q"))
    k, v, _ = memory._keys_values(qkv[..., HD:], state.conv.get("kv"))
    gates = memory._gates(x_BxTxD)
    rule = lambda st, q, k, v, g: memory.update_rule(  # noqa: E731 — as NeuralMemory.__call__ calls it
        memory.memory_model, st, q, k, v, g, aligned=aligned, objective=memory.objective
    )
    run = vmap_rule(rule)

    def piece(rule_state, inp):
        y, new = run(rule_state, *inp)
        new = jax.tree.map(lambda n, o: n.astype(o.dtype), new, rule_state)  # a stable scan carry
        update = jax.tree.map(lambda n, o: n.astype(jnp.float32) - o.astype(jnp.float32), new.memory, rule_state.memory)
        return new, (y, _head_norms(update), _head_norms(new.surprise))

    b = memory.update_rule.chunk_size
    n_full, tail = divmod(T, b)
    xs = (q, k, v, gates)  # every leaf is B×H×T×…
    rule_state, ys, updates, surprises = state.rule, [], [], []
    if n_full:
        whole = jax.tree.map(
            lambda a: jnp.moveaxis(a[:, :, : n_full * b].reshape(a.shape[:2] + (n_full, b) + a.shape[3:]), 2, 0),
            xs,
        )
        rule_state, (y, u, s) = jax.lax.scan(piece, rule_state, whole)
        ys.append(jnp.moveaxis(y, 0, 2).reshape(y.shape[1:3] + (n_full * b,) + y.shape[4:]))
        updates.append(u)
        surprises.append(s)
    if tail:
        rule_state, (y, u, s) = piece(rule_state, jax.tree.map(lambda a: a[:, :, n_full * b :], xs))
        ys.append(y)
        updates.append(u[None])
        surprises.append(s[None])
    return ChunkTrace(
        jnp.concatenate(ys, axis=2),
        gates.theta_T,
        gates.eta_T,
        gates.alpha_TxC,
        jnp.concatenate(updates),
        jnp.concatenate(surprises),
        rule_state,
    )


def summarize(trace: ChunkTrace) -> dict[str, jax.Array]:
    """The scalar statistics of :data:`DIAGNOSTIC_KEYS` (float32) from a :class:`ChunkTrace`."""
    f32 = lambda a: a.astype(jnp.float32)  # noqa: E731
    out: dict[str, jax.Array] = {}
    for name, gate in (
        ("theta", trace.theta_BxHxT),
        ("eta", trace.eta_BxHxT),
        ("alpha", trace.alpha_BxHxTxC),
    ):
        out[f"{name}_mean"], out[f"{name}_min"], out[f"{name}_max"] = (
            jnp.mean(f32(gate)),
            jnp.min(f32(gate)),
            jnp.max(f32(gate)),
        )
    read_BxHxT = jnp.sqrt(jnp.sum(jnp.square(f32(trace.y_BxHxTxDh)), axis=-1))
    for name, norms in (
        ("update", trace.update_norm_NxBxH),
        ("surprise", trace.surprise_norm_NxBxH),
        ("read", read_BxHxT),
    ):
        out[f"{name}_norm_mean"], out[f"{name}_norm_max"] = jnp.mean(norms), jnp.max(norms)
    return {key: out[key] for key in DIAGNOSTIC_KEYS}


def memory_diagnostics(
    memory: NeuralMemory, x_BxTxD: jax.Array, state: MemoryState | None = None
) -> dict[str, jax.Array]:
    """Gate, update, surprise and read statistics of ``memory`` on ``x`` (see the module docstring); jit it
    (e.g. ``nnx.jit``): op by op it is slow."""
    return summarize(trace_chunks(memory, x_BxTxD, state))
