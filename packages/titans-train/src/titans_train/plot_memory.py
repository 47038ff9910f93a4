"""``plots/memory.png`` of ``titans-train plot``: the memory diagnostics of ``metrics.jsonl`` over steps.

One row per memory layer, three panels: θ (step size) and η / α (surprise decay, forgetting) means with their
min–max bands, and the norms of the memory update per chunk, of the surprise and of the read (means solid,
maxima dashed, log scale). Written only when the run has diagnostics (``trainer.diagnostics_every``; a model
without neural memory has none).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

NORMS = (
    ("update", "‖ΔM‖ per chunk", "tab:red"),
    ("surprise", "‖S‖", "tab:purple"),
    ("read", "‖y‖", "tab:gray"),
)


def memory_series(records: list[dict[str, Any]]) -> dict[str, dict[str, tuple[list[int], list[float]]]]:
    """``{layer: {stat: (steps, values)}}`` from the training records' ``"memory"`` entries (the last record
    of a step wins)."""
    by_step: dict[int, dict[str, dict[str, float]]] = {}
    for r in records:
        if r.get("kind") == "train" and isinstance(r.get("memory"), dict) and "step" in r:
            by_step[int(r["step"])] = r["memory"]
    out: dict[str, dict[str, tuple[list[int], list[float]]]] = {}
    for step in sorted(by_step):
        for layer, stats in by_step[step].items():
            for key, value in stats.items():
                steps, values = out.setdefault(layer, {}).setdefault(key, ([], []))
                steps.append(step)
                values.append(float(value))
    order = lambda name: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]  # noqa: E731
    return {layer: out[layer] for layer in sorted(out, key=order)}


def _band(ax: Any, series: dict[str, tuple[list[int], list[float]]], name: str, label: str, color: str) -> None:
    if f"{name}_mean" not in series:
        return
    steps, mean = series[f"{name}_mean"]
    ax.plot(steps, mean, color=color, label=label, linewidth=1.2)
    if f"{name}_min" in series and f"{name}_max" in series:
        ax.fill_between(steps, series[f"{name}_min"][1], series[f"{name}_max"][1], color=color, alpha=0.2)


def plot_memory(records: list[dict[str, Any]], out_dir: Path, title: str) -> list[Path]:
    """Write ``out_dir/memory.png`` when ``records`` hold memory diagnostics; returns the paths written."""
    layers = memory_series(records)
    if not layers:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(layers), 3, figsize=(13, 2.8 * len(layers) + 0.6), squeeze=False)
    for row, (layer, series) in zip(axes, layers.items(), strict=True):
        _band(row[0], series, "theta", "θ (step size)", "tab:blue")
        row[0].set_ylabel(f"{layer}\nθ")
        _band(row[1], series, "eta", "η (surprise decay)", "tab:green")
        _band(row[1], series, "alpha", "α (forgetting)", "tab:orange")
        row[1].set_ylim(-0.03, 1.03)
        for name, label, color in NORMS:
            for stat, style in (("mean", "-"), ("max", "--")):
                key = f"{name}_norm_{stat}"
                if key in series:
                    steps, values = series[key]
                    positive = [(s, v) for s, v in zip(steps, values, strict=True) if v > 0]  # log scale
                    if positive:
                        row[2].plot(
                            *zip(*positive, strict=True),
                            style,
                            color=color,
                            linewidth=1,
                            label=f"{label} {stat}",
                        )
        if row[2].has_data():
            row[2].set_yscale("log")
        for ax in row:
            ax.grid(alpha=0.3)
            if ax.has_data():
                ax.legend(fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("step")
    axes[0][0].set_title("step size θ (mean, min–max)")
    axes[0][1].set_title("η and α (mean, min–max)")
    axes[0][2].set_title("memory norms (mean —, max --)")
    fig.suptitle(f"{title}: memory diagnostics")
    fig.tight_layout()
    path = out_dir / "memory.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]
