"""NeuralMemory: the Titans neural long-term memory as a Flax NNX module (paper §3.1, Eq 11–16).

Drop it into any Flax NNX model::

    mem = NeuralMemory(NeuralMemoryConfig(num_heads=4), d_model=256, rngs=nnx.Rngs(0))
    y_BxTxD, state = mem(x_BxTxD)                 # a fresh memory per sequence
    y2, state = mem(x2_BxTxD, state)              # ... carried on over the next piece

Per token and head: k_t = x_t W_K, v_t = x_t W_V, q_t = x_t W_Q (Eq 11, 15), each followed by a causal depthwise
convolution (kernel 4) and SiLU, with q and k ℓ2-normalised (the revision, §4.4); data-dependent gates
θ_t = max_lr·σ(x_t w_θ), η_t = σ(x_t w_η), α_t = σ(x_t w_α) (and softplus(x_t w_p) for each per-token parameter p the
objective declares in ``token_params``, e.g. Yaad's δ_t); the update rule evolves the memory (Eq 13–14, 16) by
gradients of the objective (the inner loss; ℓ2 of Eq 12 by default) and reads y_t = M*(q_t) (Eq 15); the
output is RMSNorm(y) ⊙ σ(x W_g), projected back to the model width.

Step size (the paper is silent on its range): θ_t ≤ max_lr = 0.01, starting at init_lr = 0.001. A chunk of C tokens
adds C per-token steps, and momentum η ≈ 0.9 multiplies them by up to 1/(1 − η) ≈ 10, so the effective step per chunk
is up to ~100·θ at C = 16. With max_lr 0.05 the outer gradients of MAC and LMM exploded (norms 1e4–1e5) at 512-token
sequences and clipping stalled training; 0.01 kept them below 1 (see the README's results).

Causality: with the rule option ``read: token`` (the default) token t reads M_t, the memory after its own write
(rules/token_read.py), which depends on tokens ≤ t only. With ``read: chunk`` (read-before-write) tokens of chunk c
read the memory as it stood after chunk c−1, never after their own or later tokens; with chunk size 1 token t
reads M_{t−1}.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx
from pydantic import Field, model_validator
from titans_core.config import ComponentConfig
from titans_core.contracts import check_contract
from titans_core.layers import CausalDepthwiseConv, RMSNorm, head_width, linear
from titans_core.protocols import MemoryModel, Objective, UpdateRule
from titans_core.registry import get_registry
from titans_core.rule_contract import declared_gates
from titans_core.spec import ComponentRef, component_field

from titans_memory.rules.base import Gates, PyTree, RuleState


class NeuralMemoryConfig(ComponentConfig):
    """Options of the neural long-term memory (one per layer that carries a memory)."""

    num_heads: int = Field(4, ge=1, description="independent memories, one per head")
    head_dim: int | None = Field(None, ge=1, description="width per head; default d_model // num_heads")
    model: ComponentRef("memory_model") = component_field("memory_model", "mlp")  # type: ignore[valid-type]
    rule: ComponentRef("update_rule") = component_field("update_rule", "momentum_scan")  # type: ignore[valid-type]
    objective: ComponentRef("objective") = component_field("objective", "l2")  # type: ignore[valid-type]
    max_lr: float = Field(0.01, gt=0, description="θ_t = max_lr · σ(x_t w_θ + b_θ) (see the module docstring)")
    init_lr: float = Field(0.001, gt=0, description="θ of a fresh model (sets b_θ); must be < max_lr")
    init_momentum: float = Field(0.9, gt=0, lt=1, description="η of a fresh model (sets b_η)")
    init_forget: float = Field(0.01, gt=0, lt=1, description="α of a fresh model (sets b_α): small, so it remembers")
    alpha_per_channel: bool = Field(False, description="one α per output channel (matrix memory only)")
    conv_kernel: int = Field(4, ge=0, description="causal depthwise conv after the q/k/v projections; 0 = none")
    silu: bool = Field(True, description="SiLU after the q/k/v projections (and conv)")
    qk_l2norm: bool = Field(True, description="ℓ2-normalise q and k")
    learn_init: bool = Field(True, description="M_0 is a learned outer parameter; false: a fixed, seeded init")
    output_gate: bool = Field(True, description="multiply the read-out by σ(x W_g)")

    @model_validator(mode="after")
    def _lr_below_max(self):
        if self.init_lr >= self.max_lr:
            raise ValueError(f"init_lr must be < max_lr ({self.max_lr}), got {self.init_lr}")
        return self


class MemoryState(NamedTuple):
    """Everything needed to continue a sequence: the rule state per batch element and head (leaves B×H×…, ``pos``
    shared), and the causal-convolution caches (B×(K−1)×channels): ``q``/``kv`` of the update stream and ``read_q``
    of the read-only stream (``retrieve``). Empty when the convolution is off."""

    rule: RuleState
    conv: dict[str, jax.Array]


def _logit(p: float) -> float:
    return math.log(p) - math.log1p(-p)


def _softplus_inverse(y: float) -> float:
    """x with softplus(x) = y > 0."""
    return y + math.log(-math.expm1(-y))


class FixedInit(nnx.Variable):
    """M_0 when it is not learned (``learn_init=False``): a deterministic, seeded init that the optimiser skips."""


def _rule_axes(state: RuleState):
    return RuleState(0, 0, 0, None, 0)  # type: ignore[arg-type]  # vmap in/out axes of each field, not arrays


class NeuralMemory(nnx.Module):
    """The neural long-term memory (see module docstring). ``memory_model`` / ``update_rule`` / ``objective``
    override the config's (and are checked against their protocols like registry-built ones)."""

    def __init__(
        self,
        config: NeuralMemoryConfig | None = None,
        *,
        d_model: int,
        rngs: nnx.Rngs,
        memory_model: MemoryModel | None = None,
        update_rule: UpdateRule | None = None,
        objective: Objective | None = None,
    ):
        cfg = config or NeuralMemoryConfig()
        H = cfg.num_heads
        Dh = cfg.head_dim or head_width(d_model, H, suffix=" when head_dim is not set")
        self.config, self.d_model, self.num_heads, self.head_dim = cfg, d_model, H, Dh
        self.memory_model = _component("memory_model", memory_model, cfg.model)
        self.update_rule = _component("update_rule", update_rule, cfg.rule)
        self.objective = _component("objective", objective, cfg.objective)
        check_model = getattr(self.update_rule, "check_model", None)
        if callable(check_model):  # a rule that supports only some memory models says so now, not at trace time
            check_model(self.memory_model, self.objective)
        if cfg.alpha_per_channel and not getattr(self.update_rule, "alpha_per_channel", True):
            raise ValueError(
                f"alpha_per_channel: the update rule {type(self.update_rule).__name__} takes one α per token"
            )
        if cfg.alpha_per_channel and not self.memory_model.channel_axis_ok:
            raise ValueError(
                "alpha_per_channel needs a memory model whose parameters are per output channel (e.g. mlp with depth 1)"
            )
        HD = H * Dh
        # Logical sharding axes (titans_core.layers.LOGICAL_AXES): projections split over "heads" (H·Dh); the
        # per-head gates and M_0 are small and stay replicated.
        self.qkv = linear(d_model, 3 * HD, "embed", "heads", rngs=rngs)
        self.conv_q = CausalDepthwiseConv(HD, cfg.conv_kernel, rngs=rngs) if cfg.conv_kernel else None
        self.conv_kv = CausalDepthwiseConv(2 * HD, cfg.conv_kernel, rngs=rngs) if cfg.conv_kernel else None
        small = nnx.initializers.normal(0.02)
        C = Dh if cfg.alpha_per_channel else 1
        gate = lambda n, init: linear(
            d_model,
            n,
            "embed",
            None,
            rngs=rngs,
            use_bias=True,  # noqa: E731
            kernel_init=small,
            bias_init=nnx.initializers.constant(_logit(init)),
        )
        # only the gates the rule reads (its optional ``gates`` declaration, titans_core.rule_contract); the others
        # are zeros: no step (θ), no momentum (η), no forgetting (α)
        used = declared_gates(self.update_rule)
        self.gate_theta = gate(H, cfg.init_lr / cfg.max_lr) if "theta" in used else None
        self.gate_eta = gate(H, cfg.init_momentum) if "eta" in used else None
        self.gate_alpha = gate(H * C, cfg.init_forget) if "alpha" in used else None
        self.out_norm = RMSNorm(Dh)
        self.out_gate = linear(d_model, HD, "embed", "heads", rngs=rngs) if cfg.output_gate else None
        self.out_proj = linear(HD, d_model, "heads", "embed", rngs=rngs)
        # M_0: any pytree of arrays (nested dicts, lists, …), one Variable per leaf, leaves H×…
        params0 = jax.vmap(lambda k: self.memory_model.init(k, Dh))(jax.random.split(rngs.params(), H))
        wrap = nnx.Param if cfg.learn_init else FixedInit
        self.memory_init = nnx.data(
            jax.tree.map(lambda x: wrap(x, out_sharding=(None,) * x.ndim, eager_sharding=False), params0)
        )
        # the objective's per-token parameters (Objective.token_params, e.g. Yaad's δ_t): softplus gates, made last so
        # that everything above is initialised as without them; none for the built-in objectives
        token_params = dict(getattr(self.objective, "token_params", None) or {})
        for name, init in token_params.items():
            if not init > 0:
                raise ValueError(f"objective token parameter {name!r} must start > 0, got {init}")
        gates = {
            name: linear(
                d_model,
                H,
                "embed",
                None,
                rngs=rngs,
                use_bias=True,
                kernel_init=small,
                bias_init=nnx.initializers.constant(_softplus_inverse(init)),
            )
            for name, init in token_params.items()
        }
        # None, not an empty dict, without token parameters: the model's state is exactly as before
        self.gate_objective = nnx.Dict(gates) if gates else None

    # -- state ---------------------------------------------------------------------------------------------------
    def initial_params(self) -> PyTree:
        """M_0 for every head: the memory model's pytree, leaves H×…."""
        is_var = lambda x: isinstance(x, nnx.Variable)  # noqa: E731
        return jax.tree.map(lambda var: var[...], self.memory_init, is_leaf=is_var)

    def init_state(self, batch_size: int) -> MemoryState:
        p0 = jax.tree.map(lambda x: jnp.broadcast_to(x, (batch_size,) + x.shape), self.initial_params())
        rule = self.update_rule.init_state(p0)._replace(pos=jnp.zeros((), jnp.int32))
        if hasattr(self.update_rule, "init_extra"):  # e.g. a sliding window of past tokens (RuleState.extra)
            dtype = jax.tree.leaves(p0)[0].dtype
            rule = rule._replace(extra=self.update_rule.init_extra((batch_size, self.num_heads), self.head_dim, dtype))
        conv = {}
        if self.conv_q is not None and self.conv_kv is not None:  # both or neither (conv_kernel > 0)
            conv = {
                "q": self.conv_q.init_cache(batch_size),
                "kv": self.conv_kv.init_cache(batch_size),
                "read_q": self.conv_q.init_cache(batch_size),
            }
        return MemoryState(rule, conv)

    def on_chunk_boundary(self, num_tokens: int) -> bool:
        """Whether a memory that has written ``num_tokens`` tokens since M_0 — or any multiple of that count — sits
        on a chunk boundary of its update rule (the promise ``aligned=True`` makes). Callers know token counts
        statically (persistent tokens, segment lengths); the memory owns what they mean for its rule."""
        return num_tokens % self.update_rule.chunk_size == 0

    # -- projections ---------------------------------------------------------------------------------------------
    def _heads(self, x_BxTxHD: jax.Array) -> jax.Array:
        B, T, _ = x_BxTxHD.shape
        return x_BxTxHD.reshape(B, T, self.num_heads, self.head_dim).transpose(0, 2, 1, 3)  # B×H×T×Dh

    def _query(self, q_BxTxHD, cache):
        if self.conv_q is not None:
            q_BxTxHD, cache = self.conv_q(q_BxTxHD, cache)
        q = self._heads(jax.nn.silu(q_BxTxHD) if self.config.silu else q_BxTxHD)
        return (_l2norm(q) if self.config.qk_l2norm else q), cache

    def _keys_values(self, kv_BxTx2HD, cache):
        if self.conv_kv is not None:
            kv_BxTx2HD, cache = self.conv_kv(kv_BxTx2HD, cache)
        if self.config.silu:
            kv_BxTx2HD = jax.nn.silu(kv_BxTx2HD)
        k, v = (self._heads(t) for t in jnp.split(kv_BxTx2HD, 2, axis=-1))
        return (_l2norm(k) if self.config.qk_l2norm else k), v, cache

    def _gates(self, x_BxTxD) -> Gates:
        B, T, _ = x_BxTxD.shape
        to_heads = lambda g: g.reshape(B, T, self.num_heads, -1).transpose(0, 2, 1, 3)  # noqa: E731
        C = self.head_dim if self.config.alpha_per_channel else 1
        sig = lambda gate, n: (  # noqa: E731  # an undeclared gate (None) is 0
            jax.nn.sigmoid(to_heads(gate(x_BxTxD)))
            if gate is not None
            else jnp.zeros((B, self.num_heads, T, n), x_BxTxD.dtype)
        )
        theta = self.config.max_lr * sig(self.gate_theta, 1)[..., 0]
        eta = sig(self.gate_eta, 1)[..., 0]
        alpha = sig(self.gate_alpha, C)
        objective_T = {
            name: jax.nn.softplus(to_heads(gate(x_BxTxD)))[..., 0] for name, gate in (self.gate_objective or {}).items()
        }
        return Gates(theta, eta, alpha, objective_T)  # B×H×T, B×H×T, B×H×T×C, name → B×H×T

    def _read_out(self, x_BxTxD, y_BxHxTxDh):
        B, H, T, Dh = y_BxHxTxDh.shape
        y = self.out_norm(y_BxHxTxDh).transpose(0, 2, 1, 3).reshape(B, T, H * Dh)
        if self.out_gate is not None:
            y = y * jax.nn.sigmoid(self.out_gate(x_BxTxD))
        return self.out_proj(y)

    # -- the two operations --------------------------------------------------------------------------------------
    def __call__(
        self, x_BxTxD: jax.Array, state: MemoryState | None = None, *, aligned: bool = False
    ) -> tuple[jax.Array, MemoryState]:
        """Read (Eq 15) and write (Eq 13–14) the sequence x; returns (output B×T×D, state after x).

        Without a state the memory starts fresh from M_0. ``aligned=True`` promises that the state sits on a chunk
        boundary (state.rule.pos == 0), which lets the rule skip mid-chunk handling (one chunk of padding)."""
        aligned = aligned or state is None
        if state is None:
            state = self.init_state(x_BxTxD.shape[0])
        HD = self.num_heads * self.head_dim
        qkv = self.qkv(x_BxTxD)
        conv = dict(state.conv)
        q, conv["q"] = self._query(qkv[..., :HD], state.conv.get("q"))
        k, v, conv["kv"] = self._keys_values(qkv[..., HD:], state.conv.get("kv"))
        if not state.conv:
            conv = {}
        gates = self._gates(x_BxTxD)
        rule = lambda st, q, k, v, g: self.update_rule(  # noqa: E731
            self.memory_model, st, q, k, v, g, aligned=aligned, objective=self.objective
        )
        axes = _rule_axes(state.rule)
        run = jax.vmap(
            jax.vmap(rule, in_axes=(axes, 0, 0, 0, 0), out_axes=(0, axes)),
            in_axes=(axes, 0, 0, 0, 0),
            out_axes=(0, axes),
        )
        y, rule_state = run(state.rule, q, k, v, gates)
        return self._read_out(x_BxTxD, y), MemoryState(rule_state, conv)

    def retrieve(self, x_BxTxD: jax.Array, state: MemoryState | None = None) -> tuple[jax.Array, MemoryState]:
        """Read only: y_t = M*(q_t) with q from x (Eq 15), no update. Reads the chunk-start weights M_{t'}
        (``RuleState.start``, what the current chunk's tokens read with ``read: chunk``) whatever the rule's
        ``read`` option (MAC reads h from it, Eq 21). Advances only the read stream's convolution cache."""
        if state is None:
            state = self.init_state(x_BxTxD.shape[0])
        HD = self.num_heads * self.head_dim
        q, read_q = self._query(self.qkv(x_BxTxD)[..., :HD], state.conv.get("read_q"))
        apply = jax.vmap(jax.vmap(self.memory_model.apply))  # over B, H
        y = apply(state.rule.start, q)
        conv = {**state.conv, "read_q": read_q} if state.conv else {}
        return self._read_out(x_BxTxD, y), state._replace(conv=conv)

    def diagnostics(self, x_BxTxD: jax.Array, state: MemoryState | None = None) -> dict[str, jax.Array]:
        """Scalar statistics of the gates θ/η/α, the memory update and surprise norms per chunk and the read norm on
        x (a separate pass for logging; see :mod:`titans_memory.diagnostics`)."""
        from titans_memory.diagnostics import memory_diagnostics

        return memory_diagnostics(self, x_BxTxD, state)


def _component(kind: str, given, config):
    """The component passed to NeuralMemory (checked against its protocol), else the config's (built)."""
    if given is None:
        return get_registry().build(config)
    check_contract(kind, given, who=f"NeuralMemory({kind}={type(given).__name__}(...))")
    return given


def _l2norm(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)
