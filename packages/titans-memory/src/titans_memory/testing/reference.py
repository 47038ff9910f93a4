"""The float64 reference checks behind ``titans_memory.testing``: random problems, cotangent = ∇ loss, and two
rules agreeing (outputs, state, outer gradients) on one aligned call."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from titans_core.protocols import Gates, MemoryModel, Objective, UpdateRule

F64_TOL = 1e-9  # float64: the rules are the same arithmetic up to reassociation


def _max_rel_err(a: Any, b: Any) -> float:
    errs = [  # in NumPy: no small program to compile per leaf shape
        float(np.max(np.abs(x - y)) / (np.max(np.abs(x)) + 1e-30))
        for x, y in zip(*(map(np.asarray, jax.tree.leaves(t)) for t in (a, b)), strict=True)
    ]
    return max(errs)


def random_problem(
    seed: int, T: int, D: int, model: MemoryModel, C: int = 1, objective: Objective | None = None
) -> tuple[Any, ...]:
    """(M_0, q, k, v, gates) in float64: random inputs (unit-norm keys) and gates in their valid ranges; with an
    objective that declares ``token_params``, ``gates.objective_T`` holds random values for them."""
    ks = jax.random.split(jax.random.key(seed), 8)
    p0 = jax.tree.map(lambda x: x.astype(jnp.float64), model.init(ks[0], D))
    q, k, v = (jax.random.normal(ks[i], (T, D), jnp.float64) for i in (1, 2, 3))
    k = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
    gates = Gates(
        0.1 * jax.random.uniform(ks[4], (T,), jnp.float64),
        jax.random.uniform(ks[5], (T,), jnp.float64),
        0.3 * jax.random.uniform(ks[6], (T, C), jnp.float64),
        random_token_params(ks[7], T, objective),
    )
    return p0, q, k, v, gates


def random_token_params(key: jax.Array, T: int, objective: Objective | None) -> dict[str, jax.Array]:
    """Random per-token values (float64, shape T) of the objective's ``token_params``: each its fresh value times
    a factor in [e^−1, e]; {} for an objective without any."""
    names = dict(getattr(objective, "token_params", None) or {})
    keys = jax.random.split(key, max(1, len(names)))
    return {
        name: init * jnp.exp(jax.random.uniform(kk, (T,), jnp.float64, -1.0, 1.0))
        for kk, (name, init) in zip(keys, sorted(names.items()), strict=False)
    }


def check_cotangent(objective: Objective, *, T: int = 7, D: int = 5, seed: int = 0, scale: float = 1.0) -> None:
    """``cotangent`` equals the gradient of Σ_t ``loss`` (float64), and so does its own derivative (the outer
    loop of training differentiates through the cotangent, also into the per-token parameters of an objective
    with ``token_params``). ``scale`` sets the size of the residuals."""
    with jax.enable_x64(True):
        kp, kv, kw, kt = jax.random.split(jax.random.key(seed), 4)
        pred = scale * jax.random.normal(kp, (T, D), jnp.float64)
        v = scale * jax.random.normal(kv, (T, D), jnp.float64)
        w = jax.random.normal(kw, (T, D), jnp.float64)
        tp = random_token_params(kt, T, objective)
        auto = jax.grad(lambda p, v, tp: jnp.sum(objective.loss(p, v, **tp)), argnums=(0, 1))

        # second order: ⟨w, cotangent⟩ and ⟨w, ∇loss⟩ have the same gradient with respect to pred, v and the
        # per-token parameters
        def all_of_it(pred, v, w, tp):  # one compiled program for every value compared below
            outer = lambda f: jax.grad(lambda p, v, tp: jnp.sum(w * f(p, v, tp)), argnums=(0, 1, 2))(pred, v, tp)  # noqa: E731
            return (
                objective.loss(pred, v, **tp),
                auto(pred, v, tp)[0],
                objective.cotangent(pred, v, **tp),
                outer(lambda p, v, tp: auto(p, v, tp)[0]),
                outer(lambda p, v, tp: objective.cotangent(p, v, **tp)),
            )

        loss, grad_of_loss, by_hand, outer_auto, outer_by_hand = jax.jit(all_of_it)(pred, v, w, tp)
        assert loss.shape == (T,), f"loss must have shape ({T},), got {loss.shape}"
        err = _max_rel_err(grad_of_loss, by_hand)
        assert err < F64_TOL, f"cotangent differs from the gradient of loss (relative error {err:.2e})"
        err = _max_rel_err(outer_auto, outer_by_hand)
        assert err < F64_TOL, f"the derivative of cotangent differs from loss's (relative error {err:.2e})"


def check_rules_agree(
    *,
    model: MemoryModel | None = None,
    objective: Objective | None = None,
    rules: tuple[UpdateRule, UpdateRule] | None = None,
    T: int = 13,
    D: int = 6,
    seed: int = 0,
    zero_momentum: bool = False,
) -> None:
    """The chunked rule equals the sequential reference (outputs, final state and outer gradients, float64)
    for this memory model and objective (defaults: a depth-2 MLP, ℓ2; ``rules``: (reference, candidate)).
    ``zero_momentum``: η_t = 0 (for a candidate rule without momentum)."""
    from titans_memory.memory_models import MLPMemory, MLPMemoryConfig
    from titans_memory.rules.momentum_scan import MomentumScanRule
    from titans_memory.rules.sequential import SequentialRule

    model = model if model is not None else MLPMemory(MLPMemoryConfig(depth=2, expansion=2.0))
    ref, fast = rules if rules is not None else (SequentialRule(chunk_size=4), MomentumScanRule(chunk_size=4))
    with jax.enable_x64(True):
        p0, q, k, v, gates = jax.tree.map(np.asarray, random_problem(seed, T, D, model, objective=objective))
        if zero_momentum:
            gates = gates._replace(eta_T=np.zeros_like(gates.eta_T))

        def run(rule, p0, q, k, v, gates):
            return rule(model, rule.init_state(p0), q, k, v, gates, aligned=True, objective=objective)

        def outer(rule, *args):
            y, state = run(rule, *args)
            leaves = jax.tree.leaves((state.memory, state.surprise, state.start))
            return jnp.sum(jnp.sin(y)) + sum(jnp.sum(jnp.cos(x)) for x in leaves), (y, state)

        def both(*args):  # one compiled program: each rule's outputs and state, and its outer gradients
            return tuple(
                jax.value_and_grad(lambda *a, r=r: outer(r, *a), argnums=(0, 1, 2, 3, 4), has_aux=True)(*args)
                for r in (ref, fast)
            )

        ((_, out_ref), g_ref), ((_, out_fast), g_fast) = jax.jit(both)(p0, q, k, v, gates)
        err = _max_rel_err(out_ref, out_fast)
        assert err < F64_TOL, f"outputs/state differ between the rules (relative error {err:.2e})"
        if zero_momentum:  # a rule without momentum does not read η: its gradient is not comparable
            no_eta = lambda g: g[:4] + (g[4]._replace(eta_T=np.zeros_like(g[4].eta_T)),)  # noqa: E731
            g_ref, g_fast = no_eta(g_ref), no_eta(g_fast)
        err = _max_rel_err(g_ref, g_fast)
        assert err < F64_TOL, f"outer gradients differ between the rules (relative error {err:.2e})"
