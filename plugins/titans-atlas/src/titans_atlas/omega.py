"""The ``omega`` and ``atlas`` update rules: ATLAS' Omega rule (arXiv 2505.23735 §3) in Titans' chunked form.

Titans fits the memory to the current token only (Eq 12–14 of arXiv 2501.00663). The Omega rule fits it to a
sliding window of the last c tokens, Σ_{i=t−c+1..t} γ_i ℓ(M; k_i, v_i), with Titans' momentum and forgetting.
Per token t, with t' the start of t's chunk (chunk size b) and u_i = ∇ℓ(M_{t'}; k_i, v_i):

    g_t = Σ_{i = max(1, t−c+1)..t} w_{t,i} u_i                    (the gradient of the window loss, at M_{t'})
    S_t = η_t S_{t−1} − g_t                                        (momentum, Titans Eq 13)
    M_t = (1 − α_t) M_{t−1} + S_t                                  (forgetting, Titans Eq 14;  ``omega``)
    M_t = (1 − α_t) M_{t−1} + θ_t NS5(S_t)                         (``atlas``: the Muon update, see newton_schulz.py)
    y_t = M_{t'}(q_t)                                               (read-before-write, Titans Eq 15)

and M_{t'} := M_t when t closes a chunk. With c = 1 the ``omega`` rule is Titans' (``momentum_scan``) exactly.

Decisions where the paper is silent or where this library's interfaces decide:

- **γ, the data-dependent token weights.** The rule receives Titans' gates θ, η, α; a learned γ of its own would
  need a fourth gate. ``gamma: theta`` (default): w_{t,i} = θ_i — each token of the window counts with its own
  data-dependent step θ_i = max_lr·σ(x_i w_θ) (the paper's product η_t γ_i^{(t)} of a step and a token weight is
  θ_i). ``gamma: uniform``: w_{t,i} = θ_t (the step of the updating token; all tokens of the window weigh the same).
  ``normalize: true`` (default) divides w by c, so that the step size does not grow with the window (a token is in c
  windows). Both read as Titans' rule at c = 1.
- **Chunk-start gradients.** Every gradient of g_t is taken at M_{t'}, the chunk-start weights of the *updating*
  token t — including those of window tokens from earlier chunks (they are re-linearised at the newer weights), so
  all gradients of a chunk come from one forward/backward pass over its b tokens plus the c − 1 before it.
- **The window crosses calls.** The last c − 1 keys, values and θ travel in ``RuleState.extra`` (with a validity
  flag: before the first token the window is shorter), so x[:a] then x[a:] equals x, and decoding token by token
  equals the full pass. ``init_extra`` gives NeuralMemory that state from the first token on.
- **Atlas.** θ_t NS5(S_t): NS5 removes the scale of S, so the step θ_t is applied after it (ATLAS' η_t). The
  chunked form materialises S_t for every token of a chunk (b parameter trees), since NS5 is not linear.
- Only ``read: chunk`` (read-before-write); no clamp on the surprise norm.

The chunked form (``OmegaRule.__call__``). Inside a chunk the gradients u_j are fixed, so with R_x(s, t) =
∏_{t<l≤s} x_l and W the b × (c−1+b) window matrix (w_{t,j} on the band t ≤ j ≤ t + c − 1 of the extended chunk):

    S_end = R_η(b, 0) S_0 − Σ_j a_j u_j,            a_j = Σ_t R_η(b, t) W_{t,j}
    M_end = R_γ(b, 0) M_0 + s_M S_0 − Σ_j m_j u_j,  m_j = Σ_t G_t W_{t,j},  G_t = Σ_{s≥t} R_γ(b, s) R_η(s, t)

(γ = 1 − α here), and each weighted gradient sum Σ_j c_j u_j is one vector–Jacobian product of M's forward pass on the
extended chunk's keys. A call that starts mid-chunk (state.pos > 0) places its tokens at offset pos of zero-padded
whole chunks, as ``momentum_scan`` does; padding slots have θ = 0, η = 1, α = 0 and add nothing.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import jax
import jax.numpy as jnp
from pydantic import Field
from titans_core import ComponentConfig, Gates, MemoryModel, Objective, RuleState, TitansUserError, init_rule_state
from titans_memory import L2Objective

from titans_atlas.newton_schulz import orthogonalize_tree

__all__ = ["AtlasRuleConfig", "OmegaRule", "OmegaRuleConfig", "range_products", "window_matrix"]

PyTree = Any


class OmegaRuleConfig(ComponentConfig):
    """Options of the ``omega`` update rule."""

    chunk_size: int = Field(16, ge=1, description="b: gradients inside a chunk are taken at its start weights")
    context: int = Field(4, ge=1, description="c: the memory is fitted to the last c tokens (1 = Titans)")
    gamma: Literal["theta", "uniform"] = Field(
        "theta", description="token weights of the window: theta: θ_i of each token; uniform: θ_t of the updating one"
    )
    normalize: bool = Field(True, description="divide the window's weights by c (the step does not grow with c)")
    orthogonalize: bool = Field(False, description="the Atlas update: M_t = (1 − α_t) M_{t−1} + θ_t NS(S_t)")
    ns_steps: int = Field(5, ge=1, le=20, description="Newton–Schulz steps of the Atlas update")


class AtlasRuleConfig(OmegaRuleConfig):
    """Options of the ``atlas`` update rule: ``omega`` with the Newton–Schulz (Muon) update on by default."""

    orthogonalize: bool = Field(True, description="the Atlas update: M_t = (1 − α_t) M_{t−1} + θ_t NS(S_t)")


def range_products(x_bxC: jax.Array) -> jax.Array:
    """R(s, t) = ∏_{t<l≤s} x_l for t ≤ s, 0 for t > s (b×b×C); exact for zeros (no division)."""
    b = x_bxC.shape[0]
    l = jnp.arange(b)
    inside_bxbxb = (l[None, None, :] > l[None, :, None]) & (l[None, None, :] <= l[:, None, None])
    factors = jnp.where(inside_bxbxb[..., None], x_bxC[None, None], 1.0)
    return jnp.where((l[None, :] <= l[:, None])[..., None], jnp.prod(factors, axis=2), 0.0)


def window_matrix(config: OmegaRuleConfig, theta_b, mask_b, theta_J, valid_J) -> jax.Array:
    """W (b × J, J = c − 1 + b): the weight of extended token j in the window gradient g_t of chunk token t."""
    b, P = theta_b.shape[0], config.context - 1
    t, j = jnp.arange(b)[:, None], jnp.arange(P + b)[None, :]
    band = ((j >= t) & (j <= t + P)).astype(theta_b.dtype)
    weight = theta_J[None, :] if config.gamma == "theta" else theta_b[:, None]
    scale = 1.0 / config.context if config.normalize else 1.0
    return band * weight * valid_J[None, :] * mask_b[:, None] * scale


def _decay(tree: PyTree, keep_C: jax.Array) -> PyTree:
    """keep ⊙ M: a per-channel factor (C > 1) broadcasts over the last (output-channel) axis."""
    return jax.tree.map(lambda x: x * keep_C.astype(x.dtype), tree)


class OmegaRule:
    """The Omega rule (``omega``) and, with ``orthogonalize``, the Atlas rule (``atlas``); see the module
    docstring. ``titans_atlas.reference.omega_reference`` is its per-token oracle."""

    def __init__(self, config: OmegaRuleConfig | None = None, **overrides):
        cfg = config if config is not None else OmegaRuleConfig()
        self.config = cfg.model_copy(update=overrides) if overrides else cfg
        self.chunk_size = self.config.chunk_size

    def init_state(self, params0: PyTree) -> RuleState:
        """M_0, S_0 = 0, pos 0 and an empty window (``extra`` = (): built at the first call)."""
        return init_rule_state(params0)

    def check_model(self, model: MemoryModel, objective: Objective | None = None) -> None:
        """Build-time check (NeuralMemory calls it): the window loss calls the objective without per-token
        parameters, so an objective that declares ``token_params`` (e.g. miras' ``yaad``) is refused here."""
        del model
        token_params = getattr(objective, "token_params", None)
        if token_params:
            raise TitansUserError(
                f"update_rule {type(self).__name__} does not pass per-token objective parameters; the objective "
                f"{type(objective).__name__} has {sorted(token_params)}: use update_rule momentum_scan"
            )

    def init_extra(self, batch_shape: tuple[int, ...], dim: int, dtype=jnp.float32) -> PyTree:
        """The empty window (RuleState.extra) with leading axes ``batch_shape``; () when c = 1 (no window)."""
        P = self.config.context - 1
        if P == 0:
            return ()
        z = lambda *shape: jnp.zeros(tuple(batch_shape) + shape, dtype)  # noqa: E731
        return {"k": z(P, dim), "v": z(P, dim), "theta": z(P), "valid": z(P)}

    def __call__(
        self,
        model: MemoryModel,
        state: RuleState,
        q_TxD,
        k_TxD,
        v_TxD,
        gates: Gates,
        *,
        aligned: bool = False,
        objective: Objective | None = None,
    ) -> tuple[jax.Array, RuleState]:
        """``aligned=True`` promises state.pos == 0. ``objective``: the inner loss (default ℓ2)."""
        objective = objective if objective is not None else L2Objective()
        T, D = k_TxD.shape
        b, P, dtype = self.chunk_size, self.config.context - 1, k_TxD.dtype
        window = state.extra if isinstance(state.extra, dict) else self.init_extra((), D, dtype)
        if T == 0:
            return jnp.zeros_like(q_TxD), state._replace(extra=window)
        offset = 0 if aligned else state.pos
        n_chunks = math.ceil(T / b) if aligned else math.ceil((T + b - 1) / b)
        L = n_chunks * b

        def place(x, fill, length, at):
            buf = jnp.full((length,) + x.shape[1:], fill, x.dtype)
            return jax.lax.dynamic_update_slice_in_dim(buf, x, at, axis=0)

        # per slot: the chunks' own tokens at offset pos; padding is the identity (θ = 0, η = 1, α = 0)
        slots = jnp.arange(L)
        mask_L = ((slots >= offset) & (slots < offset + T)).astype(dtype)
        xs = (q_TxD, gates.theta_T, gates.eta_T, gates.alpha_TxC)
        q_L, theta_L, eta_L, alpha_LxC = (place(x, f, L, offset) for x, f in zip(xs, (0.0, 0.0, 1.0, 0.0), strict=True))
        # the timeline of window tokens, P + L long: the carried window at [offset, offset + P), then the new tokens
        ones_T = jnp.ones((T,), dtype)
        if P:
            carried = (window["k"], window["v"], window["theta"], window["valid"])
        else:
            carried = (jnp.zeros((0, D), dtype),) * 2 + (jnp.zeros((0,), dtype),) * 2
        timeline = []
        for old, new in zip(carried, (k_TxD, v_TxD, gates.theta_T, ones_T), strict=True):
            line = place(old.astype(new.dtype), 0.0, P + L, offset)
            timeline.append(jax.lax.dynamic_update_slice_in_dim(line, new, offset + P, axis=0))
        ext_idx = jnp.arange(n_chunks)[:, None] * b + jnp.arange(P + b)[None, :]  # chunk n: timeline[n b, n b + P + b)
        k_ext, v_ext, theta_ext, valid_ext = (x[ext_idx] for x in timeline)
        by_chunk = lambda x: x.reshape((n_chunks, b) + x.shape[1:])  # noqa: E731
        closes = (jnp.arange(1, n_chunks + 1) * b) <= offset + T
        inputs = tuple(by_chunk(x) for x in (q_L, theta_L, eta_L, alpha_LxC, mask_L))
        inputs += (k_ext, v_ext, theta_ext, valid_ext, closes)

        def body(carry, inp):
            start, memory, surprise = carry
            *chunk, close = inp
            y_bxD, memory, surprise = self._chunk(model, objective, start, memory, surprise, *chunk)
            start = jax.tree.map(lambda n, o: jnp.where(close, n, o), memory, start)  # M_{t'} := M_t at a close
            return (start, memory, surprise), y_bxD

        carry = (state.start, state.memory, state.surprise)
        (start, memory, surprise), y = jax.lax.scan(jax.checkpoint(body), carry, inputs)
        y_TxD = jax.lax.dynamic_slice_in_dim(y.reshape((L, D)), offset, T, axis=0)
        pos = ((jnp.asarray(offset, jnp.int32) + T) % b).astype(jnp.int32)
        if P:  # the last c − 1 tokens of the timeline (older ones from the carried window when T < c − 1)
            last = [jax.lax.dynamic_slice_in_dim(x, offset + T, P, axis=0) for x in timeline]
            window = {
                name: x.astype(window[name].dtype) for name, x in zip(("k", "v", "theta", "valid"), last, strict=True)
            }
        return y_TxD, RuleState(start, memory, surprise, pos, window)

    def _chunk(self, model, objective, start, memory, surprise, q_bxD, theta_b, eta_b, alpha_bxC, mask_b, *ext):
        """One chunk: reads M_{t'} = ``start``, takes every window gradient at it and carries (M, S) to its end."""
        k_JxD, v_JxD, theta_J, valid_J = ext
        y_bxD = model.apply(start, q_bxD)  # read-before-write (Titans Eq 15)
        pred_JxD, vjp = jax.vjp(lambda p: model.apply(p, k_JxD), start)
        cot_JxD = objective.cotangent(pred_JxD, v_JxD)  # ∂ℓ_j/∂M(k_j): u_j = vjp(cot_j)
        grad_sum = lambda w_JxC: vjp(-w_JxC * cot_JxD)[0]  # −Σ_j w_j u_j  # noqa: E731
        W_bxJ = window_matrix(self.config, theta_b, mask_b, theta_J, valid_J)
        R_eta_bxb = range_products(eta_b[:, None])[..., 0]
        R_keep_bxC = range_products(1.0 - alpha_bxC)[-1]  # R_γ(b, s): forgetting from after s to the chunk's end
        eta_upto_b = jnp.cumprod(eta_b)  # R_η(s, 0)·η_0: what S_s keeps of S_0
        keep_M_C = jnp.prod(1.0 - alpha_bxC, axis=0)
        if not self.config.orthogonalize:
            a_J = R_eta_bxb[-1] @ W_bxJ
            G_bxC = jnp.einsum("sc,s,st->tc", R_keep_bxC, mask_b, R_eta_bxb)
            m_JxC = W_bxJ.T @ G_bxC
            s_to_M_C = jnp.einsum("sc,s,s->c", R_keep_bxC, mask_b, eta_upto_b)
            new_surprise = jax.tree.map(lambda s, d: eta_upto_b[-1] * s + d, surprise, grad_sum(a_J[:, None]))
            new_memory = jax.tree.map(
                jnp.add, _decay(memory, keep_M_C), jax.tree.map(jnp.add, _decay(surprise, s_to_M_C), grad_sum(m_JxC))
            )
            return y_bxD, new_memory, new_surprise
        # Atlas: S_s for every token s of the chunk (NS5 is not linear), then M_end = keep M_0 + Σ_s R_γ θ_s NS5(S_s)
        A_bxJ = R_eta_bxb @ W_bxJ  # S_s = R_η(s,0)η_0 S_0 − Σ_j A_{s,j} u_j
        d_S = jax.vmap(lambda a_J: grad_sum(a_J[:, None]))(A_bxJ)
        S_b = jax.tree.map(lambda s, d: eta_upto_b.reshape((-1,) + (1,) * s.ndim) * s[None] + d, surprise, d_S)
        O_b = jax.vmap(lambda s: orthogonalize_tree(s, self.config.ns_steps))(S_b)
        coef_bxC = R_keep_bxC * (mask_b * theta_b)[:, None]
        new_memory = jax.tree.map(
            lambda m, o: (
                m + jnp.sum(coef_bxC.reshape(coef_bxC.shape[:1] + (1,) * (o.ndim - 2) + coef_bxC.shape[1:]) * o, 0)
            ),
            _decay(memory, keep_M_C),
            O_b,
        )
        new_surprise = jax.tree.map(lambda s: s[-1], S_b)
        return y_bxD, new_memory, new_surprise
