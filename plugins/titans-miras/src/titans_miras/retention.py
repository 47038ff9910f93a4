"""What Moneta and Memora share: an update rule with a non-linear retention map, trained chunk-wise.

MIRAS (arXiv 2504.13173) writes both memories as a recurrence on an accumulator A (Moneta: A itself; Memora: the
logits of W) followed by a map to the weights W that the memory model applies:

    u_t = ∇_W ℓ(W_{t'}; k_t, v_t)               gradient at the chunk-start weights (Titans Eq 16, MIRAS §5)
    A_t = accumulate(A_{t−1}, u_t, η_t, α_t)     the retention (a rule's own; see moneta.py, memora.py)
    W_t = weights(A_t)
    y_t = W_{t'}(q_t)                            read-before-write, as Titans' ``read: chunk`` (Eq 15)

With chunk size b = 1 the gradient is taken at W_{t−1}: the paper's per-token recurrence. Mapping onto Titans'
gates (``titans_core.Gates``): MIRAS' step size η_t is Titans' θ_t (``theta_T``), MIRAS' retention α_t is Titans'
1 − α_t (``alpha_TxC`` is a forget gate; a per-channel α scales the last, output-channel axis of every leaf);
Titans' momentum η_t (``eta_T``) is not used — neither MIRAS rule has momentum. ``RuleState`` holds
``start`` = W_{t'}, ``memory`` = W_t and ``surprise`` = A_t (the accumulator, not a momentum).

Two paths give the same result: ``parallel`` (used on chunk boundaries, ``aligned=True``) takes a whole chunk's
per-token gradients at once — the objective's ``cotangent`` pulled back through M by vector–Jacobian products
against one-hot token weights, as Titans' chunked rule does — then runs the (cheap, element-wise) retention over the
chunk's tokens; the token path (any state, and ``parallel: false``) differentiates the objective's ``loss`` token by
token, the reference. Unlike Titans' linear recurrence, the retention map is not associative, so the chunk's tokens
are scanned in order, but no gradient waits on the previous token.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from pydantic import Field
from titans_core import ComponentConfig, Gates, MemoryModel, Objective, RuleState
from titans_memory import L2Objective

PyTree = Any


class RetentionRuleConfig(ComponentConfig):
    """Options shared by the MIRAS retention rules."""

    chunk_size: int = Field(16, ge=1, description="b: gradients inside a chunk are taken at its start weights")
    parallel: bool = Field(
        True, description="on chunk boundaries, take a chunk's gradients at once (false: token by token, the reference)"
    )


class RetentionRule:
    """Base of Moneta and Memora (see the module docstring). A subclass defines ``init_accumulator``,
    ``initial_weights`` (both must work on leaves with leading batch axes), ``accumulate`` and ``weights``."""

    config_class = RetentionRuleConfig

    def __init__(self, config: RetentionRuleConfig | None = None, **overrides):
        cfg = config or self.config_class()
        self.config = cfg.model_copy(update=overrides) if overrides else cfg
        self.chunk_size = self.config.chunk_size

    # -- the retention (subclasses) ---------------------------------------------------------------------------
    def init_accumulator(self, params0: PyTree) -> PyTree:
        raise NotImplementedError

    def initial_weights(self, params0: PyTree) -> PyTree:
        raise NotImplementedError

    def accumulate(self, acc: PyTree, grad: PyTree, step: jax.Array, keep_C: jax.Array) -> PyTree:
        raise NotImplementedError

    def weights(self, acc: PyTree) -> PyTree:
        raise NotImplementedError

    # -- the UpdateRule protocol -------------------------------------------------------------------------------
    def init_state(self, params0: PyTree) -> RuleState:
        w0 = self.initial_weights(params0)
        return RuleState(w0, w0, self.init_accumulator(params0), jnp.zeros((), jnp.int32))

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
    ) -> tuple[jax.Array, RuleState]:
        objective = objective if objective is not None else L2Objective()
        xs = (q_TxD, k_TxD, v_TxD, gates.theta_T, 1.0 - gates.alpha_TxC, gates.objective_T)
        if aligned and self.config.parallel:
            return self._chunked(model, objective, state, xs)
        return self._tokens(model, objective, state, xs)

    def _tokens(self, model: MemoryModel, objective: Objective, state: RuleState, xs):
        """The reference: one token at a time, the gradient by differentiating the objective's loss."""
        b = self.chunk_size

        def step(st: RuleState, inp):
            q_D, k_D, v_D, step_size, keep_C, objective_1 = inp
            per_token = {name: x[None] for name, x in objective_1.items()}
            loss = lambda w: jnp.sum(objective.loss(model.apply(w, k_D[None]), v_D[None], **per_token))  # noqa: E731
            acc = self.accumulate(st.surprise, jax.grad(loss)(st.start), step_size, keep_C)
            memory = self.weights(acc)
            y_D = model.apply(st.start, q_D[None])[0]  # read-before-write: the chunk-start weights
            pos = st.pos + 1
            closes = pos == b
            start = jax.tree.map(lambda m, s: jnp.where(closes, m, s), memory, st.start)
            return RuleState(start, memory, acc, jnp.where(closes, 0, pos).astype(jnp.int32)), y_D

        state, y_TxD = jax.lax.scan(step, state, xs)
        return y_TxD, state

    def _chunk(self, model: MemoryModel, objective: Objective, start: PyTree, acc: PyTree, inp):
        """One chunk from its start weights: the reads, every token's gradient at once, then the retention."""
        q_bxD, k_bxD, v_bxD, step_b, keep_bxC, objective_b = inp
        y_bxD = model.apply(start, q_bxD)
        pred_bxD, vjp = jax.vjp(lambda w: model.apply(w, k_bxD), start)
        cot_bxD = objective.cotangent(pred_bxD, v_bxD, **objective_b)  # ∂ℓ_i/∂M(k_i)
        one_hot = jnp.eye(k_bxD.shape[0], dtype=cot_bxD.dtype)[:, :, None]
        grads = jax.vmap(lambda e: vjp(e * cot_bxD)[0])(one_hot)  # u_i = ∇_W ℓ_i at W_{t'}, one tree per token

        def retain(acc, inp):
            grad, step_size, keep_C = inp
            return self.accumulate(acc, grad, step_size, keep_C), None

        acc, _ = jax.lax.scan(retain, acc, (grads, step_b, keep_bxC))
        return y_bxD, acc

    def _chunked(self, model: MemoryModel, objective: Objective, state: RuleState, xs):
        """pos = 0 (a chunk boundary, so start = memory): T // b whole chunks, then the unfinished tail."""
        T, b = xs[0].shape[0], self.chunk_size
        n_full, tail = divmod(T, b)
        memory, acc, ys = state.memory, state.surprise, []

        @jax.checkpoint
        def body(carry, inp):
            memory, acc = carry  # a whole chunk reads, and takes its gradients at, the W it starts from
            y_bxD, acc = self._chunk(model, objective, memory, acc, inp)
            return (self.weights(acc), acc), y_bxD

        if n_full:
            whole = jax.tree.map(lambda x: x[: n_full * b].reshape((n_full, b) + x.shape[1:]), xs)
            (memory, acc), y = jax.lax.scan(body, (memory, acc), whole)
            ys.append(y.reshape((n_full * b,) + y.shape[2:]))
        start = memory
        if tail:
            y, acc = self._chunk(model, objective, start, acc, jax.tree.map(lambda x: x[n_full * b :], xs))
            memory = self.weights(acc)
            ys.append(y)
        y_TxD = jnp.concatenate(ys) if ys else jnp.zeros_like(xs[0])
        return y_TxD, RuleState(start, memory, acc, jnp.asarray(tail, jnp.int32))


def scale_last_axis(tree: PyTree, keep_C: jax.Array) -> PyTree:
    """keep ⊙ W: a per-channel factor (C > 1) scales the last (output-channel) axis of every leaf."""
    return jax.tree.map(lambda x: x * keep_C.astype(x.dtype), tree)
