"""One call per component kind: everything NeuralMemory relies on, checked on concrete values.

``check_update_rule(rule, reference=...)`` runs, in float64 on a random problem of T = 2·chunk + 3 tokens:

- **the contract** (``titans_core.check_contract``: the traced paths of a chunked rule);
- **equality with the reference** (default: the token-by-token ``sequential`` rule with the same chunk size; pass
  your own per-token reference for a rule that computes something else): outputs, final state, outer gradients;
- **split anywhere**: one call on x equals a call on x[:a] (``aligned=True``) then x[a:] (``aligned=False``, from
  the carried state), for a piece that starts mid-chunk and one that crosses boundaries, and token-by-token
  decoding after a prefill that ends mid-chunk;
- **unaligned from the start**: ``aligned=False`` on a fresh state gives the ``aligned=True`` result;
- **causality**: changing tokens ≥ t leaves the outputs before t unchanged;
- **per-channel α** (unless the rule says ``alpha_per_channel = False``): outputs and state against the reference,
  on the matrix memory with α of shape T × D;
- **bfloat16**: the same call in bfloat16 keeps the dtypes and stays close to float32.

Gates a rule does not declare (``gates``) are zero, as NeuralMemory passes them. ``check_memory_model`` and
``check_objective`` run the contract and the chunked rule against the sequential reference with the new piece;
a memory model's optional ``grad_norms`` is checked against autodiff (``check_grad_norms``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from titans_core.contracts import check_contract
from titans_core.protocols import MemoryModel, Objective, UpdateRule
from titans_core.rule_contract import GATE_NAMES, declared_gates

from titans_memory.testing.reference import F64_TOL, _max_rel_err, check_cotangent, check_rules_agree, random_problem

BF16_TOL = 0.1  # relative error of a bfloat16 run against float32 (8 mantissa bits, a few dozen operations)


# The problems, their slices and the comparisons are NumPy arrays: with jax.numpy outside the compiled calls, every
# slice, cast and comparison compiled a small program of its own (about 40 per check_update_rule).


def _zero_undeclared(rule: UpdateRule, gates: Any) -> Any:
    used = declared_gates(rule)
    fields = dict(zip(GATE_NAMES, ("theta_T", "eta_T", "alpha_TxC"), strict=True))
    return gates._replace(**{f: np.zeros_like(getattr(gates, f)) for g, f in fields.items() if g not in used})


def _numpy_problem(*args: Any, **kwargs: Any) -> Any:
    return jax.tree.map(np.asarray, random_problem(*args, **kwargs))


def _slice(gates: Any, lo: int, hi: int) -> Any:
    return jax.tree.map(lambda x: x[lo:hi], gates)


def _assert_close(got: Any, want: Any, what: str, tol: float = F64_TOL) -> None:
    err = _max_rel_err(want, got)
    assert err < tol, f"{what} (relative error {err:.2e})"


def _state_tuple(state: Any) -> tuple[Any, ...]:
    return (state.start, state.memory, state.surprise, state.pos)


def check_update_rule(
    rule: UpdateRule,
    *,
    reference: UpdateRule | None = None,
    model: MemoryModel | None = None,
    objective: Objective | None = None,
    D: int = 4,
    seed: int = 0,
    tol: float = F64_TOL,
) -> None:
    """Assert that ``rule`` behaves as NeuralMemory needs (see the module docstring); ``model`` defaults to a
    depth-2 MLP memory, ``reference`` to ``SequentialRule(chunk_size=rule.chunk_size)``."""
    from titans_memory.memory_models import MLPMemory, MLPMemoryConfig
    from titans_memory.rules.sequential import SequentialRule

    check_contract("update_rule", rule, who=f"update_rule {type(rule).__name__}")
    b = rule.chunk_size
    T = 2 * b + 3
    ref = reference if reference is not None else SequentialRule(chunk_size=b)
    model = model if model is not None else MLPMemory(MLPMemoryConfig(depth=2, expansion=2.0))
    with jax.enable_x64(True):
        per_channel = getattr(rule, "alpha_per_channel", True)
        _check_against_reference(rule, ref, model, objective, T, D, seed, tol, per_channel=per_channel)
        _check_pieces(rule, model, objective, T, D, seed, tol)
    _check_bfloat16(rule, model, objective, T, D, seed)


def _runner(rule: UpdateRule, model: MemoryModel, objective: Objective | None):
    def run(state, q, k, v, gates, aligned):
        return rule(model, state, q, k, v, gates, aligned=aligned, objective=objective)

    return jax.jit(run, static_argnums=5)


def _fresh(rule: UpdateRule, p0: Any, D: int) -> Any:
    state = rule.init_state(p0)
    init_extra = getattr(rule, "init_extra", None)
    if callable(init_extra):
        state = state._replace(extra=init_extra((), D, jax.tree.leaves(p0)[0].dtype))
    return state


def _check_against_reference(rule, ref, model, objective, T, D, seed, tol, *, per_channel: bool) -> None:
    """Outputs, state and outer gradients against ``ref`` with ``model`` (α: C = 1); with ``per_channel``, also
    outputs and state on the matrix memory with α of shape T × D. One compiled program for all of it."""
    from titans_memory.memory_models import MLPMemory, MLPMemoryConfig

    matrix = MLPMemory(MLPMemoryConfig(depth=1))

    def outer(r, model, p0, q, k, v, gates):
        y, state = r(model, _fresh(r, p0, D), q, k, v, gates, aligned=True, objective=objective)
        leaves = jax.tree.leaves((state.memory, state.surprise, state.start))
        return jnp.sum(jnp.sin(y)) + sum(jnp.sum(jnp.cos(x)) for x in leaves), (y, _state_tuple(state))

    def everything(args, channel_args):
        grads = tuple(
            jax.value_and_grad(lambda *a, r=r: outer(r, model, *a), argnums=(0, 1, 2, 3, 4), has_aux=True)(*args)
            for r in (rule, ref)
        )
        channel = tuple(outer(r, matrix, *channel_args)[1] for r in (rule, ref)) if per_channel else None
        return grads, channel

    p0, q, k, v, gates = _numpy_problem(seed, T, D, model, objective=objective)
    args = (p0, q, k, v, _zero_undeclared(rule, gates))
    channel_args = None
    if per_channel:
        p0, q, k, v, gates = _numpy_problem(seed + 1, T, D, matrix, C=D, objective=objective)
        channel_args = (p0, q, k, v, _zero_undeclared(rule, gates))
    (((_, got), g_got), ((_, want), g_want)), channel = jax.jit(everything)(args, channel_args)
    _assert_close(got, want, "outputs/state differ from the reference rule", tol)
    unused = [
        f for g, f in zip(GATE_NAMES, ("theta_T", "eta_T", "alpha_TxC"), strict=True) if g not in declared_gates(rule)
    ]
    zero = lambda g: g[:4] + (g[4]._replace(**{f: np.zeros_like(getattr(g[4], f)) for f in unused}),)  # noqa: E731
    _assert_close(zero(g_got), zero(g_want), "outer gradients differ from the reference rule's", tol)
    if per_channel:
        got, want = channel
        _assert_close(got, want, f"outputs/state differ from the reference rule (per-channel α, C = {D})", tol)


def _check_pieces(rule, model, objective, T, D, seed, tol) -> None:
    p0, q, k, v, gates = _numpy_problem(seed + 2, T, D, model, objective=objective)
    gates = _zero_undeclared(rule, gates)
    run = _runner(rule, model, objective)
    fresh = _fresh(rule, p0, D)
    y, state = run(fresh, q, k, v, gates, True)
    whole = (y, _state_tuple(state))
    y_u, state_u = run(fresh, q, k, v, gates, False)
    _assert_close((y_u, _state_tuple(state_u)), whole, "aligned=False on a fresh state differs from aligned=True", tol)
    b = rule.chunk_size
    for a in (1, b + 1):  # a second piece that starts mid-chunk and crosses boundaries (each shape compiles)
        y1, s1 = run(fresh, q[:a], k[:a], v[:a], _slice(gates, 0, a), True)
        y2, s2 = run(s1, q[a:], k[a:], v[a:], _slice(gates, a, T), False)
        got = (np.concatenate([y1, y2]), _state_tuple(s2))
        _assert_close(got, whole, f"a call split at token {a} (of {T}) differs from one call", tol)
    a = b + 1  # prefill a tokens, then decode one token at a time (across the next boundary)
    ys, st = [], None
    y1, st = run(fresh, q[:a], k[:a], v[:a], _slice(gates, 0, a), True)
    ys.append(y1)
    for t in range(a, T):
        yt, st = run(st, q[t : t + 1], k[t : t + 1], v[t : t + 1], _slice(gates, t, t + 1), False)
        ys.append(yt)
    got = (np.concatenate(ys), _state_tuple(st))
    _assert_close(got, whole, f"a prefill of {a} then token-by-token decoding differs from one call", tol)
    t = b + 1  # causality: the outputs before t do not see tokens ≥ t
    bump = lambda x: np.concatenate([x[:t], x[t:] + 1.0])  # noqa: E731
    y_b, _ = run(fresh, bump(q), bump(k), bump(v), gates, True)
    y_b, y = np.asarray(y_b), np.asarray(y)
    assert np.array_equal(y_b[:t], y[:t]), f"not causal: outputs before token {t} change with later tokens"
    assert not np.allclose(y_b[t:], y[t:]), "the outputs do not depend on the tokens: the check cannot fail"


def _check_bfloat16(rule, model, objective, T, D, seed) -> None:
    with jax.enable_x64(True):
        p0, q, k, v, gates = _numpy_problem(seed + 3, T, D, model, objective=objective)
    to = lambda dtype: lambda tree: jax.tree.map(lambda x: np.asarray(x).astype(dtype), tree)  # noqa: E731
    results = {}
    for dtype in (jnp.float32, jnp.bfloat16):
        cast = to(dtype)
        args = cast((p0, q, k, v, _zero_undeclared(rule, gates)))
        y, state = _runner(rule, model, objective)(_fresh(rule, args[0], D), *args[1:], True)
        floats = [x for x in jax.tree.leaves((y, state.start, state.memory, state.surprise))]
        wrong = sorted({str(x.dtype) for x in floats if x.dtype != dtype})
        assert not wrong, f"in {jnp.dtype(dtype).name}, the output or state came back as {', '.join(wrong)}"
        results[dtype] = to(jnp.float32)((y, state.memory))
    _assert_close(
        results[jnp.bfloat16], results[jnp.float32], "bfloat16 differs from float32 beyond rounding", BF16_TOL
    )


def check_memory_model(
    model: MemoryModel, *, objective: Objective | None = None, read: str = "token", D: int = 6, seed: int = 0
) -> None:
    """The contract, and the chunked rule (``momentum_scan`` with ``read``) equals the sequential reference with this
    memory model: outputs, state and outer gradients in float64 (through ``read_and_linearize`` if it has one)."""
    from titans_memory.rules.momentum_scan import MomentumScanRule
    from titans_memory.rules.sequential import SequentialRule

    check_contract("memory_model", model, who=f"memory_model {type(model).__name__}")
    rules = (SequentialRule(chunk_size=4, read=read), MomentumScanRule(chunk_size=4, read=read))
    check_rules_agree(model=model, objective=objective, rules=rules, D=D, seed=seed)
    if hasattr(model, "grad_norms"):
        check_grad_norms(model, D=D, seed=seed)


def check_grad_norms(model: MemoryModel, *, T: int = 7, D: int = 6, seed: int = 0, tol: float = F64_TOL) -> None:
    """The optional ``grad_norms(params, k, cot)`` is, token by token, the ℓ2 norm of the gradient tree
    ∂⟨cot_i, M(k_i)⟩/∂params that autodiff gives (float64; one token has cot = 0, whose norm is 0)."""
    from titans_memory.rules.base import tree_norm

    if not callable(getattr(model, "grad_norms", None)):
        raise TypeError(f"{type(model).__name__} has no grad_norms(params, k_TxD, cot_TxD) to check")
    with jax.enable_x64(True):
        keys = jax.random.split(jax.random.key(seed), 3)
        params = jax.tree.map(lambda x: x.astype(jnp.float64), model.init(keys[0], D))
        k, cot = (jax.random.normal(key, (T, D), jnp.float64) for key in keys[1:])
        cot = cot.at[T // 2].set(0.0)
        grad = jax.grad(lambda p, k, c: jnp.sum(c * model.apply(p, k[None])[0]))
        want = jax.jit(jax.vmap(lambda k, c: tree_norm(grad(params, k, c))))(k, cot)
        got = jax.jit(model.grad_norms)(params, k, cot)  # type: ignore[attr-defined]
        _assert_close(np.asarray(got), np.asarray(want), "grad_norms differ from the norms of the gradient trees", tol)


def check_objective(
    objective: Objective, *, T: int = 7, D: int = 5, seed: int = 0, scale: float = 1.0, rules: bool = True
) -> None:
    """The contract; ``cotangent`` = ∇ Σ ``loss`` and so are their derivatives (float64; ``scale`` sets the size of
    the residuals); with ``rules``, the chunked rule (which uses only ``cotangent``) equals the sequential one
    (which differentiates ``loss``) with this objective."""
    check_contract("objective", objective, who=f"objective {type(objective).__name__}")
    check_cotangent(objective, T=T, D=D, seed=seed, scale=scale)
    if rules:
        check_rules_agree(objective=objective, seed=seed)
