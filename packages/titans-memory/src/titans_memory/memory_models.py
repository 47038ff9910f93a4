"""Memory models: the inner network M of the neural long-term memory (paper §3.1).

A memory model is a pure function of its own parameters (``MemoryModel`` protocol in titans_core.protocols): the
update rules differentiate ``apply`` with respect to the parameters at test time (Eq 12–14), and the outer loop learns
the initial parameters M_0. Parameters are a flat dict of arrays, laid out ``x @ W`` (input axis first), so the last
axis of every matrix is its output channel.

``MLPMemory.read_and_linearize`` is an optional fast path that the ``momentum_scan`` rule uses when a model has it: the
chunk's read and prediction forward passes and a hand-written backward pass, so that the two weighted gradient sums a
chunk needs (Eq 13–14 unrolled) share one back-propagation instead of repeating ``jax.vjp`` once per weighting.
``MLPMemory.read_after_updates`` is its ``read: token`` counterpart (rules/token_read.py): the same backward
rows also give every token's read of the weights after its own write, M_t(q_t), as masked attention-like
products.

``MLPMemory`` declares what the ``fused`` rule's kernels implement: ``matrix_param`` (depth 1) or
``two_layer_form`` (depth 2, a :class:`TwoLayerForm`). The LayerNorm and activation pieces of its forward and
backward passes are module-level pure-jnp functions, which that rule's depth-2 kernel traces too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import jax
import jax.numpy as jnp
from pydantic import Field
from titans_core.config import ComponentConfig

from titans_memory.rules.base import GradsAndRead, GradSums, safe_sqrt

ACTIVATIONS = {"gelu": jax.nn.gelu, "silu": jax.nn.silu, "relu": jax.nn.relu, "tanh": jnp.tanh}
LN_EPS = 1e-5  # the LayerNorm's ε


# Pure jnp pieces of the MLP memory's forward and backward passes, row by row (shared with the ``fused`` rule's
# depth-2 kernel, rules/fused_mlp_kernel.py, which must trace the same math inside a Pallas kernel).
def value_and_slope(act: Callable[[jax.Array], jax.Array], z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """σ(z) and σ'(z) in one pass (σ is elementwise)."""
    return jax.jvp(act, (z,), (jnp.ones_like(z),))


def layer_norm(h_TxD: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(n, 1/σ) per row: n = (h − μ)/σ, σ = √(var + ε) (no gain, no bias)."""
    mu = jnp.mean(h_TxD, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(h_TxD - mu), axis=-1, keepdims=True)
    rstd = jax.lax.rsqrt(var + LN_EPS)
    return (h_TxD - mu) * rstd, rstd


def layer_norm_backward(dn_TxD: jax.Array, normed_TxD: jax.Array, rstd_Tx1: jax.Array) -> jax.Array:
    """∂/∂h of ⟨dn, n(h)⟩ per row, from ``layer_norm``'s outputs: (dn − mean(dn) − n mean(dn ⊙ n)) / σ."""
    mean_dn = jnp.mean(dn_TxD, -1, keepdims=True)
    return rstd_Tx1 * (dn_TxD - mean_dn - normed_TxD * jnp.mean(dn_TxD * normed_TxD, -1, keepdims=True))


@dataclass(frozen=True)
class TwoLayerForm:
    """What a memory declares (as its ``two_layer_form`` attribute) to run on the ``fused`` rule's depth-2 kernel:
    M(x) = x + γ ⊙ LN(W_1 σ(W_0 x)) with ``residual_norm``, else W_1 σ(W_0 x), σ elementwise jnp code, parameters
    ``w_in`` (D×H), ``w_out`` (H×D) and, with the norm, ``gain`` (γ, D), laid out x @ W."""

    activation: Callable[[jax.Array], jax.Array]
    residual_norm: bool
    w_in: str = "w0"
    w_out: str = "w1"
    gain: str = "ln_gain"

    @property
    def names(self) -> tuple[str, ...]:
        """The parameter names, in the kernel's order."""
        return (self.w_in, self.w_out, self.gain) if self.residual_norm else (self.w_in, self.w_out)


class MLPMemoryConfig(ComponentConfig):
    """Options of the ``mlp`` memory model."""

    depth: int = Field(2, ge=1, description="number of layers L_M; 1 is a linear matrix memory M(x) = x W")
    expansion: float = Field(4.0, gt=0, description="hidden width = round(expansion * head_dim) for depth ≥ 2")
    activation: Literal["gelu", "silu", "relu", "tanh"] = Field("gelu", description="hidden activation σ")
    residual_norm: bool = Field(
        True, description="depth ≥ 2: the revision's form M(x) = x + LN(MLP(x)); false: plain MLP(x)"
    )


class MLPMemory:
    """M(x) = x + γ ⊙ LN(W_L σ(… σ(W_1 x))) (paper §3.1, revision's residual form), or x W for depth 1.

    Decisions where the paper is silent: matrices are drawn N(0, 1/fan_in); the LayerNorm has a gain γ (initialised to
    1, no bias) that is part of the memory's weights, so it is learned at test time like the matrices; depth 1 is a
    plain matrix memory (no residual, no norm), the form the gated delta rule of Appendix C uses.
    """

    def __init__(self, config: MLPMemoryConfig | None = None, **overrides):
        self.config = (
            (config or MLPMemoryConfig()).model_copy(update=overrides) if overrides else (config or MLPMemoryConfig())
        )
        self.channel_axis_ok = self.config.depth == 1
        # what the ``fused`` rule's kernels implement, declared: depth 1 is M(x) = x W with one parameter (its
        # name), depth 2 the two-layer form (rules/fused_mlp_kernel.py); deeper memories declare neither
        self.matrix_param = "w0" if self.config.depth == 1 else None
        act = ACTIVATIONS[self.config.activation]
        self.two_layer_form = TwoLayerForm(act, self.config.residual_norm) if self.config.depth == 2 else None

    def hidden_width(self, dim: int) -> int:
        return max(1, round(self.config.expansion * dim))

    def init(self, key: jax.Array, dim: int) -> dict[str, jax.Array]:
        cfg = self.config
        if cfg.depth == 1:
            return {"w0": jax.random.normal(key, (dim, dim), jnp.float32) / jnp.sqrt(dim)}
        hid = self.hidden_width(dim)
        widths = [dim] + [hid] * (cfg.depth - 1) + [dim]
        keys = jax.random.split(key, cfg.depth)
        params = {
            f"w{i}": jax.random.normal(keys[i], (a, b), jnp.float32) / jnp.sqrt(a)
            for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True))
        }
        if cfg.residual_norm:
            params["ln_gain"] = jnp.ones((dim,), jnp.float32)
        return params

    def apply(self, params: dict[str, jax.Array], x_TxD: jax.Array) -> jax.Array:
        return self._forward(params, x_TxD)[0]

    def _forward(self, params, x_TxD, keep: bool = False):
        """M(x); with ``keep``, also what the hand-written backward pass needs: each layer's input, σ'(z) of each
        hidden layer, and the LayerNorm's normalised output and inverse scale."""
        cfg = self.config
        act = ACTIVATIONS[cfg.activation]
        h, inputs, act_grads = x_TxD, [], []
        for i in range(cfg.depth):
            inputs.append(h)
            z = h @ params[f"w{i}"].astype(x_TxD.dtype)
            if i == cfg.depth - 1:
                h = z
            elif keep:
                h, dh = value_and_slope(act, z)
                act_grads.append(dh)
            else:
                h = act(z)
        if cfg.depth == 1 or not cfg.residual_norm:
            return h, (inputs, act_grads, None)
        normed, rstd = layer_norm(h)
        return x_TxD + params["ln_gain"].astype(x_TxD.dtype) * normed, (inputs, act_grads, (normed, rstd))

    def read_and_linearize(
        self, params: dict[str, jax.Array], q_TxD: jax.Array, k_TxD: jax.Array
    ) -> tuple[jax.Array, jax.Array, GradSums]:
        """The read M(q) (Eq 15), the prediction M(k) and a hand-written backward pass for the k rows (Eq 12–13): the
        update rules' fast path.

        Returns (M(q), M(k), grad_sums) with grad_sums(cot_TxD, *w_TxC) = one tree Σ_t w_t ⊙ ∂⟨cot_t, M(k_t)⟩/∂params
        per weighting w: weighted sums of per-token gradients with no per-token parameter tree. Every layer acts row
        by row, so the backward signal δ_t of token t is computed once for all weightings; only the weight gradients
        Σ_t w_t h_tᵀ δ_t (one T-contraction matmul per layer, w folded into its T×in input) depend on w. C = 1, or
        C = output width for depth 1 (per-channel weights, ⊙ over the output axis).

        Performance notes (CPU, B = 2, 4 heads × 64, depth 2, chunk 16): compared with a ``jax.vmap`` of
        ``jax.vjp`` over the two cotangents this halves the forward pass and cuts forward+backward by a quarter; one
        matmul per weighting (rather than one stacked J×in×out product, then sliced) keeps the outer backward pass
        free of pads and transposes; running q and k as one concatenated 2T-row pass measured slower (the slices and
        pads it adds to the outer backward pass cost more than the larger matmuls save).
        """
        pred, inputs, backprop = self._linearize(params, k_TxD)

        def grad_sums(cot_TxD, *weights_TxC):
            deltas, ln_grad = backprop(cot_TxD)
            return self._weighted_grads(params, inputs, deltas, ln_grad, weights_TxC)

        return self.apply(params, q_TxD), pred, grad_sums

    def _linearize(self, params, k_TxD):
        """M(k), each layer's input rows h_i (at k) and backprop(cot) = ({layer: δ rows}, LayerNorm-gain
        rows or None): the per-token factors of ∂⟨cot_i, M(k_i)⟩/∂params (h_iᵀ δ_i per matrix, cot_i ⊙ n_i for
        the gain)."""
        cfg = self.config
        pred, (inputs, act_grads, norm) = self._forward(params, k_TxD, keep=True)
        dtype = pred.dtype

        def backprop(cot_TxD):
            deltas, ln_grad = {}, None
            delta = cot_TxD  # ∂/∂(output of the last layer)
            if norm is not None:  # out = x + γ ⊙ n, n = (z − μ)/σ
                normed, rstd = norm
                ln_grad = cot_TxD * normed
                delta = layer_norm_backward(cot_TxD * params["ln_gain"].astype(dtype), normed, rstd)
            for i in reversed(range(cfg.depth)):  # δ per layer, shared by every weighting
                deltas[i] = delta
                if i:
                    delta = (delta @ params[f"w{i}"].astype(dtype).T) * act_grads[i - 1]
            return deltas, ln_grad

        return pred, inputs, backprop

    def _weighted_grads(self, params, inputs, deltas, ln_grad, weights_TxC):
        """One tree Σ_t w_t ⊙ h_tᵀ δ_t (and Σ_t w_t ln_grad_t) per weighting w."""
        out = []
        for w_TxC in weights_TxC:
            w_TxC = w_TxC.astype(inputs[0].dtype)
            if w_TxC.shape[-1] != 1 and self.config.depth != 1:
                raise ValueError("per-channel weights need a depth-1 memory")
            # Σ_t w_t h_tᵀ δ_t: the weights go on the T×in input (or on δ when they are per output channel)
            g = {
                f"w{i}": (w_TxC * inputs[i]).T @ deltas[i]
                if w_TxC.shape[-1] == 1
                else inputs[i].T @ (w_TxC * deltas[i])
                for i in deltas
            }
            if ln_grad is not None:
                g["ln_gain"] = w_TxC[:, 0] @ ln_grad
            out.append({name: x.astype(params[name].dtype) for name, x in g.items()})
        return tuple(out)

    def grad_norms(self, params: dict[str, jax.Array], k_TxD: jax.Array, cot_TxD: jax.Array) -> jax.Array:
        """‖∂⟨cot_i, M(k_i)⟩/∂params‖ per token i (one ℓ2 norm over every parameter): what the surprise clamp
        (``max_grad_norm``) of the chunked rule needs, with no per-token parameter tree.

        Matrix l's gradient for token i is the outer product h_iᵀ δ_i (layer input at k_i times backprop row), whose
        Frobenius norm is ‖h_i‖ ‖δ_i‖; the LayerNorm gain's is cot_i ⊙ n_i. So ‖u_i‖² = Σ_l ‖h_i‖² ‖δ_i‖² +
        ‖cot_i ⊙ n_i‖², as the ``fused`` rule's kernels compute it. Against the generic path (one vector–Jacobian
        product per token, vmapped) one memory layer's forward+backward runs 3.5× (depth 1) and 4× (depth 2) as fast
        (benchmarks/results/clamp_throughput.json). The norm has a finite gradient at 0 (``safe_sqrt``).
        """
        _, inputs, backprop = self._linearize(params, k_TxD)
        deltas, ln_grad = backprop(cot_TxD)
        dtype = params["w0"].dtype  # the generic path takes the norm of the gradient tree, in the parameters' dtype
        sq = sum(
            jnp.sum(jnp.square(inputs[i].astype(dtype)), -1) * jnp.sum(jnp.square(deltas[i].astype(dtype)), -1)
            for i in deltas
        )
        if ln_grad is not None:
            sq = sq + jnp.sum(jnp.square(ln_grad.astype(dtype)), -1)
        return safe_sqrt(sq)

    def read_after_updates(
        self, params: dict[str, jax.Array], q_TxD: jax.Array, k_TxD: jax.Array
    ) -> tuple[jax.Array, GradSums, GradsAndRead]:
        """The ``read: token`` fast path (see rules/token_read.py): (M(k), grad_sums, grads_and_read) at
        ``params`` = M_{t'}. grad_sums is ``read_and_linearize``'s; grads_and_read(cot, weights, memory,
        surprise, keep_TxC, s_to_M_TxC, m_TxTxC) -> (grad_sums(cot, *weights), y_TxD), with y_t = M_t(q_t):

            M_t = keep_t ⊙ memory + s_to_M_t ⊙ surprise + Σ_i m_{t,i} ⊙ ∂⟨cot_i, M(k_i)⟩/∂params

        (Eq 13–14 unrolled to every token of the chunk, gradients at M_{t'} as in Eq 16). No per-token
        parameter tree: the gradient of matrix l for token i is the outer product h_iᵀ δ_i (layer input at k_i
        times backprop row), so the read's pre-activation at layer l is, with x_t the read's own input to that
        layer (q_t for l = 0, then its own hidden activations),

            x_t W_t = keep_t ⊙ x_t W_mem + s_to_M_t ⊙ x_t W_S + Σ_i m_{t,i} (x_t · h_i) δ_i
                    = keep ⊙ (X W_mem) + s_to_M ⊙ (X W_S) + (m ⊙ X Hᵀ) Δ     (masked, attention-like)

        and the LayerNorm gain of token t is keep_t g_mem + s_to_M_t g_S + Σ_i m_{t,i} (cot_i ⊙ n_i).
        Per-channel coefficients (C = output width) need depth 1: then ⊙ acts on the output channel and the
        sum is Σ_i m_{t,i,c} (x_t·h_i) δ_{i,c}. The backward rows δ_i are shared with the weighted gradient
        sums of the state update (one back-propagation). Cost per layer: the two base matmuls X W (a second
        forward pass) plus two b×b products, against one forward pass for ``read: chunk``.
        """
        cfg = self.config
        pred, inputs, backprop = self._linearize(params, k_TxD)
        dtype = pred.dtype

        def grad_sums(cot_TxD, *weights_TxC):
            deltas, ln_grad = backprop(cot_TxD)
            return self._weighted_grads(params, inputs, deltas, ln_grad, weights_TxC)

        def grads_and_read(cot_TxD, weights, memory, surprise, keep_TxC, s_to_M_TxC, m_TxTxC):
            deltas, ln_grad = backprop(cot_TxD)
            sums = self._weighted_grads(params, inputs, deltas, ln_grad, weights)
            if m_TxTxC.shape[-1] != 1 and cfg.depth != 1:
                raise ValueError("per-channel coefficients need a depth-1 memory")
            keep, s_to_M, m = (x.astype(dtype) for x in (keep_TxC, s_to_M_TxC, m_TxTxC))
            act = ACTIVATIONS[cfg.activation]
            h = q_TxD
            for i in range(cfg.depth):
                w_mem, w_s = (tree[f"w{i}"].astype(dtype) for tree in (memory, surprise))
                base = keep * (h @ w_mem) + s_to_M * (h @ w_s)
                scores_TxT = h @ inputs[i].T  # x_t · h_i
                if m.shape[-1] == 1:
                    z = base + (m[..., 0] * scores_TxT) @ deltas[i]
                else:
                    z = base + jnp.einsum("tic,ti,ic->tc", m, scores_TxT, deltas[i])
                h = z if i == cfg.depth - 1 else act(z)
            if ln_grad is None:
                return sums, h
            gain_TxD = (
                keep * memory["ln_gain"].astype(dtype)
                + s_to_M * surprise["ln_gain"].astype(dtype)
                + m[..., 0] @ ln_grad
            )
            return sums, q_TxD + gain_TxD * layer_norm(h)[0]

        return pred, grad_sums, grads_and_read
