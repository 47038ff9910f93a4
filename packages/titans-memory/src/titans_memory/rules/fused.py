"""The ``fused`` update rule: the chunk loop of Eq 13–16 as one Pallas kernel (rules/fused_kernel.py for the
matrix memory, rules/fused_mlp_kernel.py for the two-layer MLP memory).

Same semantics as ``momentum_scan`` (and so as the ``sequential`` reference): inside a chunk every gradient is taken at
the chunk-start weights M_{t'} (Eq 16), tokens read M_{t'} (Eq 15, ``read: chunk``), and (M, S) are carried to each
chunk's end by the unrolled recurrences of Eq 13–14. Where ``momentum_scan`` runs a ``lax.scan`` of XLA ops per
chunk, ``fused`` runs every chunk of a (batch, head) inside one kernel program, with M_{t'}, M and S kept on chip;
``NeuralMemory``'s vmap over batch and heads becomes the kernel's grid (one launch per layer call).

What it supports (decisions, checked at build time by :meth:`FusedRule.check_model`, never a silent fallback):
- memory: a model that declares what it is, never recognised by its class:
  - the matrix memory (``mlp`` with ``depth: 1``, M(x) = x W), or any model that declares ``matrix_param`` (the
    name of its single D×D parameter, applied as x W);
  - the two-layer MLP memory (``mlp`` with ``depth: 2``, any expansion and activation, ``residual_norm`` true:
    M(x) = x + γ ⊙ LN(W_1 σ(W_0 x)), or false: W_1 σ(W_0 x)), or any model that declares that form as its
    ``two_layer_form`` (a ``memory_models.TwoLayerForm``: the activation, the norm, the parameter names).
  Deeper or other memories (``mlp`` with ``depth`` ≥ 3, the plugins' SwiGLU memory, …) raise a
  :class:`FusedUnsupportedError` that names the model and says to use ``momentum_scan``: a deeper MLP would need
  a kernel whose per-layer state list is unrolled at trace time, not written until a depth-3 memory is needed.
- objective: any whose ``cotangent`` is elementwise jnp code (all built-ins); it is traced inside the kernel.
- ``read: chunk`` only; ``read: token`` is rejected when the config is validated.
- per-channel α (matrix memory only, as everywhere), the surprise clamp, a start in the middle of a chunk
  (``state.pos`` > 0), bf16 inputs with float32 state (the products run in the inputs' dtype, the state stays in its
  own, as in ``momentum_scan``).

Training: the kernel call is a ``jax.custom_vjp`` (``chunk_loop_with_vjp``, rules/fused_kernel.py) whose forward
pass is the kernel, also writing each chunk's start state (M_{t'}, M, S), and whose backward pass is a second Pallas
kernel (rules/fused_backward.py) that walks the chunks in reverse and takes the VJP of the same per-chunk step: no
second forward pass of the chunk loop. The padding and the gate-only coefficients around the call are plain JAX,
differentiated as such. The outer gradients equal ``momentum_scan``'s (float64, tests/memory/test_fused_backward.py).

Backend: ``interpret`` None (default) picks the Pallas interpreter on CPU and the compiled kernel elsewhere, from
``jax.default_backend()`` at trace time; true/false force it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
from pydantic import Field, model_validator
from titans_core import MemoryModel, Objective
from titans_core.errors import TitansUserError

from titans_memory.memory_models import TwoLayerForm
from titans_memory.objectives import resolve
from titans_memory.rules.base import Gates, RuleBase, RuleState, UpdateRuleConfig, mask_gates
from titans_memory.rules.fused_kernel import matrix_chunk_loop
from titans_memory.rules.fused_mlp_kernel import two_layer_chunk_loop
from titans_memory.rules.momentum_scan import chunk_coefficients


class FusedUnsupportedError(TitansUserError, ValueError):
    """The ``fused`` rule was paired with a memory model (or option) its kernel does not implement."""


class FusedConfig(UpdateRuleConfig):
    """Options of the ``fused`` rule: those of every rule, plus the kernel's execution mode."""

    # The kernel implements the chunk-start read only, so this rule's default differs from the other rules' (token).
    read: Literal["chunk", "token"] = Field(
        "chunk", description="chunk only: token t reads M_{t'}, the chunk-start weights (read-before-write, Eq 15)"
    )
    interpret: bool | None = Field(
        None,
        description="run the Pallas kernel in interpret mode; default: interpret on CPU, compiled elsewhere",
    )

    @model_validator(mode="after")
    def _chunk_read_only(self):
        _require_chunk_read(self.read)
        return self


def _require_chunk_read(read: str) -> None:
    """The kernel implements the chunk-start read only (checked on validation and again after overrides)."""
    if read != "chunk":
        raise ValueError(f"update_rule fused supports read: chunk only, got read: {read}; use momentum_scan")


def matrix_param(model: MemoryModel) -> str | None:
    """The name of the single D×D parameter of a matrix memory (M(x) = x W), or None if the model is not one."""
    declared = getattr(model, "matrix_param", None)
    return declared if isinstance(declared, str) else None


def two_layer_form(model: MemoryModel) -> TwoLayerForm | None:
    """The declared two-layer MLP form of a memory (``two_layer_form``), or None if the model declares none."""
    declared = getattr(model, "two_layer_form", None)
    return declared if isinstance(declared, TwoLayerForm) else None


def chunk_loop(model: MemoryModel) -> Callable | None:
    """The kernel that implements this model, as fn(start, memory, surprise, q, k, v, coefs, **options) ->
    (y, start, memory, surprise) on parameter dicts (differentiable: its backward pass is a kernel too); None if no
    kernel does."""
    name = matrix_param(model)
    if name is not None:

        def matrix(start, memory, surprise, *args, **options):
            y, *trees = matrix_chunk_loop(start[name], memory[name], surprise[name], *args, **options)
            return y, *({name: x} for x in trees)

        return matrix
    form = two_layer_form(model)
    if form is not None:
        return lambda *args, **options: two_layer_chunk_loop(form, *args, **options)
    return None


class FusedRule(RuleBase):
    """The chunked rule of ``momentum_scan`` run as one Pallas kernel per call (see the module docstring)."""

    def __init__(self, config: FusedConfig | None = None, **overrides):
        cfg = config or FusedConfig()
        cfg = cfg.model_copy(update=overrides) if overrides else cfg
        shared = {field: getattr(cfg, field) for field in UpdateRuleConfig.model_fields if field != "name"}
        if not isinstance(cfg, FusedConfig):
            cfg = FusedConfig(**shared)
        _require_chunk_read(cfg.read)  # re-check after overrides (model_copy does not validate)
        super().__init__(cfg)
        self.config: FusedConfig = cfg

    def check_model(self, model: MemoryModel, objective: Objective | None = None) -> None:
        """Build-time check (NeuralMemory calls it): raise :class:`FusedUnsupportedError` for a model the kernel
        does not implement."""
        token_params = getattr(objective, "token_params", None)  # e.g. yaad's per-token δ_t
        if token_params:
            raise FusedUnsupportedError(
                f"update_rule fused does not pass per-token objective parameters; the objective "
                f"{type(objective).__name__} has {sorted(token_params)}: use update_rule momentum_scan"
            )
        # every other objective's cotangent is elementwise jnp code, traced inside the kernel
        if chunk_loop(model) is None:
            name = type(model).__name__
            depth: Any = getattr(getattr(model, "config", None), "depth", None)
            detail = "" if depth is None else f" (depth {depth})"
            raise FusedUnsupportedError(
                f"update_rule fused implements the matrix memory (mlp with depth: 1) and the two-layer MLP memory "
                f"(mlp with depth: 2) only; the memory model {name}{detail} is not supported: use update_rule "
                f"momentum_scan"
            )

    def _interpret(self) -> bool:
        if self.config.interpret is not None:
            return self.config.interpret
        return jax.default_backend() == "cpu"

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
        store_T: jax.Array | None = None,
    ) -> tuple[jax.Array, RuleState]:
        """``aligned=True`` promises state.pos == 0 (no padding chunk); ``objective``: the inner loss (default ℓ2);
        ``store_T``: the store mask (1 write, 0 skip: the token is read, M and S stay exactly as they were), as in
        ``momentum_scan``."""
        self.check_model(model, objective)
        objective = resolve(objective)
        store = jnp.ones(q_TxD.shape[0], bool) if store_T is None else store_T.astype(bool)
        return self._forward(chunk_loop(model), objective, state, q_TxD, k_TxD, v_TxD, gates, aligned, store)

    def _forward(self, loop, objective, state: RuleState, q, k, v, gates: Gates, aligned: bool, store_T: jax.Array):
        """Pad to whole chunks (tokens at offset pos; padding is the identity: θ = 0, η = 1, α = 0, masked), compute
        the gate-only coefficients per chunk, run the kernel, cut the outputs back out."""
        T, D = q.shape
        b = self.chunk_size
        if T == 0:
            return jnp.zeros_like(q), state
        offset = 0 if aligned else state.pos
        n = math.ceil(T / b) if aligned else math.ceil((T + b - 1) / b)
        L = n * b

        def place(x, fill):
            buf = jnp.full((L,) + x.shape[1:], fill, x.dtype)
            return jax.lax.dynamic_update_slice_in_dim(buf, x, offset, axis=0)

        gates = mask_gates(gates, store_T)  # skipped tokens: θ = 0, η = 1, α = 0, and out of the write mask
        slots = jnp.arange(L)
        mask = ((slots >= offset) & (slots < offset + T)).astype(gates.theta_T.dtype)
        mask = mask * place(store_T.astype(mask.dtype), 0.0)
        theta, eta, alpha = place(gates.theta_T, 0.0), place(gates.eta_T, 1.0), place(gates.alpha_TxC, 0.0)
        C = alpha.shape[-1]
        chunked = lambda x: x.reshape((n, b) + x.shape[1:])  # noqa: E731
        a_nxb, m_nxbxC, keepM_nxC, keepS_n, sToM_nxC = jax.vmap(chunk_coefficients)(
            chunked(theta), chunked(eta), chunked(alpha), chunked(mask)
        )
        closes = ((jnp.arange(1, n + 1) * b) <= offset + T).astype(keepS_n.dtype)
        coefs = (
            a_nxb.reshape(L, 1),
            m_nxbxC.reshape(L, C),
            keepM_nxC,
            keepS_n[:, None],
            sToM_nxC,
            closes[:, None],
        )
        y, start, memory, surprise = loop(
            state.start,
            state.memory,
            state.surprise,
            place(q, 0.0),
            place(k, 0.0),
            place(v, 0.0),
            coefs,
            chunk_size=b,
            cotangent=objective.cotangent,
            max_grad_norm=self.config.max_grad_norm,
            interpret=self._interpret(),
        )
        y_TxD = jax.lax.dynamic_slice_in_dim(y, offset, T, axis=0)
        pos = ((jnp.asarray(offset, jnp.int32) + T) % b).astype(jnp.int32)
        return y_TxD, RuleState(start, memory, surprise, pos)
