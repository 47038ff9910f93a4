"""Protocols for the four core component kinds.

Each registered component of a kind has a factory ``factory(config, **kwargs)``; the object it returns satisfies the
kind's protocol below. The protocols are deliberately small: a memory architecture, an update rule or a variant that
satisfies them plugs into everything else (the spec, the model assembly, training and generation).

Array names carry their shape (``x_BxTxD``: batch B, time T, width D; ``H`` heads, ``Dh`` head width, ``C`` gate
channels).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import jax

PyTree = Any

KINDS: dict[str, str] = {
    "memory_model": "the inner network M of the long-term memory (MemoryModel)",
    "update_rule": "how the memory state evolves over a sequence and is read (UpdateRule)",
    "attention": "a short-term-memory attention block (AttentionBlock)",
    "variant": "a whole sequence model built from a validated spec (Variant)",
    "data_source": "a training/eval data source (titans-train)",
    "task": "an evaluation task (titans-train)",
}


@runtime_checkable
class MemoryModel(Protocol):
    """The inner network M (paper §3.1): a pure function of its own parameters, one instance per head.

    ``init`` draws M_0 for one head; ``apply`` is the forward pass y = M(x) used both for retrieval (Eq 15) and inside
    the associative loss ℓ(M; x) = ‖M(k) − v‖² (Eq 12). Parameters are a pytree; the update rules differentiate
    ``apply`` with respect to them. ``channel_axis_ok`` says whether per-channel forgetting (α per output channel) is
    meaningful: true only when every parameter leaf's last axis is the output channel and M is linear in its
    parameters per output channel (the matrix memory).
    """

    channel_axis_ok: bool

    def init(self, key: jax.Array, dim: int) -> PyTree: ...

    def apply(self, params: PyTree, x_TxD: jax.Array) -> jax.Array: ...


@runtime_checkable
class UpdateRule(Protocol):
    """How the memory evolves (Eq 13–14, 16) and is read (Eq 15), for one head of one sequence.

    ``init_state(params0)`` returns the rule's state at the start of a sequence; ``__call__`` consumes a piece of a
    sequence — queries, keys, values and gates — returns the retrievals y_t = M*(q_t) and the new state. Calling it on
    x[:a] then x[a:] with the carried state equals one call on x. ``chunk_size`` is b of Eq 16.
    """

    chunk_size: int

    def init_state(self, params0: PyTree) -> PyTree: ...

    def __call__(
        self,
        model: MemoryModel,
        state: PyTree,
        q_TxD: jax.Array,
        k_TxD: jax.Array,
        v_TxD: jax.Array,
        gates: PyTree,
    ) -> tuple[jax.Array, PyTree]: ...


@runtime_checkable
class AttentionBlock(Protocol):
    """Short-term memory: attention over a sequence (full pass) or one token at a time against a cache."""

    def __call__(self, x_BxTxD: jax.Array) -> jax.Array: ...

    def init_cache(self, batch_size: int) -> PyTree: ...

    def decode(self, x_BxTxD: jax.Array, cache: PyTree) -> tuple[jax.Array, PyTree]: ...


@runtime_checkable
class Variant(Protocol):
    """A whole model (token ids → logits), built by ``factory(config, rngs=...)`` from a validated spec."""

    def __call__(self, tokens_BxT: jax.Array) -> jax.Array: ...

    def init_cache(self, batch_size: int) -> PyTree: ...

    def decode(self, tokens_BxT: jax.Array, cache: PyTree) -> tuple[jax.Array, PyTree]: ...
