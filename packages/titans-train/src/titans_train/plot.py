"""``titans-train plot RUN_DIR``: PNG curves from ``metrics.jsonl`` (matplotlib, Agg backend; no display
needed).

Writes ``RUN_DIR/plots/loss.png`` (training loss per step, with the evaluation loss on top) and
``RUN_DIR/plots/eval.png`` (evaluation loss and bits per byte/token), the latter only when the run has
evaluations, and ``RUN_DIR/plots/memory.png`` (memory diagnostics per layer, see
:mod:`titans_train.plot_memory`) when the run has them.
"""

from __future__ import annotations

from pathlib import Path

from titans_core import TitansUserError

from titans_train.plot_memory import plot_memory
from titans_train.rundir import METRICS_FILE, read_metrics


def _series(records: list[dict], kind: str, key: str) -> tuple[list[int], list[float]]:
    points = sorted(
        {int(r["step"]): float(r[key]) for r in records if r.get("kind") == kind and key in r and "step" in r}.items()
    )
    return [p[0] for p in points], [p[1] for p in points]


def plot_run(run_dir: Path) -> list[Path]:
    """Write the plots of ``run_dir``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    steps, losses = _series(records, "train", "loss")
    if not steps:
        raise TitansUserError(f"{run_dir / METRICS_FILE}: no training metrics to plot")
    unit = "bpb" if any("bpb" in r for r in records) else "bpt"
    out_dir = run_dir / "plots"
    out_dir.mkdir(exist_ok=True)
    written = []

    eval_steps, eval_losses = _series(records, "eval", "loss")
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, losses, label="train", linewidth=1)
    if eval_steps:
        ax.plot(eval_steps, eval_losses, "o-", label="eval")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats)")
    ax.set_title(f"{run_dir.name}: loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "loss.png", dpi=120)
    plt.close(fig)
    written.append(out_dir / "loss.png")

    if eval_steps:
        _, eval_bits = _series(records, "eval", unit)
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot(eval_steps, eval_bits, "o-", color="tab:orange")
        ax.set_xlabel("step")
        ax.set_ylabel("bits per byte" if unit == "bpb" else "bits per token")
        ax.set_title(f"{run_dir.name}: evaluation")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out_dir / "eval.png", dpi=120)
        plt.close(fig)
        written.append(out_dir / "eval.png")
    written += plot_memory(records, out_dir, run_dir.name)
    return written
