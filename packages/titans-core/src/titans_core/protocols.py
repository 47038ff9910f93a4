"""Protocols of the core component kinds, and the state types they speak in.

Each registered component of a kind has a factory ``factory(config, **kwargs)``; the object it returns
satisfies the kind's protocol below. The protocols say exactly what the rest of Titans calls: the neural
memory (``titans_memory.NeuralMemory``) calls a ``MemoryModel``, an ``UpdateRule`` and an ``Objective``;
titans-attention's mixers call an ``AttentionBlock``; training and generation call a ``Variant``.
``titans_core.contracts`` checks a component against its kind's protocol when the registry builds it, so a
plugin that does not fit fails at once, with one line naming the plugin and what is missing, instead of deep
inside a traced forward pass.

Array names carry their shape (``x_BxTxD``: batch B, time T, width D; ``C`` gate channels).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp

PyTree = Any

KINDS: dict[str, str] = {
    "memory_model": "the inner network M of the long-term memory (MemoryModel)",
    "update_rule": "how the memory state evolves over a sequence and is read (UpdateRule)",
    "objective": "the memory's inner loss ℓ(M(k), v), its attentional bias (Objective)",
    "attention": "short-term memory: causal attention over a sequence, with a decoding cache (AttentionBlock)",
    "variant": "a whole sequence model built from a validated spec (Variant)",
    "data_source": "a training/eval data source (titans-train; its result has load())",
}


class Gates(NamedTuple):
    """Per-token gates of one head (paper Eq 13–14): θ step size, η surprise decay (momentum), α forgetting.

    ``alpha_TxC`` has C = 1 (one α per token and head) or C = head width (per-channel α, matrix memory only).
    ``objective_T`` holds the objective's per-token parameters (``Objective.token_params``), name → shape T
    (e.g. Yaad's δ_t); empty for objectives without any. A rule passes them, sliced like the other gates, as
    keywords to the objective's ``loss`` and ``cotangent``. Build gates for slicing or padding with
    ``jax.tree.map`` (it reaches into this dict) rather than by iterating the tuple.
    """

    theta_T: jax.Array
    eta_T: jax.Array
    alpha_TxC: jax.Array
    objective_T: dict[str, jax.Array] = {}  # never mutated; {}: no per-token parameters


class RuleState(NamedTuple):
    """The memory of one head of one sequence — the state every update rule returns and consumes.

    ``start`` is M_{t'}, the weights at the last chunk boundary: tokens of the current chunk take their
    gradients at them (Eq 16) and, with ``read: chunk``, read them (read-before-write, Eq 15; ``read: token``
    reads M_t instead); the neural memory's read-only
    ``retrieve`` and the MAC variant read it too. ``memory`` is M_t and ``surprise`` S_t (Eq 13–14) after the
    last token seen; ``start``, ``memory`` and ``surprise`` have the pytree structure of the memory model's
    parameters. ``pos`` (int32 scalar) counts the tokens seen in the current, unfinished chunk (0 ≤ pos <
    chunk_size). When a chunk completes, start := memory.

    ``extra`` is whatever else a rule must carry from one piece of a sequence to the next (e.g. the last tokens of
    a sliding window); ``()`` for the built-in rules. Its leaves carry the same leading batch axes as the
    parameters. A rule that needs it may define ``init_extra(batch_shape, dim, dtype)`` (``batch_shape``: B×H,
    ``dim``: the head width), which ``NeuralMemory.init_state`` calls, so that the state has one structure from the
    first token on.
    """

    start: PyTree
    memory: PyTree
    surprise: PyTree
    pos: jax.Array
    extra: PyTree = ()


def init_rule_state(params0: PyTree) -> RuleState:
    """State before the first token: M_0 everywhere, S_0 = 0, pos = 0. Update rules return this from
    ``init_state`` (or a ``RuleState`` built the same way)."""
    return RuleState(params0, params0, jax.tree.map(jnp.zeros_like, params0), jnp.zeros((), jnp.int32))


@runtime_checkable
class MemoryModel(Protocol):
    """The inner network M (paper §3.1): a pure function of its own parameters, one instance per head.

    ``init(key, dim)`` draws M_0 for one head: any pytree (nested dicts, lists, tuples) whose leaves are
    floating-point arrays. ``apply(params, x_TxD)`` is the forward pass y = M(x) (T×dim → T×dim) used both for
    retrieval (Eq 15) and inside the inner loss ℓ(M(k), v) (Eq 12); the update rules differentiate it with
    respect to the parameters. ``channel_axis_ok`` says whether per-channel forgetting (α per output channel)
    is meaningful: true only when every parameter leaf's last axis is the output channel and M is linear in
    its parameters per output channel (the matrix memory).

    Optional: ``read_and_linearize(params, q_TxD, k_TxD)`` → (M(q), M(k), grad_sums), a fast path of the
    chunked rule (see ``titans_memory.MLPMemory``); without it the rule uses ``jax.vjp`` of ``apply``.
    ``grad_norms(params, k_TxD, cot_TxD)`` → the T norms ‖∂⟨cot_i, M(k_i)⟩/∂params‖ (one ℓ2 norm over every
    parameter), for the surprise clamp (``max_grad_norm``); without it the rule builds one gradient tree per token.
    """

    channel_axis_ok: bool

    def init(self, key: jax.Array, dim: int) -> PyTree: ...

    def apply(self, params: PyTree, x_TxD: jax.Array) -> jax.Array: ...


@runtime_checkable
class Objective(Protocol):
    """The inner loss ℓ(M(k), v) of the memory — its attentional bias (MIRAS) — for one head, token by token.

    ``loss(pred_TxD, v_TxD)`` is ℓ_t for every token (shape T), with pred = M(k) (Eq 12 for ℓ2);
    ``cotangent(pred_TxD, v_TxD)`` is ∂ℓ_t/∂pred_t (T×D). The sequential rule differentiates ``loss``; the
    chunked rule only needs ``cotangent`` (the gradient of ℓ with respect to M's parameters is its
    vector–Jacobian product through M), so the two must agree: cotangent = ∇_pred Σ_t loss.

    Optional, data-dependent parameters (e.g. MIRAS' Yaad threshold δ_t): an objective may declare
    ``token_params``, a dict name → value of a fresh model (> 0). The neural memory then computes, per token
    and head, p_t = softplus(x_t w_p + b_p) (w_p small, b_p such that p = that value; learned like the gates θ,
    η, α), carries them in ``Gates.objective_T`` and every rule calls ``loss(pred_TxD, v_TxD, **params_T)``
    and ``cotangent(pred_TxD, v_TxD, **params_T)``, each parameter of shape T. Without ``token_params``
    nothing changes: no extra weights, and the two methods are called with (pred, v) only.
    """

    def loss(self, pred_TxD: jax.Array, v_TxD: jax.Array) -> jax.Array: ...

    def cotangent(self, pred_TxD: jax.Array, v_TxD: jax.Array) -> jax.Array: ...


@runtime_checkable
class UpdateRule(Protocol):
    """How the memory evolves (Eq 13–14, 16) and is read (Eq 15), for one head of one sequence.

    ``init_state(params0)`` returns the :class:`RuleState` at the start of a sequence (use
    :func:`init_rule_state`); ``params0`` is M_0 (the memory model's pytree, leaves possibly with leading
    batch axes). The neural memory calls ``rule(model, state, q_TxD, k_TxD, v_TxD, gates, aligned=...,
    objective=...)`` once per head and batch element (under ``jax.vmap``) and expects ``(y_TxD, new_state)``:
    the retrievals y_t = M*(q_t) and the :class:`RuleState` after the piece. ``gates`` is a :class:`Gates`.
    ``aligned=True`` promises state.pos == 0 (a chunk boundary) — a rule may ignore it. ``objective`` is the
    :class:`Objective` whose gradient drives the update: a rule must use it (or raise for objectives it does
    not support). Calling the rule on x[:a] then x[a:] with the carried state equals one call on x.
    ``chunk_size`` is b of Eq 16.
    """

    chunk_size: int

    def init_state(self, params0: PyTree) -> RuleState: ...

    def __call__(
        self,
        model: MemoryModel,
        state: RuleState,
        q_TxD: jax.Array,
        k_TxD: jax.Array,
        v_TxD: jax.Array,
        gates: Gates,
        *,
        aligned: bool = False,
        objective: Objective | None = None,
    ) -> tuple[jax.Array, RuleState]: ...


@runtime_checkable
class AttentionBlock(Protocol):
    """Short-term memory (kind ``attention``): causal attention over a sequence, or continued from a cache.

    Built by ``factory(config, *, d_model, num_heads, num_persistent, rope_base, rngs)`` — the variant passes
    the model width, its head count, the number N_p of persistent tokens (Eq 19) the attention must learn and
    attend to, the RoPE base and the ``nnx.Rngs`` to draw parameters from — and called by titans-attention's
    mixers exactly so:

    - ``attn(x_BxTxD, *, prefix_BxTxD=None, positions=None)`` → y_BxTxD: the full causal pass; ``positions``
      (T or B×T; default 0 … T−1) are absolute positions (the MAC mixer runs one segment at a time);
    - ``attn.prefill(x_BxTxD, *, prefix_BxTxD=None)`` → (y_BxTxD, cache): the full pass plus the cache;
    - ``attn.decode(x_BxTxD, cache, *, prefix_BxTxD=None)`` → (y_BxTxD, cache): T ≥ 1 further tokens;
    - ``attn.init_cache(batch_size)`` → an empty cache (a pytree of fixed shapes).

    prefill(x[:, :a]) then decode(x[:, a:]) must equal the full pass, and output t may depend on inputs ≤ t
    only. ``prefix_BxTxD`` holds MAC's memory rows h_j (Eq 21–22), visible to tokens i ≥ j of the same
    segment; only the memory-as-context mixer passes them, and it also reads the attention's ``segment``
    (int) — an attention that takes no prefix rows must raise when given some.
    """

    def __call__(
        self, x_BxTxD: jax.Array, *, prefix_BxTxD: jax.Array | None = None, positions: jax.Array | None = None
    ) -> jax.Array: ...

    def init_cache(self, batch_size: int) -> PyTree: ...

    def prefill(self, x_BxTxD: jax.Array, *, prefix_BxTxD: jax.Array | None = None) -> tuple[jax.Array, PyTree]: ...

    def decode(
        self, x_BxTxD: jax.Array, cache: PyTree, *, prefix_BxTxD: jax.Array | None = None
    ) -> tuple[jax.Array, PyTree]: ...


@runtime_checkable
class Variant(Protocol):
    """A whole model (token ids → logits), built by ``factory(config, rngs=...)`` from a validated spec.

    ``__call__(tokens_BxT)`` → logits B×T×V (training and evaluation); ``prefill(tokens_BxT)`` → (logits,
    cache) and ``decode(tokens_BxT, cache)`` → (logits, cache) continue a sequence (generation: prefill the
    prompt, then decode token by token); ``init_cache(batch_size)`` → an empty cache. titans-train reads the
    vocabulary from the config's ``vocab_size`` (256 = bytes when it has none).
    """

    def __call__(self, tokens_BxT: jax.Array) -> jax.Array: ...

    def init_cache(self, batch_size: int) -> PyTree: ...

    def prefill(self, tokens_BxT: jax.Array) -> tuple[jax.Array, PyTree]: ...

    def decode(self, tokens_BxT: jax.Array, cache: PyTree) -> tuple[jax.Array, PyTree]: ...
