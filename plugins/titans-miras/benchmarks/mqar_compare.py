"""MIRAS memories against Titans' ``momentum_scan`` memory on the project's recall experiment (MQAR, LMM variant).

    uv run python plugins/titans-miras/benchmarks/mqar_compare.py --steps 1500 --eval-every 300   # README
    uv run python plugins/titans-miras/benchmarks/mqar_compare.py --steps 600 --eval-every 150    # README

Trains ``specs/experiments/mqar/lmm.yaml`` once per memory with ``titans-train`` (everything else of the spec
unchanged: width, depth, data, batch, optimiser; ``--steps`` sets trainer.steps, and the one evaluation at the end
uses the spec's 8 validation batches), then writes ``results/mqar_<steps>.json`` and ``.md``: the final
validation accuracy on the queries (chance 0.25), the final training loss and the median training tokens/s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent
SPEC = ROOT / "specs" / "experiments" / "mqar" / "lmm.yaml"

#: label → --set overrides of the memory (the spec's own: mlp depth 1, momentum_scan b = 16, clamp 1.0, l2)
MEMORIES = {
    "titans (momentum_scan, l2)": [],
    "yaad (momentum_scan, yaad δ_t)": ["model.memory.objective={name: yaad, init_delta: 1.0}"],
    "moneta (moneta, lp p=3)": [
        "model.memory.rule={name: moneta, chunk_size: 16}",
        "model.memory.objective={name: lp, p: 3}",
    ],
    "memora (memora, l2)": ["model.memory.rule={name: memora, chunk_size: 16}"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500, help="trainer.steps (the spec: 1500)")
    parser.add_argument("--eval-every", type=int, default=None, help="validation every N steps (default: at the end)")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "miras-mqar")
    parser.add_argument("--only", default=None, help="comma-separated label prefixes to run (default: all)")
    args = parser.parse_args()
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    json_path, md_path = out / f"mqar_{args.steps}.json", out / f"mqar_{args.steps}.md"  # one table per budget
    results = json.loads(json_path.read_text()) if json_path.exists() else {}
    for i, (label, sets) in enumerate(MEMORIES.items()):
        if args.only and not any(label.startswith(p) for p in args.only.split(",")):
            continue
        run_dir = args.runs / f"m{i}-{args.steps}"
        overrides = sets + [
            f"trainer.steps={args.steps}",
            f"trainer.eval_every={args.eval_every or args.steps}",
            f"checkpoint.every={args.steps}",
            f"output.dir={run_dir}",
        ]
        cmd = [sys.executable, "-m", "titans_train.cli", "train", str(SPEC)]
        for o in overrides:
            cmd += ["--set", o]
        t0 = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.time() - t0
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
        train = [r for r in records if r.get("kind") == "train"]
        evals = [r for r in records if r.get("kind") == "eval"]
        results[label] = {
            "steps": args.steps,
            "returncode": proc.returncode,
            "error": proc.stderr[-400:] if proc.returncode else None,
            "accuracy": evals[-1].get("accuracy") if evals else None,
            "eval_loss": evals[-1].get("loss") if evals else None,
            "curve": [[r["step"], r.get("accuracy")] for r in evals],  # validation accuracy every --eval-every steps
            "final_train_loss": train[-1]["loss"] if train else None,
            "tokens_per_s_median": statistics.median(r["tokens_per_s"] for r in train[1:]) if len(train) > 1 else None,
            "wall_s": wall,
            "overrides": overrides,
        }
        print(label, json.dumps(results[label]), flush=True)
        if json_path.exists():  # merge: another invocation (--only) may have written meanwhile
            results = {**json.loads(json_path.read_text()), label: results[label]}
        json_path.write_text(json.dumps(results, indent=1))
    rows = [
        "| memory | steps | val accuracy | accuracy by step | val loss | final train loss | tokens/s (median) |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, r in results.items():
        fmt = lambda x, f: "—" if x is None else format(x, f)  # noqa: E731
        curve = ", ".join(f"{step}: {fmt(acc, '.3f')}" for step, acc in r.get("curve", []))
        rows.append(
            f"| {label} | {r['steps']} | {fmt(r['accuracy'], '.3f')} | {curve} | {fmt(r['eval_loss'], '.3f')} | "
            f"{fmt(r['final_train_loss'], '.3f')} | {fmt(r['tokens_per_s_median'], '.0f')} |"
        )
    md_path.write_text("\n".join(rows) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
