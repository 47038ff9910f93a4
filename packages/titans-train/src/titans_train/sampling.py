"""Sampling from a trained run: loading its model (``load_run_model``, also used by ``titans-eval``), the sample
printed after training and ``titans-train generate RUN_DIR``.

Generation uses the variants' cached decoder, ``titans_attention.decoding.generate`` (a parallel prefill, then one
token at a time against the caches). Byte-level runs take a text prompt (UTF-8 bytes) and print text (invalid UTF-8
in the output is shown as U+FFFD); other runs take token ids.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
import yaml
from flax import nnx
from titans_core import TitansUserError, parse_spec

from titans_train.checkpoint import Checkpoints
from titans_train.errors import CheckpointError
from titans_train.plan import make_plan
from titans_train.rundir import SPEC_FILE, read_facts, upgrade_saved_spec
from titans_train.sessions import SessionInfo, load_session, save_session
from titans_train.spec import DistributedSpec, MeshSpec, TrainSpec
from titans_train.spec_check import SpecLocator


def encode_prompt(prompt: str | None, prompt_ids: list[int] | None, *, byte_level: bool, vocab_size: int):
    """The prompt as an int32 array of ids (a text prompt needs byte-level data)."""
    if prompt_ids:
        ids = np.asarray(prompt_ids, dtype=np.int32)
        if ids.min() < 0 or ids.max() >= vocab_size:
            raise TitansUserError(f"prompt ids must be in 0 … {vocab_size - 1}")
        return ids
    if prompt is None or prompt == "":
        raise TitansUserError("the prompt is empty: give --prompt TEXT (or --prompt-ids for token ids)")
    if not byte_level:
        raise TitansUserError("this run's data is not byte-level: give the prompt as token ids (--prompt-ids)")
    # surrogateescape: bytes of argv that are not UTF-8 arrive as lone surrogates; they are those bytes again
    return np.frombuffer(prompt.encode("utf-8", errors="surrogateescape"), dtype=np.uint8).astype(np.int32)


def decode(ids: Any, *, byte_level: bool) -> str:
    """Generated ids as text (bytes → UTF-8 with replacement) or as space-separated ids."""
    if byte_level:
        return bytes(int(i) & 0xFF for i in ids).decode("utf-8", errors="replace")
    return " ".join(str(int(i)) for i in ids)


def generate_ids(
    model: Any,
    prompt_ids: np.ndarray,
    *,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    seed: int,
) -> np.ndarray:
    """``max_new_tokens`` ids continuing ``prompt_ids`` (cached decoding)."""
    from titans_attention.decoding import generate  # imported lazily: the variants package owns decoding

    out = generate(
        model,
        jnp.asarray(prompt_ids[None, :]),
        max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
    )
    return np.asarray(out)[0]


def continue_session(
    run_dir: Path,
    name: str,
    model: Any,
    step: int,
    prompt_ids: np.ndarray,
    *,
    reset: bool = False,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    seed: int,
) -> tuple[np.ndarray, SessionInfo]:
    """Generate from memory session ``name`` of ``run_dir`` (a fresh one if missing or ``reset``), then save it:
    the session has then read the prompt and the generated ids (see :mod:`titans_train.sessions`)."""
    from titans_attention.decoding import generate_with_cache

    loaded = None if reset else load_session(run_dir, name, model, step)
    cache, prompts, seen = (
        (None, 0, np.zeros(0, np.int32)) if loaded is None else (loaded[0], loaded[1].prompts, loaded[2])
    )
    out, cache = generate_with_cache(
        model,
        jnp.asarray(prompt_ids[None, :]),
        max_new_tokens,
        cache,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
    )
    ids = np.asarray(out)[0]
    history = np.concatenate([seen, np.asarray(prompt_ids, np.int32), ids.astype(np.int32)])
    info = save_session(run_dir, name, cache, step=step, ids=history, prompts=prompts + 1)
    return ids, info


def _upgraded(text: str) -> str:
    """The saved spec's text with the options a run of an older version used but did not write (see
    ``rundir.PAST_DEFAULTS``); unchanged when nothing is missing (or it does not parse: ``parse_spec`` says why)."""
    try:
        saved = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    upgraded = upgrade_saved_spec(saved)
    return text if upgraded == saved else yaml.safe_dump(upgraded, sort_keys=False, allow_unicode=True)


def load_run_model(run_dir: Path) -> tuple[Any, TrainSpec, int, bool]:
    """(model, spec, step, byte_level) from the latest usable checkpoint of ``run_dir`` (on one device)."""
    run_dir = Path(run_dir)
    spec_file = run_dir / SPEC_FILE
    if not spec_file.exists():
        raise CheckpointError(f"{run_dir} is not a titans-train run directory (no {SPEC_FILE})")
    text = _upgraded(spec_file.read_text(encoding="utf-8"))
    spec = parse_spec(text, TrainSpec, filename=str(spec_file))
    spec = spec.model_copy(update={"mesh": MeshSpec(data=1, num_devices=1), "distributed": DistributedSpec()})
    plan = make_plan(spec, SpecLocator(str(spec_file), text), load_data=False, multi_process=False)
    logging.getLogger("absl").setLevel(logging.ERROR)  # orbax's notes on read-only managers are noise here
    checkpoints = Checkpoints(run_dir, read_only=True)
    try:
        restored = checkpoints.restore_latest(plan.abstract_state(), quarantine=False)
    finally:
        checkpoints.close()
    if restored is None:
        raise CheckpointError(f"{run_dir} has no checkpoint yet")
    step, state, _ = restored
    model = nnx.merge(plan.graphdef, state["params"], state["rest"])
    byte_level = bool(read_facts(run_dir).get("byte_level", spec.vocab_size == 256))
    return model, spec, step, byte_level
