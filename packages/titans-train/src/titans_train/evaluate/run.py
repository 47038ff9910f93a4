"""Evaluate trained runs: resolve what to measure for each run directory, then measure it.

:func:`plan_run` checks every option against a run (before any model work), :func:`evaluate` does the work.
Defaults follow the run: the tasks are the run's own task (``mqar`` / ``niah`` / ``niah_multikey`` /
``niah_multivalue`` / ``babilong`` data sources) or the held-out LM loss (any text source), the context is the
run's ``data.seq_len``, and MQAR and the haystack tasks use the run's settings (key-value pairs, needles,
facts) when it was trained on that task. Each result of a model with a neural memory also holds the memory
diagnostics on that task's inputs (``"memory"``, see :mod:`titans_train.evaluate.memory`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from titans_attention.params import count_params
from titans_core import TitansUserError

from titans_train.evaluate.memory import EvalMemoryStats
from titans_train.evaluate.scorers import HAYSTACK_TASKS, Predictor, haystack_eval, heldout_lm, mqar_eval, niah_eval
from titans_train.resources import FLOAT32, check_context_memory
from titans_train.tasks.babilong import DEFAULT_FACTS, babilong_min_context_length
from titans_train.tasks.mqar import validate_mqar_config
from titans_train.tasks.niah import niah_min_context_length
from titans_train.tasks.niah_multi import DEFAULT_NEEDLES, multi_min_context_length

TASKS = ("lm", "niah", "mqar", *HAYSTACK_TASKS)
_NEEDLE_FIELDS = {"niah_multikey": "num_keys", "niah_multivalue": "num_values"}  # source field of num_needles


@dataclass(frozen=True)
class EvalOptions:
    """What ``titans-eval`` was asked for (None: follow the run)."""

    tasks: tuple[str, ...] | None = None  # one or more of TASKS (None: the run's own task)
    contexts: tuple[int, ...] | None = None  # context lengths in tokens (None: the run's data.seq_len)
    examples: int = 40  # S-NIAH and MQAR examples per context length
    seed: int = 0  # seed of the generated examples
    batch_size: int = 8  # sequences per forward pass
    lm_tokens: int = 32_768  # held-out tokens per LM context length (at most)
    text: tuple[str, ...] = ()  # held-out LM text files (default: the run's validation split)
    num_kv_pairs: int | None = None  # MQAR key-value pairs (default: the run's, else 8)
    mqar_vocab: int | None = None  # MQAR vocabulary (default: the run's, else the model's vocab_size)
    value_kind: str | None = None  # (multi-)NIAH value: number | uuid (default: the run's, else number)
    session: str | None = None  # memory session every sequence starts from (None: a fresh memory)


@dataclass
class RunPlan:
    """One run directory with everything resolved."""

    run_dir: Path
    model: Any
    spec: Any
    step: int
    byte_level: bool
    tasks: tuple[str, ...]
    contexts: tuple[int, ...]
    mqar: dict[str, Any] = field(default_factory=dict)
    value_kind: str = "number"
    haystack: dict[str, dict[str, Any]] = field(default_factory=dict)  # task -> generator options
    lm_tokens: np.ndarray | None = None
    session: Any = None  # (cache, SessionInfo) of options.session


def _source(spec: Any) -> tuple[str, Any]:
    source = spec.data.source
    return source.name, source


def plan_run(run_dir: Path, options: EvalOptions) -> RunPlan:
    """Load the latest checkpoint of ``run_dir`` and resolve ``options`` against it (TitansUserError)."""
    from titans_train.sampling import load_run_model

    model, spec, step, byte_level = load_run_model(run_dir)
    source_name, source = _source(spec)
    tasks = options.tasks or ((source_name,) if source_name in TASKS else ("lm",))
    contexts = options.contexts or (spec.data.seq_len,)
    flag = "--contexts" if options.contexts else f"{run_dir}: data.seq_len"
    check_context_memory(contexts, spec, FLOAT32 * count_params(model), flag)  # before any example is made
    plan = RunPlan(run_dir, model, spec, step, byte_level, tuple(tasks), tuple(contexts))
    where = f"{run_dir}"
    if options.session is not None:
        from titans_train.sessions import SessionError, load_session

        plan.session = load_session(run_dir, options.session, model, step)
        if plan.session is None:
            raise SessionError(f"--session {options.session}: {run_dir} has no session {options.session!r}")
    if "niah" in tasks:
        if spec.vocab_size < 256:
            raise TitansUserError(
                f"{where}: S-NIAH is byte level and needs vocab_size >= 256 (the model has {spec.vocab_size})"
            )
        plan.value_kind = options.value_kind or (source.value_kind if source_name == "niah" else "number")
        shortest = niah_min_context_length(plan.value_kind)
        short = [c for c in contexts if c < shortest]
        if short:
            flag = "--contexts" if options.contexts else f"{where}: data.seq_len (the default context)"
            raise TitansUserError(f"{flag}: S-NIAH needs contexts of at least {shortest} bytes, got {short[0]}")
    for task in (t for t in tasks if t in HAYSTACK_TASKS):
        _plan_haystack(plan, task, source_name, source, options)
    if "mqar" in tasks:
        own = source_name == "mqar"
        plan.mqar = {
            "vocab_size": options.mqar_vocab or (source.vocab_size if own else spec.vocab_size),
            "num_kv_pairs": options.num_kv_pairs or (source.num_kv_pairs if own else 8),
            "power_a": source.power_a if own else 0.01,
            "random_non_queries": source.random_non_queries if own else True,
            "delay": source.delay if own else 0,
        }
        if plan.mqar["vocab_size"] > spec.vocab_size:
            raise TitansUserError(
                f"--mqar-vocab {plan.mqar['vocab_size']} is larger than the model's vocabulary ({spec.vocab_size})"
            )
        for context in contexts:
            try:
                validate_mqar_config(
                    plan.mqar["vocab_size"],
                    context,
                    plan.mqar["num_kv_pairs"],
                    plan.mqar["power_a"],
                    plan.mqar["delay"],
                )
            except ValueError as exc:
                raise TitansUserError(f"MQAR at context {context}: {exc}") from None
    if "lm" in tasks:
        plan.lm_tokens = _heldout_tokens(spec, options, where)
        need = max(contexts) + 1
        if plan.lm_tokens.size < need:
            raise TitansUserError(
                f"{where}: the held-out text has {plan.lm_tokens.size:,} tokens, fewer than one window of "
                f"{need:,} (the largest context + 1)"
            )
    return plan


def _plan_haystack(plan: RunPlan, task: str, source_name: str, source: Any, options: EvalOptions) -> None:
    """Resolve the generator options of a haystack task and check the model and contexts against them."""
    where, own = str(plan.run_dir), source_name == task
    if plan.spec.vocab_size < 256:
        raise TitansUserError(
            f"{where}: {task} is byte level and needs vocab_size >= 256 (the model has {plan.spec.vocab_size})"
        )
    if task == "babilong":
        args: dict[str, Any] = {"num_facts": source.num_facts if own else DEFAULT_FACTS}
        shortest = babilong_min_context_length(**args)
    else:
        kind = options.value_kind or (
            getattr(source, "value_kind", "number") if source_name.startswith("niah") else "number"
        )
        args = {"num_needles": getattr(source, _NEEDLE_FIELDS[task]) if own else DEFAULT_NEEDLES, "value_kind": kind}
        shortest = multi_min_context_length(task, **args)
    short = [c for c in plan.contexts if c < shortest]
    if short:
        flag = "--contexts" if options.contexts else f"{where}: data.seq_len (the default context)"
        raise TitansUserError(f"{flag}: {task} needs contexts of at least {shortest} bytes, got {short[0]}")
    plan.haystack[task] = args


@functools.cache
def _text_tokens(paths: tuple[str, ...]) -> np.ndarray:
    """The byte tokens of ``--text`` files, read once for all the runs of one command."""
    from titans_train.data.sources import TextSource, TextSourceConfig

    return TextSource(TextSourceConfig(paths=list(paths))).load().tokens


def clear_text_cache() -> None:
    """Forget the ``--text`` files read so far (they may have changed)."""
    _text_tokens.cache_clear()


def _heldout_tokens(spec: Any, options: EvalOptions, where: str) -> np.ndarray:
    from titans_train.data import Splits
    from titans_train.plan import load_splits

    if options.text:
        tokens = _text_tokens(options.text)
        if int(tokens.max()) >= spec.vocab_size:
            raise TitansUserError(f"--text: byte ids exceed the model's vocabulary ({spec.vocab_size})")
        return tokens
    splits = load_splits(spec)
    if not isinstance(splits, Splits) or splits.val is None:
        raise TitansUserError(
            f"{where}: the run has no held-out text split (its data source is a task or val_fraction is 0); "
            "give --text FILE for the held-out LM task"
        )
    return splits.val


def evaluate(plan: RunPlan, options: EvalOptions, progress: Any = None) -> dict[str, Any]:
    """Every (task, context) of ``plan``; returns the run's entry of the result document."""
    predictor = Predictor(plan.model, batch_size=options.batch_size, cache=plan.session[0] if plan.session else None)
    memory = None if plan.session else EvalMemoryStats(plan, options)  # the statistics are of a fresh memory
    results = []
    for task in plan.tasks:
        for context in plan.contexts:
            if progress is not None:
                progress(f"{plan.run_dir}: {task} at context {context}")
            if task == "lm":
                assert plan.lm_tokens is not None
                results.append(
                    heldout_lm(
                        predictor,
                        plan.lm_tokens,
                        context,
                        max_tokens=options.lm_tokens,
                        byte_level=plan.byte_level,
                    )
                )
            elif task == "niah":
                results.append(
                    niah_eval(predictor, context, n=options.examples, seed=options.seed, value_kind=plan.value_kind)
                )
            elif task in HAYSTACK_TASKS:
                results.append(
                    haystack_eval(
                        predictor, task, context, n=options.examples, seed=options.seed, **plan.haystack[task]
                    )
                )
            else:
                results.append(mqar_eval(predictor, context, n=options.examples, seed=options.seed, **plan.mqar))
            stats = memory(task, context) if memory is not None else None
            if stats is not None:
                results[-1]["memory"] = stats
    return {
        "run_dir": str(plan.run_dir),
        "variant": plan.spec.model.name,
        "step": plan.step,
        "param_count": count_params(plan.model),
        "data": plan.spec.data.source.name,
        "results": results,
        **({"session": {"name": plan.session[1].name, "tokens": plan.session[1].tokens}} if plan.session else {}),
    }
