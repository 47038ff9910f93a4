"""Memory sessions: a model's test-time memory kept on disk between prompts and processes.

Titans' long-term memory learns while it reads (Eq 13–14, at test time). A *session* keeps what it learned: the
decoding cache of one stream — every layer's memory state M, S and attention cache — after everything the session
has read, its prompts and its generated tokens. ``titans-train generate RUN --session NAME`` continues the stream
from that cache and saves it again, so two prompts in two processes give what one prompt of both (with the first
answer between them) gives; ``titans-eval RUN --session NAME`` scores its tasks with every sequence starting from
the session's memory instead of a fresh one.

Decisions (the paper is silent on inference-time persistence):

- A session belongs to one run directory and to the checkpoint step it was started from: its memory was written
  by those weights. When the run's latest checkpoint is another step, the session is refused with a clear message
  (start it over with ``--reset-session``), never silently mixed with other weights.
- One file per session, ``RUN_DIR/sessions/NAME.npz``: the cache's leaves as raw bytes with their shapes and dtypes
  (bf16 included), the token ids the session has read (4 bytes a token: what its memory saw) and a JSON header.
  The structure comes from the model itself (``init_cache(1)``), so a file whose leaves do not fit the model is
  refused, naming the first leaf that differs. Saving writes a temporary file and renames it over the old one: a
  crash mid-save keeps the previous session intact.
- Sessions have batch size 1 (one stream). Two processes continuing one session at the same time: the last to
  save wins (there is no lock).
"""

from __future__ import annotations

import json
import os
import re
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
from titans_core import TitansUserError

FORMAT = "titans-session/1"
DIRNAME = "sessions"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class SessionError(TitansUserError):
    """A session that cannot be used: a bad name, an unreadable file, another checkpoint step, another model."""


@dataclass(frozen=True)
class SessionInfo:
    """The header of a saved session."""

    name: str
    step: int  # the checkpoint step whose weights wrote the memory
    tokens: int  # tokens the session has read (prompts and generated tokens)
    prompts: int  # calls that continued it
    updated: float  # seconds since the epoch of the last save


def session_path(run_dir: Path, name: str) -> Path:
    """``RUN_DIR/sessions/NAME.npz``; a SessionError for a name that is not a plain file name."""
    if not _NAME.fullmatch(name):
        raise SessionError(
            f"--session {name!r}: use letters, digits, '_', '.' and '-' (at most 64, starting with a letter or digit)"
        )
    return Path(run_dir) / DIRNAME / f"{name}.npz"


def _leaf_specs(template: Any) -> list[tuple[tuple[int, ...], str]]:
    return [(tuple(int(d) for d in leaf.shape), str(np.dtype(leaf.dtype))) for leaf in jax.tree.leaves(template)]


def cache_template(model: Any) -> Any:
    """Shapes and dtypes of ``model``'s batch-1 decoding cache, without computing it."""
    return jax.eval_shape(lambda: model.init_cache(1))


def _read(path: Path, *, leaves: bool = True) -> tuple[dict[str, Any], list[np.ndarray], np.ndarray]:
    """(header, the leaves' raw bytes (none unless ``leaves``), the token ids read)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(bytes(data["header"]).decode("utf-8"))
            if header.get("format") != FORMAT:
                raise ValueError(f"format {header.get('format')!r}, expected {FORMAT!r}")
            raw = [data[f"leaf_{i}"] for i in range(len(header["leaves"]))] if leaves else []
            ids = np.asarray(data["ids"], np.int32)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError, TypeError) as exc:
        raise SessionError(
            f"session file {path} is unreadable ({type(exc).__name__}: {exc}); start it over with --reset-session"
        ) from None
    return header, raw, ids


def _info(name: str, header: dict[str, Any], ids: np.ndarray) -> SessionInfo:
    return SessionInfo(name, header["step"], int(ids.size), header["prompts"], header["updated"])


def read_info(path: Path) -> SessionInfo:
    """The header of the session saved at ``path`` (SessionError if unreadable)."""
    header, _, ids = _read(path, leaves=False)
    return _info(path.stem, header, ids)


def load_session(run_dir: Path, name: str, model: Any, step: int) -> tuple[Any, SessionInfo, np.ndarray] | None:
    """``(cache, info, ids)`` of session ``name`` of ``run_dir`` (``ids``: every token it has read), or None when
    there is none yet.

    Refused (SessionError) when it was started from another checkpoint step or its leaves do not fit ``model``."""
    path = session_path(run_dir, name)
    if not path.exists():
        return None
    header, raw, ids = _read(path)
    info = _info(name, header, ids)
    if info.step != step:
        raise SessionError(
            f"session {name!r} of {run_dir} was started from checkpoint step {info.step}, but the run's latest "
            f"checkpoint is step {step}: its memory was written by other weights; start it over with "
            "--reset-session"
        )
    template = cache_template(model)
    expected, saved = _leaf_specs(template), [(tuple(s), d) for s, d in header["leaves"]]
    if len(saved) != len(expected):
        raise SessionError(
            f"session file {path} holds {len(saved)} arrays, but this model's cache has {len(expected)}; "
            "start it over with --reset-session"
        )
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(template)[0]]
    for where, want, got in zip(paths, expected, saved, strict=True):
        if want != got:
            raise SessionError(
                f"session file {path}: cache leaf {where} is {got[1]}{list(got[0])}, but this model's is "
                f"{want[1]}{list(want[0])}; start it over with --reset-session"
            )
    leaves = [
        np.frombuffer(r.tobytes(), dtype=jax.numpy.dtype(d)).reshape(s) for r, (s, d) in zip(raw, saved, strict=True)
    ]
    cache = jax.tree.unflatten(jax.tree.structure(template), [jax.numpy.asarray(x) for x in leaves])
    return cache, info, ids


def save_session(run_dir: Path, name: str, cache: Any, *, step: int, ids: np.ndarray, prompts: int) -> SessionInfo:
    """Write ``cache`` as session ``name``, having read token ``ids`` in ``prompts`` calls (atomically: a
    temporary file renamed over the old one)."""
    ids = np.asarray(ids, np.int32).reshape(-1)
    path = session_path(run_dir, name)
    leaves = [np.asarray(jax.device_get(x)) for x in jax.tree.leaves(cache)]
    updated = time.time()
    header: dict[str, Any] = {
        "format": FORMAT,
        "step": int(step),
        "prompts": int(prompts),
        "updated": updated,
        "leaves": [[list(x.shape), str(x.dtype)] for x in leaves],
    }
    arrays: dict[str, np.ndarray] = {
        f"leaf_{i}": np.frombuffer(np.ascontiguousarray(x).tobytes(), np.uint8) for i, x in enumerate(leaves)
    }
    arrays["ids"] = ids
    arrays["header"] = np.frombuffer(json.dumps(header).encode("utf-8"), np.uint8)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]  # numpy's stub reads **kwds as allow_pickle
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise SessionError(f"cannot save session {name!r}: {exc.filename or path}: {exc.strerror or exc}") from None
    return _info(name, header, ids)


def delete_session(run_dir: Path, name: str) -> bool:
    """Remove session ``name``; whether it existed."""
    path = session_path(run_dir, name)
    existed = path.exists()
    path.unlink(missing_ok=True)
    return existed


def list_sessions(run_dir: Path) -> list[SessionInfo | tuple[str, str]]:
    """Every session of ``run_dir`` by name: its info, or ``(name, problem)`` for an unreadable file."""
    folder = Path(run_dir) / DIRNAME
    out: list[SessionInfo | tuple[str, str]] = []
    for path in sorted(folder.glob("*.npz")) if folder.is_dir() else []:
        try:
            out.append(read_info(path))
        except SessionError as exc:
            out.append((path.stem, str(exc)))
    return out


def broadcast_cache(model: Any, cache: Any, batch_size: int) -> Any:
    """A batch-1 ``cache`` repeated to ``batch_size`` rows: each leaf along the axis where ``model``'s cache of
    that batch size differs from its batch-1 cache (leaves without a batch axis are kept)."""
    one, many = jax.tree.leaves(cache_template(model)), jax.eval_shape(lambda: model.init_cache(batch_size))

    def widen(x: Any, t1: Any, tb: Any) -> Any:
        if tuple(t1.shape) == tuple(tb.shape):
            return x
        (axis,) = [i for i, (a, b) in enumerate(zip(t1.shape, tb.shape, strict=True)) if a != b]
        return jax.numpy.repeat(x, batch_size, axis=axis)

    leaves = [widen(x, t1, tb) for x, t1, tb in zip(jax.tree.leaves(cache), one, jax.tree.leaves(many), strict=True)]
    return jax.tree.unflatten(jax.tree.structure(cache), leaves)
