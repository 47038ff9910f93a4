"""Mean training loss per window of steps, for several runs side by side (a sweep probe read before the runs end).

    uv run python benchmarks/loss_windows.py NAME LABEL=RUN_DIR [LABEL=RUN_DIR ...] [--window 50]

Reads each run's metrics.jsonl (a run may still be going, or have been stopped early), prints one row per run with
the mean loss of steps 1–50, 51–100, …, and writes benchmarks/results/probes/NAME.{json,md}, with each run's
``eval_*.json`` accuracies when ``titans-eval`` has scored it.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

HERE = Path(__file__).parent
OUT = HERE / "results" / "probes"


def windows(run_dir: Path, size: int) -> list[float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    losses = [r["loss"] for r in records if r.get("kind") == "train"]
    return [round(statistics.fmean(losses[i : i + size]), 3) for i in range(0, len(losses) - size + 1, size)]


def accuracies(run_dir: Path) -> dict[str, dict[str, float]]:
    found = {}
    for path in sorted(run_dir.glob("eval_*.json")):
        doc = json.loads(path.read_text())
        for result in doc["runs"][0]["results"]:
            found.setdefault(result["task"], {})[str(result["context"])] = result.get("accuracy")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("runs", nargs="+", help="LABEL=RUN_DIR")
    parser.add_argument("--window", type=int, default=50)
    args = parser.parse_args()
    rows = {}
    for item in args.runs:
        label, path = item.split("=", 1)
        rows[label] = {"run_dir": path, "windows": windows(Path(path), args.window), "eval": accuracies(Path(path))}
    width = max(len(r["windows"]) for r in rows.values())
    head = [f"{i * args.window + 1}–{(i + 1) * args.window}" for i in range(width)]
    lines = [f"**{args.name}**: mean training loss per {args.window} steps", ""]
    lines += ["| run | " + " | ".join(head) + " | eval |", "|---" * (width + 2) + "|"]
    for label, row in rows.items():
        cells = [str(v) for v in row["windows"]] + [""] * (width - len(row["windows"]))
        scored = "; ".join(
            f"{task} " + "/".join(f"{100 * acc:.1f}%@{ctx}" for ctx, acc in by_ctx.items())
            for task, by_ctx in row["eval"].items()
        )
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {scored} |")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{args.name}.json").write_text(json.dumps({"window": args.window, "runs": rows}, indent=2) + "\n")
    (OUT / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
