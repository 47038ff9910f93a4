"""The variant comparison of the README: LMM, MAC, MAG, MAL and the SWA baseline at equal parameter counts.

    uv run python benchmarks/experiments.py                    # everything (~1 hour on 2 CPU cores)
    uv run python benchmarks/experiments.py --tasks mqar       # one task
    uv run python benchmarks/experiments.py --smoke --out /tmp/smoke   # seconds-long check of the pipeline

For every task (``lm``, ``mqar``, ``niah``) and variant it trains ``specs/experiments/TASK/VARIANT.yaml`` with
``titans-train`` (a run directory under ``--runs``, resumed if the script is interrupted), then evaluates all
variants of the task at several context lengths with ``titans-eval``. Outputs in ``--out``:

- ``TASK.json`` / ``TASK.png``: the titans-eval result and its accuracy (or bits) versus context plot;
- ``summary.json``: every result plus training time and final training loss of every run;
- ``results.md``: the markdown table of the README.

The attention window of every spec is 128 tokens; the evaluation contexts go to 4× (S-NIAH, MQAR) and 8× (LM)
the window.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs" / "experiments"
VARIANTS = ("lmm", "mac", "mag", "mal", "swa")
TASKS = ("lm", "mqar", "niah")
#: context lengths (tokens) each task is evaluated at; the window is 128
CONTEXTS = {"lm": (128, 256, 512, 1024), "mqar": (128, 256, 512), "niah": (256, 384, 512)}
EXAMPLES = {"lm": 40, "mqar": 128, "niah": 80}
#: --smoke: a few steps at short lengths, one context, a handful of examples
SMOKE_SET = {
    "lm": ["data.seq_len=64"],
    "mqar": ["data.seq_len=64", "data.source.num_kv_pairs=4"],
    "niah": ["data.seq_len=256"],
}
SMOKE_CONTEXTS = {"lm": (64,), "mqar": (64,), "niah": (256,)}


DIVERGED = 3  # titans-train's exit status when the loss became non-finite (the last good checkpoint is kept)


def run(cmd: list[str], log: Path, *, allowed: tuple[int, ...] = (0,)) -> tuple[int, float]:
    """Run ``cmd`` with its output appended to ``log``; exit unless its status is ``allowed``.

    Returns (exit status, wall time in seconds)."""
    start = time.time()
    with log.open("a", encoding="utf-8") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, check=False)
    if done.returncode not in allowed:
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd)} — see {log}")
    return done.returncode, time.time() - start


def last_train_loss(run_dir: Path) -> float | None:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    train = [r for r in records if r.get("kind") == "train"]
    return train[-1]["loss"] if train else None


def markdown(summary: dict) -> str:
    """One row per variant: parameters, then each task's metric at each context, then training minutes."""
    columns, rows = [], {}
    for task in summary["results"]:
        doc = summary["results"][task]
        contexts = sorted({r["context"] for run in doc["runs"] for r in run["results"]})
        columns += [(task, c) for c in contexts]
        for run in doc["runs"]:
            row = rows.setdefault(run["variant"], {"params": run["param_count"], "minutes": 0.0})
            row["minutes"] += summary["train_seconds"][task][run["variant"]] / 60
            for r in run["results"]:
                if task == "lm":
                    row[(task, r["context"])] = f"{r.get('bits_per_byte', r.get('bits_per_token')):.3f}"
                else:
                    row[(task, r["context"])] = f"{100 * r['accuracy']:.1f}"
    names = {"lm": "LM bpb", "mqar": "MQAR %", "niah": "S-NIAH %"}
    head = ["variant", "params"] + [f"{names[t]} @{c}" for t, c in columns] + ["train min"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for variant, row in rows.items():
        cells = [variant.upper(), f"{row['params']:,}"] + [row.get(c, "–") for c in columns]
        lines.append("| " + " | ".join(cells + [f"{row['minutes']:.1f}"]) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated subset of lm,mqar,niah")
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help="comma-separated subset of the variants"
    )
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "experiments", help="run directories")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "experiments")
    parser.add_argument("--smoke", action="store_true", help="2 steps, short sequences: checks the pipeline")
    args = parser.parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t]
    variants = [v for v in args.variants.split(",") if v]
    for name, chosen, known in (("task", tasks, TASKS), ("variant", variants, VARIANTS)):
        unknown = sorted(set(chosen) - set(known))
        if unknown:
            parser.error(f"unknown {name} {unknown[0]!r} (choose from {', '.join(known)})")
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "experiments.log"
    summary: dict = {
        "tasks": tasks,
        "variants": variants,
        "smoke": args.smoke,
        "results": {},
        "train_seconds": {},
        "diverged": [],
    }
    for task in tasks:
        run_dirs, seconds = [], {}
        for variant in variants:
            run_dir = args.runs / task / variant
            sets = [f"output.dir={run_dir}"]
            if args.smoke:
                sets += ["trainer.steps=2", "checkpoint.every=2", "trainer.eval_batches=1", *SMOKE_SET[task]]
            cmd = [sys.executable, "-m", "titans_train.cli", str(SPECS / task / f"{variant}.yaml")]
            for item in sets:
                cmd += ["--set", item]
            print(f"train {task}/{variant} …", flush=True)
            status, seconds[variant] = run(cmd, log, allowed=(0, DIVERGED))
            if status == DIVERGED:  # reported, and left out of the evaluation
                summary["diverged"].append(f"{task}/{variant}")
                print(f"  diverged after {seconds[variant] / 60:.1f} min (see {log})", flush=True)
                continue
            print(
                f"  {seconds[variant] / 60:.1f} min, final train loss {last_train_loss(run_dir):.3f}",
                flush=True,
            )
            run_dirs.append(run_dir)
        if not run_dirs:
            continue
        contexts = SMOKE_CONTEXTS[task] if args.smoke else CONTEXTS[task]
        examples = 4 if args.smoke else EXAMPLES[task]
        result = args.out / f"{task}.json"
        cmd = [sys.executable, "-m", "titans_train.evaluate.cli", *map(str, run_dirs), "--task", task]
        cmd += ["--contexts", ",".join(map(str, contexts)), "--examples", str(examples), "--seed", "1"]
        cmd += [
            "--lm-tokens",
            str(4096 if args.smoke else 65536),
            "-o",
            str(result),
            "--plot",
            str(args.out / f"{task}.png"),
        ]
        print(f"evaluate {task} …", flush=True)
        run(cmd, log)
        summary["results"][task] = json.loads(result.read_text())
        summary["train_seconds"][task] = seconds
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    table = markdown(summary)
    if summary["diverged"]:
        table += f"\nDiverged (not evaluated): {', '.join(summary['diverged'])}\n"
    (args.out / "results.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
