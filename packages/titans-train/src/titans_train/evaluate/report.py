"""The outputs of ``titans-eval``: the result JSON, the printed table and the accuracy-versus-context plot.

Result file (``"format": "titans-eval/1"``)::

    {"format": "titans-eval/1", "seed": 0, "examples": 40,      # the latest evaluation's settings
     "runs": [{"run_dir": ..., "label": "mac", "variant": "mac", "step": 1200, "param_count": 123456,
               "results": [{"task": "niah", "context": 512, "accuracy": 0.4, "n": 40, "seed": 0, "examples": 40, ...},
                           {"task": "lm", "context": 512, "loss": 1.5, "bits_per_byte": 2.16, ...,
                            "memory": {"layer0": {"theta_mean": 0.001, "update_norm_mean": 0.02, ...}}},
                           ...]}]}

``"memory"`` (runs with a neural memory only): per layer the memory diagnostics on that task's inputs
(:mod:`titans_train.evaluate.memory`); :func:`print_table` adds one compact line per run and layer.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

FORMAT = "titans-eval/1"


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Write ``document`` to ``path`` atomically (a failure leaves any previous file intact)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(document, f, indent=2)
            f.write("\n")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; results are ordinary files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def merge_json(path: Path, document: dict[str, Any]) -> int:
    """Merge ``document`` into the result file ``path`` under an exclusive lock (``.NAME.lock`` beside it), so
    evaluations of one run written at the same time all survive; the number of earlier results kept.

    Results are keyed by (run directory, checkpoint step, task, context): a new result replaces the old one of its
    key, every other earlier result is kept. Each result carries the ``seed`` and ``examples`` it was evaluated
    with (the top-level ones are the latest evaluation's), so evaluations with other settings merge too: an lm
    evaluation with the default ``--examples`` does not drop an mqar result made with ``--examples 4``. An
    earlier file of another format (or not a result file) is replaced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # released when the file is closed
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        document = _stamped(document)
        kept = 0
        if isinstance(old, dict) and old.get("format") == document["format"] and isinstance(old.get("runs"), list):
            old = _stamped(old)
            runs = {(r["run_dir"], r["step"]): r for r in document["runs"]}
            merged = []
            for run in old["runs"]:
                new = runs.pop((run.get("run_dir"), run.get("step")), None)
                if new is None:
                    merged.append(run)
                    kept += len(run.get("results", []))
                    continue
                keys = {(r["task"], r["context"]) for r in new["results"]}
                earlier = [r for r in run.get("results", []) if (r.get("task"), r.get("context")) not in keys]
                kept += len(earlier)
                merged.append({**new, "results": earlier + new["results"]})
            merged.extend(runs.values())
            document = {**document, "runs": merged}
        write_json(path, document)
    return kept


def _stamped(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with its top-level ``seed`` and ``examples`` copied into every result that lacks them."""
    settings = {k: document.get(k) for k in ("seed", "examples")}
    runs = [
        {**run, "results": [{**settings, **r} for r in run.get("results", [])]}
        for run in document.get("runs", [])
        if isinstance(run, dict)
    ]
    return {**document, "runs": runs}


def _metric(result: dict[str, Any]) -> str:
    if result["task"] == "lm":
        unit = "bits_per_byte" if "bits_per_byte" in result else "bits_per_token"
        return f"{result[unit]:.3f} {'bpb' if unit == 'bits_per_byte' else 'bpt'}"
    return f"{100 * result['accuracy']:.1f}% ± {100 * result['stderr']:.1f}"


def results_table(document: dict[str, Any]) -> Table:
    """One row per run; one column per (task, context)."""
    columns = sorted(
        {(r["task"], r["context"]) for run in document["runs"] for r in run["results"]},
        key=lambda c: (c[0], c[1]),
    )
    table = Table(title="titans-eval", show_lines=False)
    table.add_column("run")
    table.add_column("params", justify="right")
    table.add_column("step", justify="right")
    for task, context in columns:
        table.add_column(f"{task} @{context}", justify="right")
    for run in document["runs"]:
        cells = {(r["task"], r["context"]): _metric(r) for r in run["results"]}
        table.add_row(
            run["label"],
            f"{run['param_count']:,}",
            str(run["step"]),
            *[cells.get(c, "–") for c in columns],
        )
    return table


def memory_lines(document: dict[str, Any]) -> list[str]:
    """One line per run with memory diagnostics: those of its first result (see ``summary_line``)."""
    from titans_train.memory_stats import summary_line

    lines = []
    for run in document["runs"]:
        first = next((r for r in run["results"] if r.get("memory")), None)
        if first is not None:
            lines.append(
                f"memory of {run['label']} ({first['task']} @{first['context']}): {summary_line(first['memory'])}"
            )
    return lines


def print_table(document: dict[str, Any], console: Console) -> None:
    console.print(results_table(document))
    for line in memory_lines(document):
        console.print(line, soft_wrap=True)


def plot_results(document: dict[str, Any], path: Path) -> Path:
    """PNG: accuracy versus context length per run (one panel per task; LM panels show bits per token)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for run in document["runs"] for r in run["results"]})
    if not tasks:
        raise ValueError("no results to plot")
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for run in document["runs"]:
            points = sorted((r["context"], r) for r in run["results"] if r["task"] == task)
            if not points:
                continue
            xs = [c for c, _ in points]
            if task == "lm":
                key = "bits_per_byte" if "bits_per_byte" in points[0][1] else "bits_per_token"
                ys = [r[key] for _, r in points]
            else:
                ys = [100 * r["accuracy"] for _, r in points]
            ax.plot(xs, ys, marker="o", label=run["label"])
        contexts = sorted({r["context"] for run in document["runs"] for r in run["results"] if r["task"] == task})
        chances = {
            r["chance"] for run in document["runs"] for r in run["results"] if r["task"] == task and "chance" in r
        }
        if len(chances) == 1 and 100 * min(chances) >= 0.5:  # a visible chance level (MQAR, BABILong, MK-NIAH)
            ax.axhline(100 * min(chances), color="grey", linestyle="--", linewidth=1, label="chance")
        ax.set_xscale("log", base=2)
        ax.set_xticks(contexts, [str(c) for c in contexts])
        ax.minorticks_off()
        ax.set_xlabel("context length (tokens)")
        if task == "lm":
            byte_level = any("bits_per_byte" in r for run in document["runs"] for r in run["results"])
            ax.set_ylabel(f"held-out bits per {'byte' if byte_level else 'token'}")
        else:
            ax.set_ylabel("accuracy (%)")
            ax.set_ylim(-3, 103)
        titles = {"lm": "held-out LM", "niah": "S-NIAH", "mqar": "MQAR", "niah_multikey": "MK-NIAH"}
        titles |= {"niah_multivalue": "MV-NIAH", "babilong": "BABILong-style (qa1)"}
        ax.set_title(titles.get(task, task))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
