"""The update-rule contract (``titans_core.contracts`` runs it on every built rule): the calls NeuralMemory makes.

The probe traces (``jax.eval_shape``: nothing is computed) every path a chunked rule has, on a tiny linear memory
with b = ``chunk_size``:

- a fresh sequence of T = 2b + 3 tokens (``aligned=True``): whole chunks plus an unfinished tail;
- the same sequence continued mid-chunk (``aligned=False``, b + 2 more tokens, crossing a boundary), then by one
  token (decoding);
- per-channel α (``alpha_TxC`` of shape T × D, what ``alpha_per_channel: true`` passes), unless the rule says
  ``alpha_per_channel = False``;
- bfloat16 everywhere (what ``precision.compute_dtype: bfloat16`` runs: M_0, inputs and gates in bfloat16).

After every call y must be T × D of the inputs' floating dtype and the state a :class:`RuleState` with the
structure and dtypes of the state passed in (the host carries it across pieces and through ``lax.scan``). A rule
that defines ``init_extra(batch_shape, dim, dtype)`` starts from its ``extra`` as NeuralMemory does.

Optional declarations a rule may make (checked here): ``gates`` — the gates it reads, a subset of
``("theta", "eta", "alpha")`` (default: all; NeuralMemory creates only those and passes zeros for the others);
``alpha_per_channel`` — False when it does not support per-channel α; ``check_model(model, objective)`` — a
build-time refusal of memory models or objectives it does not support.
"""

from __future__ import annotations

import inspect
from typing import Any

import jax
import jax.numpy as jnp

from titans_core.protocols import Gates, RuleState

GATE_NAMES = ("theta", "eta", "alpha")  # Gates.theta_T, eta_T, alpha_TxC: what a rule may declare in ``gates``
PROBE_D = 8  # width of the probe problem (small: only shapes are traced)
_F32 = jnp.float32


def short(exc: BaseException) -> str:
    """``Type: message`` of an exception, on one line, at most 200 characters of message."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}{'…' if len(text) > 200 else ''}"


def abstract(shape: tuple[int, ...], dtype: Any = _F32) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, dtype)


class ProbeLinear:
    """M(x) = x W: the memory model the update-rule check runs on."""

    channel_axis_ok = True
    matrix_param = "w"  # a matrix memory: rules with a matrix-only fast path (``fused``) accept it

    def init(self, key: jax.Array, dim: int) -> dict[str, jax.Array]:
        return {"w": jnp.zeros((dim, dim), _F32)}

    def apply(self, params: dict[str, jax.Array], x_TxD: jax.Array) -> jax.Array:
        return x_TxD @ params["w"].astype(x_TxD.dtype)


class ProbeL2:
    """ℓ = ‖pred − v‖² per token: the objective the update-rule check passes."""

    def loss(self, pred_TxD: jax.Array, v_TxD: jax.Array) -> jax.Array:
        return jnp.sum(jnp.square(pred_TxD - v_TxD), axis=-1)

    def cotangent(self, pred_TxD: jax.Array, v_TxD: jax.Array) -> jax.Array:
        return 2.0 * (pred_TxD - v_TxD)


def declared_gates(rule: Any) -> tuple[str, ...]:
    """The gates a rule reads (its ``gates`` declaration; all of them by default), in ``GATE_NAMES`` order."""
    gates = getattr(rule, "gates", None)
    if gates is None:
        return GATE_NAMES
    return tuple(name for name in GATE_NAMES if name in gates)


def _declaration_problems(rule: Any) -> list[str]:
    problems = []
    gates = getattr(rule, "gates", None)
    if gates is not None and (
        isinstance(gates, str) or not all(isinstance(g, str) for g in gates) or not set(gates) <= set(GATE_NAMES)
    ):
        problems.append(f"gates must be a collection of names from {GATE_NAMES}, got {gates!r}")
    per_channel = getattr(rule, "alpha_per_channel", True)
    if not isinstance(per_channel, bool):
        problems.append(f"alpha_per_channel must be a bool, got {per_channel!r}")
    return problems


def check_update_rule(rule: Any) -> list[str]:
    """``UpdateRule``: chunk_size, init_state → RuleState, and the calls NeuralMemory makes (module docstring)."""
    problems = [
        f"has no method {sig}"
        for name, sig in (("init_state", "init_state(params0)"), ("__call__", "__call__(model, state, ...)"))
        if not callable(getattr(rule, name, None))
    ]
    size = getattr(rule, "chunk_size", None)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        problems.append(f"chunk_size must be an int ≥ 1, got {size!r}")
    problems += _declaration_problems(rule)
    if not problems:
        try:
            inspect.signature(rule).bind(*range(6), aligned=True, objective=None)
        except TypeError as exc:
            problems.append(
                "__call__ must accept (model, state, q_TxD, k_TxD, v_TxD, gates, *, aligned=False, "
                f"objective=None) ({exc})"
            )
        except ValueError:  # no signature to inspect (a builtin): the probe calls below decide
            pass
    if problems:
        return problems
    model, objective = ProbeLinear(), ProbeL2()
    check_model = getattr(rule, "check_model", None)
    if callable(check_model):
        try:
            check_model(model, objective)
        except Exception:  # the rule refuses a linear memory with ℓ2: nothing to probe it on
            return []
    assert isinstance(size, int)  # checked above
    b, D = size, PROBE_D
    T = 2 * b + 3
    per_channel = getattr(rule, "alpha_per_channel", True)
    runs: list[tuple[str, Any, int, list[tuple[int, bool]]]] = [
        ("", _F32, 1, [(T, True), (b + 2, False), (1, False)]),
        (", with per-channel α", _F32, D, [(T, True), (b + 2, False)]),
        (", in bfloat16", jnp.bfloat16, 1, [(T, True), (b + 2, False)]),
    ]
    for label, dtype, C, pieces in runs:
        if C > 1 and not per_channel:
            continue
        params0 = {"w": abstract((D, D), dtype)}
        state, problems = _initial_state(rule, params0, D, dtype)
        if problems:
            return problems
        seen = 0
        for length, aligned in pieces:
            where = (
                f"a fresh sequence of {length} tokens (aligned=True{label})"
                if aligned
                else f"{length} token{'s' if length > 1 else ''} after {seen} (aligned=False{label})"
            )
            out, problems = _probe_call(rule, model, objective, state, length, D, C, dtype, aligned, where)
            if problems:
                return problems
            state, seen = out, seen + length
    return []


def _initial_state(rule: Any, params0: Any, D: int, dtype: Any) -> tuple[Any, list[str]]:
    try:
        state = jax.eval_shape(rule.init_state, params0)
    except Exception as exc:
        return None, [f"init_state(params0) raised {short(exc)}"]
    if not isinstance(state, RuleState):
        return None, [
            "init_state(params0) must return titans_core.RuleState (build it with "
            f"titans_core.init_rule_state), got {type(state).__name__}"
        ]
    problems = state_problems("init_state(params0)", state, params0)
    if problems:
        return None, problems
    init_extra = getattr(rule, "init_extra", None)
    if callable(init_extra):
        try:
            extra = jax.eval_shape(lambda: init_extra((), D, dtype))
        except Exception as exc:
            return None, [f"init_extra((), {D}, {jnp.dtype(dtype).name}) raised {short(exc)}"]
        state = state._replace(extra=extra)
    return state, []


def _probe_call(
    rule: Any, model: Any, objective: Any, state: RuleState, T: int, D: int, C: int, dtype: Any, aligned: bool, where
) -> tuple[Any, list[str]]:
    call = f"rule(model, state, q, k, v, gates, aligned={aligned}, objective=...) on {where}"
    x = abstract((T, D), dtype)
    gates = Gates(abstract((T,), dtype), abstract((T,), dtype), abstract((T, C), dtype))  # type: ignore[arg-type]
    try:
        out = jax.eval_shape(
            lambda st, q, k, v, g: rule(model, st, q, k, v, g, aligned=aligned, objective=objective),
            state,
            x,
            x,
            x,
            gates,
        )
    except Exception as exc:
        return None, [f"{call} raised {short(exc)}"]
    if not (isinstance(out, tuple) and len(out) == 2):
        return None, [f"{call} must return (y_TxD, RuleState), got {type(out).__name__}"]
    y, new_state = out
    problems = []
    if not isinstance(y, jax.ShapeDtypeStruct) or y.shape != (T, D):
        problems.append(f"{call}: y must have shape ({T}, {D}), got {getattr(y, 'shape', type(y).__name__)}")
    elif y.dtype != jnp.dtype(dtype):
        problems.append(f"{call}: y must have the inputs' dtype {jnp.dtype(dtype).name}, got {y.dtype}")
    if not isinstance(new_state, RuleState):
        problems.append(f"{call} must return a titans_core.RuleState, got {type(new_state).__name__}")
    else:
        problems += state_problems(call, new_state, state.memory)
        if not problems:
            problems += _same_state(call, state, new_state)
    return new_state, problems


def _same_state(where: str, before: RuleState, after: RuleState) -> list[str]:
    """The state after a call has the structure, shapes and dtypes of the one before (the host carries it)."""
    problems = []
    for field in ("start", "memory", "surprise", "extra"):
        a, b = getattr(before, field), getattr(after, field)
        if jax.tree.structure(a) != jax.tree.structure(b):  # type: ignore[operator]
            problems.append(
                f"{where}: RuleState.{field} changed structure ({jax.tree.structure(a)} → {jax.tree.structure(b)})"
            )
            continue
        for path, x, y in zip(
            (jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(a)),
            jax.tree.leaves(a),
            jax.tree.leaves(b),
            strict=True,
        ):
            if (getattr(x, "shape", None), getattr(x, "dtype", None)) != (
                getattr(y, "shape", None),
                getattr(y, "dtype", None),
            ):
                problems.append(
                    f"{where}: RuleState.{field}{path} changed from {x.dtype}{list(x.shape)} to "
                    f"{getattr(y, 'dtype', '?')}{list(getattr(y, 'shape', ()))}"
                )
    return problems


def state_problems(where: str, state: RuleState, params0: Any) -> list[str]:
    """``start``/``memory``/``surprise`` have the parameters' structure; ``pos`` is an integer scalar."""
    problems = []
    want = jax.tree.structure(params0)
    for field in ("start", "memory", "surprise"):
        got = jax.tree.structure(getattr(state, field))
        if got != want:  # type: ignore[operator]  # PyTreeDef compares by structure (jaxlib stub lacks __ne__)
            problems.append(f"{where}: RuleState.{field} must have the structure of the parameters ({want}), got {got}")
    pos = state.pos
    scalar = isinstance(pos, jax.ShapeDtypeStruct) and pos.shape == ()
    if not (scalar and jnp.issubdtype(pos.dtype, jnp.integer)):
        problems.append(f"{where}: RuleState.pos must be an integer scalar, got {pos!r}")
    return problems
