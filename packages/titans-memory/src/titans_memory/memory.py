"""NeuralMemory: the Titans neural long-term memory as a Flax NNX module (paper §3.1, Eq 11–16).

Drop it into any Flax NNX model::

    mem = NeuralMemory(NeuralMemoryConfig(num_heads=4), d_model=256, rngs=nnx.Rngs(0))
    y_BxTxD, state = mem(x_BxTxD)                 # a fresh memory per sequence
    y2, state = mem(x2_BxTxD, state)              # ... carried on over the next piece

Per token and head: k_t = x_t W_K, v_t = x_t W_V, q_t = x_t W_Q (Eq 11, 15), each followed by a causal depthwise
convolution (kernel 4) and SiLU, with q and k ℓ2-normalised (the revision, §4.4); data-dependent gates
θ_t = max_lr·σ(x_t w_θ), η_t = η_max·σ(x_t w_η), α_t = α_min + (1 − α_min)·σ(x_t w_α) (η_max = 1 and α_min = 0 by
default, see ``_gates``; and softplus(x_t w_p) for each per-token parameter p the objective declares in
``token_params``, e.g. Yaad's δ_t); the update rule evolves the memory (Eq 13–14, 16) by
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

import functools
import inspect
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike
from pydantic import Field, model_validator
from titans_core.config import ComponentConfig
from titans_core.contracts import check_contract
from titans_core.layers import CausalDepthwiseConv, RMSNorm, head_width
from titans_core.layers import linear as _linear
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
    max_momentum: float = Field(1.0, gt=0, le=1, description="ceiling of η (see _gates): a surprise lasts ≲ 1/(1 − η)")
    init_forget: float = Field(0.01, gt=0, lt=1, description="α of a fresh model (sets b_α): small, so it remembers")
    min_forget: float = Field(0.0, ge=0, lt=1, description="floor of α (see _gates): horizon ≲ 1/min_forget tokens")
    alpha_per_channel: bool = Field(False, description="one α per output channel (matrix memory only)")
    conv_kernel: int = Field(4, ge=0, description="causal depthwise conv after the q/k/v projections; 0 = none")
    silu: bool = Field(True, description="SiLU after the q/k/v projections (and conv)")
    qk_l2norm: bool = Field(True, description="ℓ2-normalise q and k")
    learn_init: bool = Field(True, description="M_0 is a learned outer parameter; false: a fixed, seeded init")
    output_gate: bool = Field(True, description="multiply the read-out by σ(x W_g)")

    @model_validator(mode="after")
    def _start_values_in_range(self):
        if self.init_lr >= self.max_lr:
            raise ValueError(f"init_lr must be < max_lr ({self.max_lr}), got {self.init_lr}")
        if self.init_momentum >= self.max_momentum:
            raise ValueError(f"init_momentum must be < max_momentum ({self.max_momentum}), got {self.init_momentum}")
        if self.init_forget <= self.min_forget:
            raise ValueError(f"init_forget must be > min_forget ({self.min_forget}), got {self.init_forget}")
        return self


class MemoryState(NamedTuple):
    """Everything needed to continue a sequence: the rule state per batch element and head (leaves B×H×…; ``pos``,
    the position in the current chunk, is B: one per row, shared by the heads), and the causal-convolution caches
    (B×(K−1)×channels): ``q``/``kv`` of the update stream and ``read_q`` of the read-only stream (``retrieve``).
    Empty when the convolution is off. Its shapes and dtypes are fixed by ``NeuralMemory.init_state``: every call
    returns a state of the same shapes and dtypes (so it can be a ``lax.scan`` carry)."""

    rule: RuleState
    conv: dict[str, jax.Array]


def _logit(p: float) -> float:
    return math.log(p) - math.log1p(-p)


def _softplus_inverse(y: float) -> float:
    """x with softplus(x) = y > 0."""
    return y + math.log(-math.expm1(-y))


class FixedInit(nnx.Variable):
    """M_0 when it is not learned (``learn_init=False``): a deterministic, seeded init that the optimiser skips."""


def _rule_axes(state: RuleState | None = None, *, batch: bool = False):
    """vmap in/out axes of each RuleState field (not arrays): ``pos`` is per row (axis 0 over the batch) and shared
    by the heads (None over the heads)."""
    return RuleState(0, 0, 0, 0 if batch else None, 0)  # type: ignore[arg-type]


def vmap_rule(rule, *, store: bool = False):
    """``rule(state, q, k, v, gates[, store_T])`` of one head and one row, vmapped over heads then rows: the rule
    state's leaves are B×H×… (``pos`` B), q/k/v/gates B×H×T×…, the store mask B×T (shared by the heads).

    Per-row ``pos`` (decision): each row keeps its own position in the chunk grid, so rows at different positions
    (after a reset of some rows, or pieces of different lengths) each see the chunk boundaries of their own stream;
    inside the rule, which sees one row, ``pos`` is the scalar of the ``UpdateRule`` protocol. Rows never share
    chunk boundaries, so a row's result does not depend on the others'."""
    extra_h = (None,) if store else ()
    head = _rule_axes(batch=False)
    inner = jax.vmap(rule, in_axes=(head, 0, 0, 0, 0) + extra_h, out_axes=(0, head))
    row = _rule_axes(batch=True)
    return jax.vmap(inner, in_axes=(row, 0, 0, 0, 0) + (0,) * store, out_axes=(0, row))


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
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
    ):
        """``dtype``: the computation dtype of the projections and the inputs the rule sees (None: the input's, as
        Flax layers); ``param_dtype``: the dtype of every parameter and of M_0, hence of the carried M and S."""
        cfg = config or NeuralMemoryConfig()
        self.dtype, self.param_dtype = dtype, param_dtype
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
        linear = functools.partial(_linear, dtype=dtype, param_dtype=param_dtype)
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
        self.gate_eta = gate(H, cfg.init_momentum / cfg.max_momentum) if "eta" in used else None
        alpha0 = (cfg.init_forget - cfg.min_forget) / (1 - cfg.min_forget)  # σ's share of α above the floor
        self.gate_alpha = gate(H * C, alpha0) if "alpha" in used else None
        self.out_norm = RMSNorm(Dh)
        self.out_gate = linear(d_model, HD, "embed", "heads", rngs=rngs) if cfg.output_gate else None
        self.out_proj = linear(HD, d_model, "heads", "embed", rngs=rngs)
        # M_0: any pytree of arrays (nested dicts, lists, …), one Variable per leaf, leaves H×…
        params0 = jax.vmap(lambda k: self.memory_model.init(k, Dh))(jax.random.split(rngs.params(), H))
        params0 = jax.tree.map(lambda x: x.astype(param_dtype), params0)
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
        if jnp.dtype(param_dtype) != jnp.float32:  # the shared conv and norm layers make float32 parameters
            for layer in (self.conv_q, self.conv_kv, self.out_norm):
                for _, var in nnx.iter_graph(layer) if layer is not None else ():
                    if isinstance(var, nnx.Param):
                        var.set_value(var.get_value().astype(param_dtype))

    # -- state ---------------------------------------------------------------------------------------------------
    def initial_params(self) -> PyTree:
        """M_0 for every head: the memory model's pytree, leaves H×…."""
        is_var = lambda x: isinstance(x, nnx.Variable)  # noqa: E731
        return jax.tree.map(lambda var: var[...], self.memory_init, is_leaf=is_var)

    def init_state(self, batch_size: int) -> MemoryState:
        """A fresh memory for ``batch_size`` rows: M_0, S_0 = 0, pos = 0 (per row), zero convolution caches. Its
        dtypes are those of every later state: M and S in M_0's (``param_dtype``), the caches in ``dtype`` (the
        computation dtype; float32 when not set)."""
        p0 = jax.tree.map(lambda x: jnp.broadcast_to(x, (batch_size,) + x.shape), self.initial_params())
        rule = self.update_rule.init_state(p0)._replace(pos=jnp.zeros((batch_size,), jnp.int32))
        if hasattr(self.update_rule, "init_extra"):  # e.g. a sliding window of past tokens (RuleState.extra)
            dtype = jax.tree.leaves(p0)[0].dtype
            rule = rule._replace(extra=self.update_rule.init_extra((batch_size, self.num_heads), self.head_dim, dtype))
        conv = {}
        if self.conv_q is not None and self.conv_kv is not None:  # both or neither (conv_kernel > 0)
            cdt = self.dtype or jnp.float32
            conv = {
                "q": self.conv_q.init_cache(batch_size, cdt),
                "kv": self.conv_kv.init_cache(batch_size, cdt),
                "read_q": self.conv_q.init_cache(batch_size, cdt),
            }
        return MemoryState(rule, conv)

    def reset(self, state: MemoryState, mask_B: jax.Array) -> MemoryState:
        """``state`` with the rows where ``mask_B`` is true set back to a fresh memory (M_0, S = 0, pos = 0, zero
        caches), the other rows untouched. Exact at any position: each row has its own chunk position."""
        self.check_state(state)
        B = _batch_size(state)
        fresh = self.init_state(B)
        mask_B = jnp.asarray(mask_B, bool)
        if mask_B.shape != (B,):
            raise ValueError(f"reset: mask_B must have shape ({B},), got {mask_B.shape}")
        pick = lambda f, o: jnp.where(mask_B.reshape((B,) + (1,) * (o.ndim - 1)), f, o)  # noqa: E731
        return jax.tree.map(pick, fresh, state)

    def check_state(self, state: MemoryState, batch_size: int | None = None) -> None:
        """Raise a ValueError naming the first leaf whose structure, shape or dtype differs from ``init_state``'s
        (a state from another model or batch size, or one cast to another dtype). Costs nothing at run time."""
        if not isinstance(state, MemoryState):
            raise ValueError(f"expected a MemoryState, got {type(state).__name__}")
        B = _batch_size(state) if batch_size is None else batch_size
        expected = jax.eval_shape(lambda: self.init_state(B))
        got_paths, got_def = jax.tree_util.tree_flatten_with_path(state)
        want_paths, want_def = jax.tree_util.tree_flatten_with_path(expected)
        if got_def != want_def:  # type: ignore[operator]  # PyTreeDef's stubs lack __ne__
            raise ValueError(f"memory state structure {got_def} does not match this memory's {want_def}")
        for (path, got), (_, want) in zip(got_paths, want_paths, strict=True):
            shape, dtype = jnp.shape(got), jnp.result_type(got)
            if shape != want.shape or dtype != want.dtype:
                where = jax.tree_util.keystr(path)
                raise ValueError(
                    f"memory state{where}: expected {want.dtype}{list(want.shape)}, got {dtype}{list(shape)} "
                    f"(make states with init_state({B}) and pass them back unchanged)"
                )

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
        """θ, η, α per token and head (Eq 13–14). α_t = α_min + (1 − α_min)·σ(x_t w_α + b_α) with α_min =
        ``min_forget`` (0 by default: the paper's α_t ∈ [0, 1]). Decision: a floor on α bounds how long a write
        lasts, (1 − α_min)^n after n tokens, so a memory trained on windows of T tokens can be kept from learning a
        horizon longer than T, which is what makes it age beyond T (the README's length sweep).
        η_t = η_max·σ(x_t w_η + b_η) with η_max = ``max_momentum`` (1 by default: the paper's η_t ∈ [0, 1]). Decision:
        a ceiling on η bounds how long a surprise keeps moving M, η_max^n after n tokens; with η → 1 (which MQAR
        training reached) S_t barely decays and M keeps drifting by S past the training length (README, "Recall at
        8×")."""
        B, T, _ = x_BxTxD.shape
        to_heads = lambda g: g.reshape(B, T, self.num_heads, -1).transpose(0, 2, 1, 3)  # noqa: E731
        C = self.head_dim if self.config.alpha_per_channel else 1
        sig = lambda gate, n: (  # noqa: E731  # an undeclared gate (None) is 0
            jax.nn.sigmoid(to_heads(gate(x_BxTxD)))
            if gate is not None
            else jnp.zeros((B, self.num_heads, T, n), x_BxTxD.dtype)
        )
        theta = self.config.max_lr * sig(self.gate_theta, 1)[..., 0]
        eta = self.config.max_momentum * sig(self.gate_eta, 1)[..., 0]
        alpha = sig(self.gate_alpha, C)
        if self.gate_alpha is not None and self.config.min_forget:
            alpha = self.config.min_forget + (1 - self.config.min_forget) * alpha
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

    # -- the operations ------------------------------------------------------------------------------------------
    def __call__(
        self,
        x_BxTxD: jax.Array,
        state: MemoryState | None = None,
        *,
        aligned: bool = False,
        store_mask_BxT: jax.Array | None = None,
    ) -> tuple[jax.Array, MemoryState]:
        """Read (Eq 15) and write (Eq 13–14) the sequence x; returns (output B×T×D, state after x).

        Without a state the memory starts fresh from M_0. ``aligned=True`` promises that every row of the state sits
        on a chunk boundary (state.rule.pos == 0), which lets the rule skip mid-chunk handling (one chunk of padding);
        a broken promise raises outside jit and makes the outputs and state NaN under jit (never silently wrong).

        ``store_mask_BxT`` (1/true: write, 0/false: skip; default: write all): a skipped token (padding, a prompt
        you only want read) is read like any other but leaves M and S exactly as they were — its gates act as
        θ = 0, α = 0 and η = 1 (η = 1, not the token's η: with η < 1 the surprise would still decay on a skipped
        token). It still takes its place in the chunk grid (pos advances) and in the convolution's context, like
        titans-pytorch's ``store_mask``. Every built-in rule supports it; a plugin rule must accept ``store_T``."""
        B, given = x_BxTxD.shape[0], state is not None
        if state is None:
            aligned, state = True, self.init_state(B)
        else:
            self.check_state(state, B)
        x_BxTxD = x_BxTxD.astype(self.dtype) if self.dtype is not None else x_BxTxD
        HD = self.num_heads * self.head_dim
        qkv = self.qkv(x_BxTxD)
        conv = dict(state.conv)
        q, conv["q"] = self._query(qkv[..., :HD], state.conv.get("q"))
        k, v, conv["kv"] = self._keys_values(qkv[..., HD:], state.conv.get("kv"))
        if not state.conv:
            conv = {}
        gates = self._gates(x_BxTxD)
        options = {"aligned": aligned, "objective": self.objective}
        args: tuple[Any, ...] = (state.rule, q, k, v, gates)
        if store_mask_BxT is not None:
            if jnp.shape(store_mask_BxT) != x_BxTxD.shape[:2]:
                raise ValueError(f"store_mask_BxT must have shape {x_BxTxD.shape[:2]}, got {jnp.shape(store_mask_BxT)}")
            _check_accepts_store(self.update_rule)
            args += (jnp.asarray(store_mask_BxT).astype(bool),)
        rule = lambda st, q, k, v, g, *w: self.update_rule(  # noqa: E731
            self.memory_model, st, q, k, v, g, **options, **({"store_T": w[0]} if w else {})
        )
        y, rule_state = vmap_rule(rule, store=store_mask_BxT is not None)(*args)
        state_out = MemoryState(rule_state, conv)
        if aligned and given:
            y, state_out = _require_aligned(state.rule.pos, y, state_out)
        state_out = jax.tree.map(lambda n, o: n.astype(o.dtype), state_out, state)  # dtypes never change
        return self._read_out(x_BxTxD, y), state_out

    def read(self, x_BxTxD: jax.Array, state: MemoryState | None = None) -> jax.Array:
        """Read only, from the current memory: y_t = M_t(q_t) (Eq 15) with M_t = ``state.rule.memory``, the
        weights after the last written token, and q from x as if x came next in the stream (the update stream's
        convolution context, not advanced). Nothing is written and the state is not returned: it is unchanged.
        Equals ``self(x, state, store_mask_BxT=zeros)[0]`` for a rule with ``read: token``."""
        if state is None:
            state = self.init_state(x_BxTxD.shape[0])
        else:
            self.check_state(state, x_BxTxD.shape[0])
        x_BxTxD = x_BxTxD.astype(self.dtype) if self.dtype is not None else x_BxTxD
        HD = self.num_heads * self.head_dim
        q, _ = self._query(self.qkv(x_BxTxD)[..., :HD], state.conv.get("q"))
        y = jax.vmap(jax.vmap(self.memory_model.apply))(state.rule.memory, q)  # over B, H
        return self._read_out(x_BxTxD, y)

    def retrieve(self, x_BxTxD: jax.Array, state: MemoryState | None = None) -> tuple[jax.Array, MemoryState]:
        """Read only: y_t = M*(q_t) with q from x (Eq 15), no update. Reads the chunk-start weights M_{t'}
        (``RuleState.start``, what the current chunk's tokens read with ``read: chunk``) whatever the rule's
        ``read`` option (MAC reads h from it, Eq 21). Advances only the read stream's convolution cache.
        (:meth:`read` reads the current weights M_t instead.)"""
        if state is None:
            state = self.init_state(x_BxTxD.shape[0])
        x_BxTxD = x_BxTxD.astype(self.dtype) if self.dtype is not None else x_BxTxD
        HD = self.num_heads * self.head_dim
        q, read_q = self._query(self.qkv(x_BxTxD)[..., :HD], state.conv.get("read_q"))
        apply = jax.vmap(jax.vmap(self.memory_model.apply))  # over B, H
        y = apply(state.rule.start, q)
        conv = {**state.conv, "read_q": read_q.astype(state.conv["read_q"].dtype)} if state.conv else {}
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


def _batch_size(state: MemoryState) -> int:
    return int(jnp.shape(state.rule.pos)[0]) if jnp.ndim(state.rule.pos) else 1


def _check_accepts_store(rule) -> None:
    """A store mask needs a rule that takes ``store_T`` (every built-in rule does); say so instead of a TypeError."""
    try:
        params = inspect.signature(rule.__call__).parameters
    except (TypeError, ValueError):
        return
    if "store_T" not in params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        raise ValueError(f"store_mask_BxT: the update rule {type(rule).__name__} does not accept store_T")


def _require_aligned(pos_B: jax.Array, y, state: MemoryState):
    """``aligned=True`` with a row off a chunk boundary: a ValueError when pos is concrete; under jit (pos is traced)
    those rows' outputs and state become NaN, so a broken promise is never silently wrong."""
    if not isinstance(pos_B, jax.core.Tracer):
        if bool(jnp.any(pos_B != 0)):
            raise ValueError(
                f"aligned=True needs every row on a chunk boundary (state.rule.pos == 0), got pos {pos_B.tolist()}"
            )
        return y, state
    off_B = pos_B != 0

    def poison(x):
        if not jnp.issubdtype(x.dtype, jnp.floating) or x.ndim == 0 or x.shape[0] != off_B.shape[0]:
            return x
        return jnp.where(off_B.reshape((-1,) + (1,) * (x.ndim - 1)), jnp.nan, x)

    return jax.tree.map(poison, y), jax.tree.map(poison, state)


def _l2norm(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)
