"""Check a built component against its kind's protocol (``titans_core.protocols``), before it is used.

``Registry.build`` calls :func:`check_contract` on everything it builds, so a plugin whose component does not
fit fails when the model is built — before training writes any file — with one line naming the component, its
plugin (distribution) and every missing piece, instead of a traceback from deep inside a traced forward pass::

    update_rule 'my_rule' (plugin my-rules 0.1.0) does not satisfy UpdateRule: init_state(params0) must return
    titans_core.RuleState (build it with titans_core.init_rule_state), got tuple

The checks are structural (attributes, signatures) and, where that is cheap, behavioural on abstract values
(``jax.eval_shape``: no arrays are computed): a memory model's ``init``/``apply`` shapes and dtypes (float32 and
bfloat16) and its optional ``read_and_linearize``; an update rule's state and every path of a chunked rule on a
tiny linear memory (``titans_core.rule_contract``: 2·chunk + 3 tokens, split and unaligned calls, per-channel α,
bfloat16); an objective's output shapes; an attention's call signatures.
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
from titans_core.rule_contract import abstract as _abstract
from titans_core.rule_contract import check_update_rule
from titans_core.rule_contract import short as _short

PROBE_T, PROBE_D = 3, 8  # the abstract problem the model and objective checks run: T tokens of width D


class ContractError(TitansUserError, TypeError):
    """A built component does not satisfy its kind's protocol (one line: the component, its plugin, what)."""


def _missing_methods(obj: Any, methods: dict[str, str]) -> list[str]:
    return [f"has no method {sig}" for name, sig in methods.items() if not callable(getattr(obj, name, None))]


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
    for dtype in (jnp.float32, jnp.bfloat16):  # bfloat16: compute_dtype bfloat16 casts M_0 and the inputs
        call = "apply(params, x_TxD)" + (" in bfloat16" if dtype == jnp.bfloat16 else "")
        cast = jax.tree.map(lambda p, d=dtype: _abstract(p.shape, d), params)
        try:
            out = jax.eval_shape(model.apply, cast, _abstract((T, D), dtype))
        except Exception as exc:
            return [f"{call} raised {_short(exc)}"]
        got = _wrong_shape(out, (T, D))
        if got is not None:
            return [f"{call} must return a T×dim array ({T}, {D}), got {got}"]
        if out.dtype != dtype:
            return [f"{call} must return the inputs' dtype {jnp.dtype(dtype).name}, got {out.dtype}"]
    if hasattr(model, "read_and_linearize"):
        problems += _read_and_linearize_problems(model, params, T, D)
    if hasattr(model, "grad_norms"):
        problems += _grad_norms_problems(model, params, T, D)
    return problems


def _grad_norms_problems(model: Any, params: Any, T: int, D: int) -> list[str]:
    """The optional clamp fast path: grad_norms(params, k_TxD, cot_TxD) → T float norms, one per token."""
    call = "grad_norms(params, k_TxD, cot_TxD)"
    try:
        out = jax.eval_shape(model.grad_norms, params, _abstract((T, D)), _abstract((T, D)))
    except Exception as exc:
        return [f"{call} raised {_short(exc)}"]
    got = _wrong_shape(out, (T,))
    if got is not None:
        return [f"{call} must return one norm per token, shape ({T},), got {got}"]
    if not jnp.issubdtype(out.dtype, jnp.floating):
        return [f"{call} must return float norms, got {out.dtype}"]
    return []


def _read_and_linearize_problems(model: Any, params: Any, T: int, D: int) -> list[str]:
    """The optional fast path of the chunked rules: (M(q), M(k), grad_sums), grad_sums(cot_TxD, *w_TxC) → one
    parameter tree per weighting."""
    call = "read_and_linearize(params, q_TxD, k_TxD)"

    def run(params, q, k, cot, w):
        out = model.read_and_linearize(params, q, k)
        if not (isinstance(out, tuple) and len(out) == 3 and callable(out[2])):
            raise TypeError(f"must return (M(q), M(k), grad_sums), got {type(out).__name__}")
        return out[0], out[1], out[2](cot, w, w)

    x = _abstract((T, D))
    try:
        y_q, y_k, sums = jax.eval_shape(run, params, x, x, x, _abstract((T, 1)))
    except Exception as exc:
        return [f"{call} (or its grad_sums(cot_TxD, w_Tx1, w_Tx1)) raised {_short(exc)}"]
    problems = [
        f"{call}: {what} must be a T×dim array ({T}, {D}), got {got}"
        for what, y in (("M(q)", y_q), ("M(k)", y_k))
        if (got := _wrong_shape(y, (T, D))) is not None
    ]
    want = jax.tree.structure((params, params))
    if not isinstance(sums, tuple) or jax.tree.structure(sums) != want:  # type: ignore[operator]
        problems.append(f"{call}: grad_sums(cot, w1, w2) must return one parameter tree per weighting ({want})")
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
