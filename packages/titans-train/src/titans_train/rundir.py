"""The run directory (``output.dir``)::

    .lock               the PID of the process training here (titans_train.lock)
    spec.yaml           the resolved spec (what ``titans-train`` ran; compared on resume)
    run.json            facts for the tools: byte_level, vocab_size, param_count, data description
    metrics.jsonl       one JSON object per line: {"kind": "train", "step", "loss", "bpb"|"bpt", "lr", ...}
                        and {"kind": "eval", "step", "loss", ...}
    checkpoints/<step>  orbax checkpoints (see titans_train.checkpoint)
    plots/              titans-train plot RUN_DIR

Decisions: a directory that does not exist or is empty starts a new run. A directory holding a ``spec.yaml``
is resumed when its spec equals the new one except for the keys in ``titans_train.spec.RESUMABLE_CHANGES``
(e.g. ``trainer.steps`` to train longer); otherwise it is refused with the differing keys. A non-empty
directory without ``spec.yaml`` is refused. Nothing is ever overwritten silently. Only process 0 writes these
files; spec.yaml, run.json and a truncated metrics.jsonl are written atomically (temporary file + rename), so
a kill at any point leaves either the old or the new file.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jax
import pydantic
import yaml
from titans_core import dump_spec

from titans_train.errors import RunDirError
from titans_train.lock import LOCK_FILE
from titans_train.spec import RESUMABLE_CHANGES, TrainSpec

SPEC_FILE = "spec.yaml"
RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
TMP_SUFFIX = ".tmp"


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: data}


def _resumable(key: str) -> bool:
    return any(key == allowed or key.startswith(allowed + ".") for allowed in RESUMABLE_CHANGES)


def spec_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``key: old → new`` for every non-resumable difference between two dumped specs."""
    old, new = _flatten(saved), _flatten(current)
    lines = []
    for key in sorted(set(old) | set(new)):
        if _resumable(key) or old.get(key, "<unset>") == new.get(key, "<unset>"):
            continue
        lines.append(f"{key}: {old.get(key, '<unset>')!r} → {new.get(key, '<unset>')!r}")
    return lines


# Options whose default changed after runs could be saved without them, with the value such a run used. A saved
# spec is dumped resolved, so an absent key means the option did not exist yet: it must not take today's default.
PAST_DEFAULTS: dict[tuple[str, ...], Any] = {
    ("model", "memory", "rule", "read"): "chunk",  # `read` arrived with default chunk; the default became token
    ("model", "mac_write"): "y",  # MAC wrote the attention output y before `mac_write` arrived (default x+y)
}
# Options of one variant only: filled in only when the saved spec's model.name is that variant.
PAST_DEFAULTS_VARIANT: dict[tuple[str, ...], str] = {("model", "mac_write"): "mac"}


def upgrade_saved_spec(saved: Any) -> Any:
    """A copy of a run's saved spec (a parsed ``spec.yaml``) with every option of ``PAST_DEFAULTS`` that it lacks
    set to the value the run used, so an old run is neither resumed nor evaluated under a newer default."""
    if not isinstance(saved, dict):
        return saved
    out = copy.deepcopy(saved)
    model = out.get("model")
    for path, value in PAST_DEFAULTS.items():
        variant = PAST_DEFAULTS_VARIANT.get(path)
        if variant is not None and not (isinstance(model, dict) and model.get("name") == variant):
            continue
        node: Any = out
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and path[-1] not in node:
            node[path[-1]] = value
    return out


def _with_defaults(saved: Any) -> dict[str, Any]:
    """The saved spec as the current schema dumps it: options added since the run was saved take their
    defaults (or, for those in ``PAST_DEFAULTS``, the value the run used), so a run directory from an older
    version still resumes. A saved spec the current schema rejects is compared as written."""
    if not isinstance(saved, dict):
        return {}
    try:
        return yaml.safe_load(dump_spec(TrainSpec.model_validate(upgrade_saved_spec(saved))))
    except (pydantic.ValidationError, ValueError):  # compare the raw dict: the differences show why
        return saved


def inspect_run_dir(run_dir: Path, spec: TrainSpec) -> bool:
    """Whether ``run_dir`` is to be resumed (True) or started (False); RunDirError if it must be refused.

    Reads only; creates nothing.
    """
    if not run_dir.exists():
        return False
    if not run_dir.is_dir():
        raise RunDirError(f"output.dir {run_dir} exists and is not a directory")
    if all(p.name in (LOCK_FILE, RUN_FILE) or p.name.endswith(TMP_SUFFIX) for p in run_dir.iterdir()):
        return False  # empty, or a start killed before spec.yaml was written: a new run
    spec_file = run_dir / SPEC_FILE
    if not spec_file.exists():
        raise RunDirError(
            f"output.dir {run_dir} is not empty and holds no {SPEC_FILE}: not a titans-train run; "
            "choose another output.dir"
        )
    try:
        saved = yaml.safe_load(spec_file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise RunDirError(f"{spec_file}: unreadable ({exc}); choose another output.dir") from None
    differences = spec_differences(_with_defaults(saved), yaml.safe_load(dump_spec(spec)))
    if differences:
        shown = "; ".join(differences[:5]) + (f"; and {len(differences) - 5} more" if len(differences) > 5 else "")
        raise RunDirError(
            f"output.dir {run_dir} holds a run with a different spec ({shown}); "
            "choose another output.dir (add --fork-from RUN/checkpoints/STEP to continue from its weights), "
            "or delete that directory to start over"
        )
    return True


class RunDir:
    """Writes the files of a run directory (on process 0; the other processes write nothing)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.primary = jax.process_index() == 0

    def start(self, spec: TrainSpec, facts: dict[str, Any]) -> None:
        """Create the directory and write run.json, then spec.yaml (a new run; spec.yaml marks it)."""
        if self.primary:
            with _reported(self.path):
                self.path.mkdir(parents=True, exist_ok=True)
            _write_atomic(self.path / RUN_FILE, json.dumps(facts, indent=2) + "\n")
            _write_atomic(self.path / SPEC_FILE, dump_spec(spec))

    def update_spec(self, spec: TrainSpec) -> None:
        """Record the spec of a resumed run (its resumable keys may have changed)."""
        if self.primary:
            _write_atomic(self.path / SPEC_FILE, dump_spec(spec))

    def truncate_metrics(self, step: int) -> None:
        """Drop metric records after ``step`` (written by a run that died after its last checkpoint), and any
        line cut short by a kill during a write. Atomic: a kill during the rewrite loses nothing."""
        path = self.path / METRICS_FILE
        if not self.primary or not path.exists():
            return
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines():
            step_of = _step_of(line)
            if step_of is not None and step_of <= step:
                kept.append(line)
        _write_atomic(path, "".join(line + "\n" for line in kept))

    def copy_metrics(self, source: Path, step: int) -> None:
        """Start metrics.jsonl with the records of run ``source`` up to ``step`` (a run forked from it)."""
        if not self.primary:
            return
        lines = []
        path = Path(source) / METRICS_FILE
        if path.exists():
            lines = [line for line in path.read_text(encoding="utf-8").splitlines() if (_step_of(line) or 0) <= step]
        _write_atomic(self.path / METRICS_FILE, "".join(line + "\n" for line in lines))

    def set_metrics_aside(self) -> Path | None:
        """Rename metrics.jsonl to ``metrics-before-restart-<time>.jsonl`` (a run started over keeps its old
        records); the new path, or None if there was none."""
        path = self.path / METRICS_FILE
        if not self.primary or not path.exists():
            return None
        target = self.path / f"metrics-before-restart-{int(time.time())}.jsonl"
        with _reported(target):
            os.replace(path, target)
        return target

    def log(self, record: dict[str, Any]) -> None:
        """Append one metrics record (one write of one whole line)."""
        if self.primary:
            with (
                _reported(self.path / METRICS_FILE),
                open(self.path / METRICS_FILE, "a", encoding="utf-8") as f,
            ):
                f.write(json.dumps(record) + "\n")


@contextmanager
def _reported(path: Path) -> Iterator[None]:
    """A failed write (disk full, read-only, …) becomes one RunDirError naming the path."""
    try:
        yield
    except OSError as exc:
        raise RunDirError(f"cannot write {exc.filename or path}: {exc.strerror or exc}") from None


def _write_atomic(path: Path, text: str) -> None:
    """Write ``path`` through a temporary file renamed over it: readers see the old or the new text."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    with _reported(path):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


def _step_of(line: str) -> int | None:
    """The step of a metrics line; None for a malformed line (e.g. cut short by a kill)."""
    try:
        record = json.loads(line)
        return int(record["step"]) if isinstance(record, dict) else None
    except (ValueError, KeyError, TypeError):
        return None


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The records of ``RUN_DIR/metrics.jsonl`` (malformed lines skipped)."""
    path = Path(run_dir) / METRICS_FILE
    records = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


def read_facts(run_dir: Path) -> dict[str, Any]:
    """``RUN_DIR/run.json`` ({} if missing)."""
    path = Path(run_dir) / RUN_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
