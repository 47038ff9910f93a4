"""The ``momentum_scan`` update rule (default): chunked and parallel (paper §3.2).

Inside a chunk every gradient is taken at the chunk-start weights M_{t'} (Eq 16), so the per-token gradients
u_i = ∇ℓ(M_{t'}; x_i) are all known at once, and the recurrences

    S_t = η_t S_{t−1} − θ_t u_t          (Eq 13)
    M_t = (1 − α_t) M_{t−1} + S_t        (Eq 14)

are linear. Unrolled to the chunk's end (token b), with P_x(i..j) = ∏_{i ≤ l ≤ j} x_l and γ = 1 − α:

    S_b = P_η(1..b) S_0 − Σ_i a_i u_i,              a_i = θ_i P_η(i+1..b)
    M_b = P_γ(1..b) M_0 + η_1 G_1 S_0 − Σ_i θ_i G_i u_i,
    G_i = Σ_{t ≥ i} P_γ(t+1..b) P_η(i+1..t)

The scalar (or per-channel) coefficients are einsums of one matrix of span products per gate, P_x[t, i] =
P_x(i+1..t) (rules/spans.py: a ``cumprod`` and a hand-written derivative, not associative scans, so that the
training step traces and compiles quickly). The weighted sums Σ_i c_i u_i are vector–Jacobian products of the memory's
forward pass on the chunk's keys with the cotangent c_i · ∂ℓ_i/∂M(k_i) (the objective's ``cotangent``;
2(M(k_i) − v_i) for ℓ2): the gradient of a weighted sum of losses is the weighted sum of gradients, so no
parameter tree is ever materialised per token (only per chunk). Models may supply
``read_and_linearize`` (MLPMemory does): one hand-written backward pass serves both weightings (a and θG).
Chunks run in sequence under ``lax.scan`` (the next chunk's gradients depend on M), with two-level checkpointing
(``_grouped_scan``) so training memory grows linearly with sequence length, with a small slope.

A fresh sequence (``aligned=True``, pos = 0) is cut into whole chunks, each closing, so M_{t'} is the M the scan
carries, plus an unfinished tail. A call may instead start mid-chunk (``state.pos`` > 0, e.g. after a prefill that
ended mid-chunk): the tokens are placed at offset pos of a zero-padded buffer of whole chunks; padding tokens are the
identity (θ = 0, η = 1, α = 0, and they do not add S to M), so the result equals the sequential rule token for token.

``read: token`` (rules/token_read.py) keeps all of this (the gradients, the state update, the two paths, the
padding, the clamp) and only moves the read: token t reads
M_t = keep_t M_0 + s_to_M_t S_0 − Σ_{i ≤ t} m_{t,i} u_i, the same unrolling of Eq 13–14 carried to every
token instead of the chunk's end only.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from titans_core import MemoryModel, Objective

from titans_memory.objectives import resolve
from titans_memory.rules.base import (
    Gates,
    GradSums,
    PyTree,
    RuleBase,
    RuleState,
    clip_scale,
    decay,
    mask_gates,
    tree_norm,
)
from titans_memory.rules.spans import gate_spans
from titans_memory.rules.token_read import linearize_for_token_read, token_coefficients


def chunk_coefficients(
    theta_b: jax.Array, eta_b: jax.Array, alpha_bxC: jax.Array, mask_b: jax.Array, spans=None
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]:
    """Coefficients that carry (M_0, S_0, u_1..u_b) to the end of one chunk (see module docstring).

    Masked (padding) tokens must come with θ = 0, η = 1, α = 0; ``mask_b`` stops them from adding S to M.
    Returns (a_b, m_bxC, keep_M_C, keep_S, s_to_M_C): S_b = keep_S·S_0 − Σ a_i u_i and
    M_b = keep_M ⊙ M_0 + s_to_M ⊙ S_0 − Σ m_i ⊙ u_i (⊙ over the output-channel axis when C > 1).
    Every product over a span comes from one matrix per gate (``spans``: ``spans.gate_spans``' result when the
    caller has it already).
    """
    gamma_bxC = 1.0 - alpha_bxC
    eta_bxb, gamma_bxbxC = gate_spans(eta_b, alpha_bxC) if spans is None else spans  # [t, i]: P(i+1..t)
    gamma_after_bxC = gamma_bxbxC[-1]  # P_γ(i+1..b)
    eta_after_b = eta_bxb[-1]  # P_η(i+1..b)
    # G_i = Σ_{t ≥ i} mask_t P_γ(t+1..b) P_η(i+1..t)
    G_bxC = jnp.einsum("tc,ti->ic", mask_b[:, None] * gamma_after_bxC, eta_bxb)
    a_b = theta_b * eta_after_b
    m_bxC = theta_b[:, None] * G_bxC
    keep_M_C = gamma_bxC[0] * gamma_after_bxC[0]
    keep_S = eta_b[0] * eta_after_b[0]
    s_to_M_C = eta_b[0] * G_bxC[0]
    return a_b, m_bxC, keep_M_C, keep_S, s_to_M_C


def read_and_linearize(
    model: MemoryModel, params: PyTree, q_TxD: jax.Array, k_TxD: jax.Array
) -> tuple[jax.Array, jax.Array, GradSums]:
    """(M(q), M(k), grad_sums) — see ``MLPMemory.read_and_linearize``; models without that fast path use ``jax.vjp``.

    grad_sums(cot, *w_TxC) = one tree Σ_t w_t ⊙ ∂⟨cot_t, M(k_t)⟩/∂params per weighting: weighted sums of per-token
    gradients as vector–Jacobian products (the gradient of a weighted sum of losses is the weighted sum of gradients).
    """
    if hasattr(model, "read_and_linearize"):
        return model.read_and_linearize(params, q_TxD, k_TxD)
    pred, vjp = jax.vjp(lambda p: model.apply(p, k_TxD), params)
    return model.apply(params, q_TxD), pred, lambda cot, *ws: tuple(vjp(w * cot)[0] for w in ws)


def token_grad_norms(
    model: MemoryModel, params: PyTree, k_TxD: jax.Array, cot_TxD: jax.Array, grad_sums: GradSums
) -> jax.Array:
    """‖u_i‖ = ‖∂⟨cot_i, M(k_i)⟩/∂params‖ per token, for the surprise clamp: the model's ``grad_norms`` when it has
    one (MLPMemory: closed form), else one gradient tree per token from ``grad_sums`` (one-hot weightings, vmapped)."""
    if hasattr(model, "grad_norms"):
        return model.grad_norms(params, k_TxD, cot_TxD)
    one_hot = jnp.eye(k_TxD.shape[0], dtype=cot_TxD.dtype)[:, :, None]
    return jax.vmap(lambda w: tree_norm(grad_sums(cot_TxD, w)[0]))(one_hot)


def _grouped_scan(body, carry, xs):
    """``lax.scan(body, carry, xs)`` over n chunks with two-level rematerialisation.

    The chunks run in groups of G ≈ √n. The forward pass keeps only each group's starting carry; the backward pass
    re-runs one group at a time, keeping its chunks' starting carries, and each chunk's own checkpoint re-runs that
    chunk. The stored parameter-sized carries fall from n to ≈ 2√n per head (peak at B = 2, 4 heads, N = 4K: 824 →
    343 MiB) for one extra forward pass of the chunks, which on CPU is repaid by touching that much less fresh memory
    (forward+backward CPU time −6% at N = 4K, −3% at 1K, measured against one checkpoint per chunk).
    """
    n = xs[0].shape[0]
    G = max(1, round(math.sqrt(n)))
    n_groups, rest = divmod(n, G)
    chunk = jax.checkpoint(body)
    if n_groups <= 1:
        return jax.lax.scan(chunk, carry, xs)
    grouped = jax.tree.map(lambda x: x[: n_groups * G].reshape((n_groups, G) + x.shape[1:]), xs)
    carry, y = jax.lax.scan(jax.checkpoint(lambda c, group: jax.lax.scan(chunk, c, group)), carry, grouped)
    y = y.reshape((n_groups * G,) + y.shape[2:])
    if rest:
        carry, y_rest = jax.lax.scan(chunk, carry, jax.tree.map(lambda x: x[n_groups * G :], xs))
        y = jnp.concatenate([y, y_rest])
    return carry, y


class MomentumScanRule(RuleBase):
    """Chunked parallel form of Eq 13–14 and 16; equals ``SequentialRule`` (outputs, state and gradients)."""

    def _update(self, model: MemoryModel, objective: Objective, start, memory, surprise, inp):
        """One chunk: takes its gradients at ``start`` = M_{t'} (Eq 16) and carries (M, S) to its end; reads
        M_{t'} (``read: chunk``) or, for each token t, M_t (``read: token``, rules/token_read.py) (Eq 15)."""
        q_bxD, k_bxD, v_bxD, theta_b, eta_b, alpha_bxC, objective_b, mask_b = inp
        token_read = self.config.read == "token"
        # y = M_{t'}(q) (read-before-write, Eq 15; read: token defers it) and M_{t'}(k) linearised (Eq 12, 16)
        if token_read:
            pred_bxD, grad_sums, grads_and_read = linearize_for_token_read(model, start, q_bxD, k_bxD)
        else:
            y_bxD, pred_bxD, grad_sums = read_and_linearize(model, start, q_bxD, k_bxD)
        resid_bxD = objective.cotangent(pred_bxD, v_bxD, **objective_b)  # ∂ℓ_i/∂M(k_i); ℓ2: 2(M(k) − v)
        # −Σ_i a_i u_i and −Σ_i m_i u_i in one backward pass (the sign goes on the small residual, not on the trees)
        cot_bxD = -resid_bxD
        if self.config.max_grad_norm is not None:  # per-token ‖u_i‖, only when the clamp is on
            # (of −u_i: the same norms, from the backward pass the weighted sums below run on the same cotangent)
            norms = token_grad_norms(model, start, k_bxD, cot_bxD, grad_sums)
            theta_b = theta_b * clip_scale(norms, self.config.max_grad_norm)
        spans = gate_spans(eta_b, alpha_bxC)  # one pair of span-product matrices for both reads' coefficients
        a_b, m_bxC, keep_M, keep_S, s_to_M = chunk_coefficients(theta_b, eta_b, alpha_bxC, mask_b, spans)
        if token_read:  # ... and every y_t = M_t(q_t), M_t = keep_t M + s_to_M_t S − Σ_i m_{t,i} u_i
            coefs = token_coefficients(theta_b, eta_b, alpha_bxC, mask_b, spans)
            (d_S, d_M), y_bxD = grads_and_read(cot_bxD, (a_b[:, None], m_bxC), memory, surprise, *coefs)
        else:
            d_S, d_M = grad_sums(cot_bxD, a_b[:, None], m_bxC)
        new_surprise = jax.tree.map(lambda s, d: keep_S * s + d, surprise, d_S)
        new_memory = jax.tree.map(lambda m, s, d: m + s + d, decay(memory, keep_M), decay(surprise, s_to_M), d_M)
        return y_bxD, new_memory, new_surprise

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
        store_T: jax.Array | None = None,
    ) -> tuple[jax.Array, RuleState]:
        """``aligned=True`` promises state.pos == 0 (a chunk boundary): the chunk boundaries are known at trace
        time. ``objective``: the inner loss whose cotangent drives the update (default ℓ2, Eq 12). ``store_T``
        (1 write, 0 skip; default all 1): a skipped token is read but leaves M and S exactly unchanged — its gates
        act as θ = 0, η = 1, α = 0 and it joins the write mask of padding (``base.mask_gates``)."""
        dtype = q_TxD.dtype
        store = jnp.ones(q_TxD.shape[0], dtype) if store_T is None else store_T.astype(bool).astype(dtype)
        gates = mask_gates(gates, store_T)
        xs = (q_TxD, k_TxD, v_TxD, gates.theta_T, gates.eta_T, gates.alpha_TxC, gates.objective_T, store)
        run = self._aligned if aligned else self._general
        return run(model, resolve(objective), state, xs)

    def _aligned(self, model: MemoryModel, objective: Objective, state: RuleState, xs):
        """pos = 0: T // b whole chunks, each closing, so each reads the M it starts from and the scan carries only
        (M, S) (a third fewer per-chunk residuals than (M_{t'}, M, S)); then the unfinished tail of T mod b tokens."""
        T, b = xs[0].shape[0], self.chunk_size
        n_full, tail = divmod(T, b)
        memory, surprise, ys = state.memory, state.surprise, []  # pos = 0: the last chunk closed, so start = memory

        def body(carry, inp):
            memory, surprise = carry  # a whole chunk: it reads (and takes its gradients at) the M it starts from
            y, memory, surprise = self._update(model, objective, memory, memory, surprise, inp)
            return (memory, surprise), y

        if n_full:
            whole = jax.tree.map(lambda x: x[: n_full * b].reshape((n_full, b) + x.shape[1:]), xs)
            (memory, surprise), y = _grouped_scan(body, (memory, surprise), whole)
            ys.append(y.reshape((n_full * b,) + y.shape[2:]))
        start = memory
        if tail:
            rest = jax.tree.map(lambda x: x[n_full * b :], xs)
            y, memory, surprise = self._update(model, objective, start, memory, surprise, rest)
            ys.append(y)
        y_TxD = jnp.concatenate(ys) if ys else jnp.zeros_like(xs[0])  # (T = 0 leaves the state as it was)
        return y_TxD, RuleState(start, memory, surprise, jnp.asarray(tail, jnp.int32))

    def _general(self, model: MemoryModel, objective: Objective, state: RuleState, xs):
        """Any pos: the tokens go at offset pos of a zero-padded buffer of whole chunks (see module docstring)."""
        T, b = xs[0].shape[0], self.chunk_size
        offset = state.pos
        n_chunks = math.ceil((T + b - 1) / b)
        L = n_chunks * b

        def place(x, fill):
            buf = jnp.full((L,) + x.shape[1:], fill, x.dtype)
            return jax.lax.dynamic_update_slice_in_dim(buf, x, offset, axis=0)

        slots = jnp.arange(L)
        mask = ((slots >= offset) & (slots < offset + T)).astype(xs[0].dtype) * place(xs[7], 0.0)
        fills = (0.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # padding is the identity: θ = 0, η = 1, α = 0
        padded = tuple(place(x, f) for x, f in zip(xs[:6], fills, strict=True))
        padded += (jax.tree.map(lambda x: place(x, 1.0), xs[6]), mask)  # objective parameters: any finite value
        padded = jax.tree.map(lambda x: x.reshape((n_chunks, b) + x.shape[1:]), padded)
        closes = (jnp.arange(1, n_chunks + 1) * b) <= offset + T

        def body(carry, inp):
            start, memory, surprise = carry
            y, memory, surprise = self._update(model, objective, start, memory, surprise, inp[:-1])
            start = jax.tree.map(lambda n, o: jnp.where(inp[-1], n, o), memory, start)  # M_{t'} := M_t at a close
            return (start, memory, surprise), y

        carry = (state.start, state.memory, state.surprise)
        (start, memory, surprise), y = _grouped_scan(body, carry, padded + (closes,))
        y_TxD = jax.lax.dynamic_slice_in_dim(y.reshape((L,) + y.shape[2:]), offset, T, axis=0)
        pos = (jnp.asarray(offset, jnp.int32) + T) % b
        return y_TxD, RuleState(start, memory, surprise, pos.astype(jnp.int32))
