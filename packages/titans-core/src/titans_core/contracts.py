"""Check a built component against its kind's protocol (``titans_core.protocols``), before it is used.

``Registry.build`` calls :func:`check_contract` on everything it builds, so a plugin whose component does not
fit fails when the model is built — before training writes any file — with one line naming the component, its
plugin (distribution) and every missing piece, instead of a traceback from deep inside a traced forward pass::

    update_rule 'my_rule' (plugin my-rules 0.1.0) does not satisfy UpdateRule: init_state(params0) must return
    titans_core.RuleState (build it with titans_core.init_rule_state), got tuple

The checks are structural (attributes, signatures) and, where that is cheap, behavioural on abstract values
(``jax.eval_shape``: no arrays are computed): a memory model's ``init``/``apply`` shapes, an update rule's
state type and one call on a tiny linear memory, an objective's output shapes; an attention's call signatures.
Kinds without a checker (plugin-defined kinds) pass. Correctness — e.g. that an objective's cotangent is the
gradient of its loss — is the job of the author's tests (see ``titans_memory.testing``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from titans_core.errors import TitansUserError
from titans_core.protocols import Gates, RuleState

PROBE_T, PROBE_D = 3, 8  # the abstract problem the behavioural checks run: T tokens of width D
_F32 = jnp.float32


class ContractError(TitansUserError, TypeError):
    """A built component does not satisfy its kind's protocol (one line: the component, its plugin, what)."""


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}{'…' if len(text) > 200 else ''}"


def _missing_methods(obj: Any, methods: dict[str, str]) -> list[str]:
    return [f"has no method {sig}" for name, sig in methods.items() if not callable(getattr(obj, name, None))]


def _abstract(shape: tuple[int, ...], dtype: Any = _F32) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, dtype)


class _ProbeLinear:
    """M(x) = x W: the memory model the update-rule check runs on."""

    channel_axis_ok = True
    matrix_param = "w"  # a matrix memory: rules with a matrix-only fast path (``fused``) accept it

    def init(self, key: jax.Array, dim: int) -> dict[str, jax.Array]:
        return {"w": jnp.zeros((dim, dim), _F32)}

    def apply(self, params: dict[str, jax.Array], x_TxD: jax.Array) -> jax.Array:
        return x_TxD @ params["w"]


class _ProbeL2:
    """ℓ = ‖pred − v‖² per token: the objective the update-rule check passes."""

    def loss(self, pred_TxD: jax.Array, v_TxD: jax.Array) -> jax.Array:
        return jnp.sum(jnp.square(pred_TxD - v_TxD), axis=-1)

    def cotangent(self, pred_TxD: jax.Array, v_TxD: jax.Array) -> jax.Array:
        return 2.0 * (pred_TxD - v_TxD)


def check_memory_model(model: Any) -> list[str]:
    """``MemoryModel``: init(key, dim) → float arrays; apply(params, x_TxD) → T×dim; channel_axis_ok."""
    problems = _missing_methods(model, {"init": "init(key, dim)", "apply": "apply(params, x_TxD)"})
    if not hasattr(model, "channel_axis_ok"):
        problems.append("has no attribute channel_axis_ok (bool)")
    elif not isinstance(model.channel_axis_ok, bool):
        problems.append(f"channel_axis_ok must be a bool, got {type(model.channel_axis_ok).__name__}")
    if problems:
        return problems
    T, D = PROBE_T, PROBE_D
    try:
        params = jax.eval_shape(lambda key: model.init(key, D), jax.random.key(0))
    except Exception as exc:
        return [f"init(key, {D}) raised {_short(exc)}"]
    leaves = jax.tree_util.tree_leaves_with_path(params)
    if not leaves:
        return [f"init(key, {D}) must return a pytree of arrays, got no arrays"]
    for path, leaf in leaves:
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            where = jax.tree_util.keystr(path) or "the result"
            problems.append(f"init(key, {D}): parameter {where} must be a float array, got {leaf.dtype}")
        elif model.channel_axis_ok and (not leaf.shape or leaf.shape[-1] != D):
            where = jax.tree_util.keystr(path) or "the result"
            problems.append(
                f"channel_axis_ok is true but parameter {where} (shape {leaf.shape}) has no last axis of size dim={D}"
            )
    if problems:
        return problems
    try:
        out = jax.eval_shape(model.apply, params, _abstract((T, D)))
    except Exception as exc:
        return [f"apply(params, x_TxD) raised {_short(exc)}"]
    got = _wrong_shape(out, (T, D))
    if got is not None:
        problems.append(f"apply(params, x_TxD) must return a T×dim array ({T}, {D}), got {got}")
    return problems


def _wrong_shape(out: Any, want: tuple[int, ...]) -> Any:
    """None when ``out`` (from jax.eval_shape) is an array of shape ``want``; else what it is instead."""
    if isinstance(out, jax.ShapeDtypeStruct):
        return None if out.shape == want else out.shape
    return type(out).__name__


def check_objective(objective: Any) -> list[str]:
    """``Objective``: loss(pred_TxD, v_TxD) → T; cotangent(pred_TxD, v_TxD) → T×D; with ``token_params`` (a dict
    name → fresh value > 0) both also take those names as keywords, each of shape T."""
    problems = _missing_methods(objective, {"loss": "loss(pred_TxD, v_TxD)", "cotangent": "cotangent(pred_TxD, v_TxD)"})
    if problems:
        return problems
    T, D = PROBE_T, PROBE_D
    token_params = getattr(objective, "token_params", None)
    if token_params is None:
        token_params = {}
    elif not (
        isinstance(token_params, dict)
        and all(isinstance(n, str) and n.isidentifier() for n in token_params)
        and all(isinstance(x, int | float) and not isinstance(x, bool) and x > 0 for x in token_params.values())
    ):
        return [f"token_params must be a dict of parameter names to values > 0, got {token_params!r}"]
    extra = {name: _abstract((T,)) for name in token_params}  # what NeuralMemory passes: one value per token
    args = ", ".join(["pred_TxD", "v_TxD"] + [f"{n}=<T>" for n in token_params])
    for method, want in (("loss", (T,)), ("cotangent", (T, D))):
        try:
            out = jax.eval_shape(
                lambda p, v, e, m=method: getattr(objective, m)(p, v, **e), _abstract((T, D)), _abstract((T, D)), extra
            )
        except Exception as exc:
            problems.append(f"{method}({args}) raised {_short(exc)}")
            continue
        got = _wrong_shape(out, want)
        if got is not None:
            problems.append(f"{method}({args}) must return shape {want}, got {got}")
    return problems


def check_update_rule(rule: Any) -> list[str]:
    """``UpdateRule``: chunk_size, init_state → RuleState, and the call NeuralMemory makes (the protocol)."""
    problems = _missing_methods(rule, {"init_state": "init_state(params0)", "__call__": "__call__(model, state, ...)"})
    size = getattr(rule, "chunk_size", None)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        problems.append(f"chunk_size must be an int ≥ 1, got {size!r}")
    if not problems:
        try:
            inspect.signature(rule).bind(*range(6), aligned=True, objective=None)
        except TypeError as exc:
            problems.append(
                "__call__ must accept (model, state, q_TxD, k_TxD, v_TxD, gates, *, aligned=False, "
                f"objective=None) ({exc})"
            )
        except ValueError:  # no signature to inspect (a builtin): the probe call below decides
            pass
    if problems:
        return problems
    T, D = PROBE_T, PROBE_D
    params0 = {"w": _abstract((D, D))}
    try:
        state = jax.eval_shape(rule.init_state, params0)
    except Exception as exc:
        return [f"init_state(params0) raised {_short(exc)}"]
    if not isinstance(state, RuleState):
        return [
            "init_state(params0) must return titans_core.RuleState (build it with "
            f"titans_core.init_rule_state), got {type(state).__name__}"
        ]
    problems = _state_problems("init_state(params0)", state, params0)
    if problems:
        return problems
    model, objective = _ProbeLinear(), _ProbeL2()
    x = _abstract((T, D))
    gates = Gates(_abstract((T,)), _abstract((T,)), _abstract((T, 1)))  # type: ignore[arg-type]  # shapes only
    for aligned in (True, False):
        call = f"rule(model, state, q, k, v, gates, aligned={aligned}, objective=...)"
        try:
            out = jax.eval_shape(
                lambda st, q, k, v, g, a=aligned: rule(model, st, q, k, v, g, aligned=a, objective=objective),
                state,
                x,
                x,
                x,
                gates,
            )
        except Exception as exc:
            return [f"{call} raised {_short(exc)}"]
        if not (isinstance(out, tuple) and len(out) == 2):
            return [f"{call} must return (y_TxD, RuleState), got {type(out).__name__}"]
        y, new_state = out
        if not isinstance(y, jax.ShapeDtypeStruct) or y.shape != (T, D):
            got = getattr(y, "shape", type(y).__name__)
            problems.append(f"{call}: y must have shape ({T}, {D}), got {got}")
        if not isinstance(new_state, RuleState):
            problems.append(f"{call} must return a titans_core.RuleState, got {type(new_state).__name__}")
        else:
            problems += _state_problems(call, new_state, params0)
        if problems:
            return problems
    return problems


def _state_problems(where: str, state: RuleState, params0: Any) -> list[str]:
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


def check_variant(variant: Any) -> list[str]:
    """``Variant``: callable on tokens; init_cache(batch_size), prefill(tokens_BxT), decode(tokens, cache)."""
    problems = [] if callable(variant) else ["is not callable as model(tokens_BxT)"]
    return problems + _missing_methods(
        variant,
        {
            "init_cache": "init_cache(batch_size)",
            "prefill": "prefill(tokens_BxT)",
            "decode": "decode(tokens_BxT, cache)",
        },
    )


def _accepts(method: Any, args: int, keywords: tuple[str, ...]) -> bool:
    """Whether ``method`` can be called with ``args`` positional arguments and ``keywords`` (None each)."""
    try:
        inspect.signature(method).bind(*range(args), **dict.fromkeys(keywords))
    except TypeError:
        return False
    except ValueError:  # no signature to inspect (a builtin): assume it fits
        return True
    return True


def check_attention(attn: Any) -> list[str]:
    """``AttentionBlock``: the calls titans-attention's mixers make (structural: the signatures)."""
    problems = [] if callable(attn) else ["is not callable as attn(x_BxTxD, *, prefix_BxTxD=None, positions=None)"]
    problems += _missing_methods(
        attn,
        {
            "init_cache": "init_cache(batch_size)",
            "prefill": "prefill(x_BxTxD, *, prefix_BxTxD=None)",
            "decode": "decode(x_BxTxD, cache, *, prefix_BxTxD=None)",
        },
    )
    if problems:
        return problems
    calls = (
        ("__call__", attn, 1, ("prefix_BxTxD", "positions"), "attn(x_BxTxD, *, prefix_BxTxD=None, positions=None)"),
        ("prefill", attn.prefill, 1, ("prefix_BxTxD",), "prefill(x_BxTxD, *, prefix_BxTxD=None)"),
        ("decode", attn.decode, 2, ("prefix_BxTxD",), "decode(x_BxTxD, cache, *, prefix_BxTxD=None)"),
        ("init_cache", attn.init_cache, 1, (), "init_cache(batch_size)"),
    )
    for _name, method, args, keywords, want in calls:
        if not _accepts(method, args, keywords):
            problems.append(f"must accept the call {want}")
    return problems


def check_data_source(source: Any) -> list[str]:
    """A data source: ``load()`` (titans-train gives it meaning: a Corpus or a LabelledTask)."""
    return _missing_methods(source, {"load": "load()"})


CHECKERS: dict[str, tuple[str, Callable[[Any], list[str]]]] = {
    "memory_model": ("MemoryModel", check_memory_model),
    "update_rule": ("UpdateRule", check_update_rule),
    "objective": ("Objective", check_objective),
    "attention": ("AttentionBlock", check_attention),
    "variant": ("Variant", check_variant),
    "data_source": ("the data_source contract", check_data_source),
}


def check_contract(kind: str, obj: Any, *, who: str) -> None:
    """Raise :class:`ContractError` (one line, starting with ``who``) unless ``obj`` satisfies ``kind``'s
    protocol.

    ``who`` names the component and where it comes from, e.g. ``update_rule 'x' (plugin my-rules 0.1.0)``.
    """
    if kind not in CHECKERS:
        return
    protocol, checker = CHECKERS[kind]
    problems = checker(obj)
    if problems:
        raise ContractError(f"{who} does not satisfy {protocol}: {'; '.join(problems)}")
