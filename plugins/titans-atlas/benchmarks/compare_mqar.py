"""Omega / Atlas against Titans' ``momentum_scan`` on the project's recall experiment (MQAR, LMM variant).

    uv run python plugins/titans-atlas/benchmarks/compare_mqar.py --steps 1500      # the experiment's full budget
    uv run python plugins/titans-atlas/benchmarks/compare_mqar.py --steps 200       # what fitted (see the README)

Trains ``specs/experiments/mqar/lmm.yaml`` with ``titans-train`` once per rule — only ``model.memory.rule``
changes (and ``trainer.steps``, equal for all) — and writes ``mqar_results_<steps>.json`` / ``.md`` here:
the final validation accuracy on the scored (query) positions and the median training throughput (tokens/s).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
SPEC = ROOT / "specs" / "experiments" / "mqar" / "lmm.yaml"
RULES = {
    "momentum_scan": "{name: momentum_scan, chunk_size: 16, max_grad_norm: 1.0, read: chunk}",  # the spec's own rule
    "omega (c=4)": "{name: omega, chunk_size: 16, context: 4}",
    "atlas (c=4)": "{name: atlas, chunk_size: 16, context: 4}",
}


def run(name: str, rule: str, steps: int, eval_every: int, runs: Path) -> dict:
    out = runs / name.split()[0]
    overrides = [
        f"model.memory.rule={rule}",
        f"trainer.steps={steps}",
        f"trainer.eval_every={eval_every}",
        f"checkpoint.every={steps}",
        f"output.dir={out}",
    ]
    cmd = [sys.executable, "-m", "titans_train.cli", "train", str(SPEC)] + [a for o in overrides for a in ("--set", o)]
    start = time.time()
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train" and r.get("tokens_per_s")]
    evals = [r for r in records if r["kind"] == "eval"]
    return {
        "rule": name,
        "spec_rule": rule,
        "steps": steps,
        "accuracy": evals[-1]["accuracy"],
        "curve": [[r["step"], r["accuracy"]] for r in evals],  # validation accuracy every --eval-every steps
        "val_loss": evals[-1]["loss"],
        "tokens_per_s": statistics.median(r["tokens_per_s"] for r in train),
        "wall_s": round(time.time() - start, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--eval-every", type=int, default=None, help="validation every N steps (default: at the end)")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "atlas_compare")
    parser.add_argument("--rules", default=",".join(RULES), help="comma-separated subset of: " + ", ".join(RULES))
    args = parser.parse_args()
    results = HERE / f"mqar_results_{args.steps}.json"  # one table per budget
    rows = json.loads(results.read_text()) if results.exists() else []  # rules not run this time are kept
    for name in args.rules.split(","):
        row = run(name, RULES[name], args.steps, args.eval_every or args.steps, args.runs)
        rows = [r for r in rows if r["rule"] != name] + [row]
        rows.sort(key=lambda r: list(RULES).index(r["rule"]))
        results.write_text(json.dumps(rows, indent=2) + "\n")
        print(json.dumps(row), flush=True)
    lines = [
        "| rule | steps | accuracy | accuracy by step | val loss | tokens/s (median) | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        curve = ", ".join(f"{step}: {100 * acc:.0f}%" for step, acc in r.get("curve", []))
        lines.append(
            f"| {r['rule']} | {r['steps']} | {100 * r['accuracy']:.1f}% | {curve} | {r['val_loss']:.3f} "
            f"| {r['tokens_per_s']:.0f} | {r['wall_s']} |"
        )
    (HERE / f"mqar_results_{args.steps}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
