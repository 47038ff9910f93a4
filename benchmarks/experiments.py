"""The variant comparison of the README: LMM, MAC, MAG, MAL and the SWA baseline at equal parameter counts.

    uv run python benchmarks/experiments.py                    # everything (about an hour on 2 CPU cores)
    uv run python benchmarks/experiments.py --tasks mqar       # one task (the other tasks' results are kept)
    uv run python benchmarks/experiments.py --smoke --out /tmp/smoke   # seconds-long check of the pipeline

``--in-process`` runs titans-train and titans-eval inside this process instead of starting one process for each
(same commands, same outputs; it saves every step's interpreter start and imports, which is most of a --smoke run).

For every task (``lm``, ``mqar``, ``niah``) and variant it trains ``specs/experiments/TASK/VARIANT.yaml`` with
``titans-train`` (a run directory under ``--runs``, resumed if the script is interrupted), then evaluates all
variants of the task with ``titans-eval`` at 1, 2, 4 and 8 times the training length T (``data.seq_len``;
length extrapolation). Outputs in ``--out``:

- ``TASK.json`` / ``TASK.png``: the titans-eval result and its accuracy (or bits) versus context plot;
- ``summary.json``: every result plus training time and final training loss of every run (tasks not run this
  time keep their earlier results);
- ``results.md``: the markdown tables of the README.

The recall tasks put the answer beyond the reach of attention: MQAR (window 16, 2 layers: 31 tokens) has a
delay of 32 tokens between the last key-value pair and the first query, and in S-NIAH (window 32) the question
alone is longer than 150 bytes, so the needle is always more than 2 stacked windows back. SWA cannot see the
answer; only a memory can recall it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs" / "experiments"
VARIANTS = ("lmm", "mac", "mag", "mal", "swa")
TASKS = ("lm", "mqar", "niah")
#: evaluation contexts, in multiples of the training length T (data.seq_len)
CONTEXT_MULTIPLES = (1, 2, 4, 8)
EXAMPLES = {"lm": 40, "mqar": 256, "niah": 64}
#: held-out English that no training source contains (benchmarks/data/README.md)
HELDOUT_TEXT = ROOT / "benchmarks" / "data" / "licenses.txt"
#: --smoke: a few steps at short lengths, one context, a handful of examples
SMOKE_SET = {
    "lm": ["data.seq_len=64"],
    "mqar": ["data.seq_len=64", "data.source.num_kv_pairs=4"],
    "niah": ["data.seq_len=256"],
}
SMOKE_CONTEXTS = {"lm": (64,), "mqar": (64,), "niah": (256,)}


DIVERGED = 3  # titans-train's exit status when the loss became non-finite (the last good checkpoint is kept)


def training_length(task: str) -> int:
    """T of a task: ``data.seq_len`` of its SWA spec (every variant of a task shares it; tested)."""
    spec = yaml.safe_load((SPECS / task / "swa.yaml").read_text())
    return int(spec["data"]["seq_len"])


def run(cmd: list[str], log: Path, *, allowed: tuple[int, ...] = (0,), in_process: bool = False) -> tuple[int, float]:
    """Run ``cmd`` (``python -m MODULE ARGS``) with its output appended to ``log``; exit unless its status is
    ``allowed``. ``in_process``: call ``MODULE.main(ARGS)`` in this process instead of starting a process.

    Returns (exit status, wall time in seconds)."""
    start = time.time()
    with log.open("a", encoding="utf-8") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        if in_process:
            status = _call_main(cmd, out)
        else:
            status = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, check=False).returncode
    if status not in allowed:
        sys.exit(f"failed ({status}): {' '.join(cmd)} — see {log}")
    return status, time.time() - start


def _call_main(cmd: list[str], out) -> int:
    """``MODULE.main(ARGS)`` of ``cmd`` = ``[python, "-m", MODULE, *ARGS]`` in this process, in ROOT, with its
    output written to ``out``; its exit status."""
    assert cmd[1] == "-m", cmd
    main = importlib.import_module(cmd[2]).main
    with contextlib.chdir(ROOT), contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            main(cmd[3:])
            status = 0
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if isinstance(exc.code, str):  # what the interpreter would print on exit
                print(exc.code, file=sys.stderr)
        finally:
            out.flush()
    return status


def last_train_loss(run_dir: Path) -> float | None:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    train = [r for r in records if r.get("kind") == "train"]
    return train[-1]["loss"] if train else None


def markdown(summary: dict) -> str:
    """One table per task: a row per variant with its parameters, the task's metric at each context (the first
    is the training length T) and its training minutes."""
    names = {
        "lm": "LM bits per byte on held-out Python (lower is better)",
        "lm_text": "LM bits per byte on held-out English (lower is better)",
        "mqar": "MQAR accuracy %",
        "niah": "S-NIAH exact match %",
    }
    out = []
    for task, doc in summary["results"].items():
        contexts = sorted({r["context"] for run in doc["runs"] for r in run["results"]})
        head = ["variant", "params"] + [f"@{c}" for c in contexts] + ["train min"]
        lines = [f"**{names[task]}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for run in doc["runs"]:
            cells = {}
            for r in run["results"]:
                if task.startswith("lm"):
                    cells[r["context"]] = f"{r.get('bits_per_byte', r.get('bits_per_token')):.3f}"
                else:
                    cells[r["context"]] = f"{100 * r['accuracy']:.1f}"
            minutes = summary["train_seconds"].get(task, {}).get(run["variant"], 0.0) / 60
            row = [run["variant"].upper(), f"{run['param_count']:,}"] + [cells.get(c, "–") for c in contexts]
            lines.append("| " + " | ".join(row + [f"{minutes:.1f}"]) + " |")
        out.append("\n".join(lines) + "\n")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated subset of lm,mqar,niah")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of the variants")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "experiments", help="run directories")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "experiments")
    parser.add_argument("--smoke", action="store_true", help="2 steps, short sequences: checks the pipeline")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run titans-train and titans-eval in this process instead of one process each (quicker start-up)",
    )
    parser.add_argument(
        "--stage",
        choices=("all", "train", "eval"),
        default="all",
        help="train only (e.g. variants in parallel processes), evaluate runs trained earlier, or both",
    )
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
    earlier_path = args.out / "summary.json"
    if earlier_path.exists() and not args.smoke:  # keep the other tasks' results
        earlier = json.loads(earlier_path.read_text())
        if not earlier.get("smoke"):
            for key in ("results", "train_seconds"):
                summary[key] = {t: r for t, r in earlier.get(key, {}).items() if t.split("_")[0] not in tasks}
            summary["diverged"] = [d for d in earlier.get("diverged", []) if d.split("/")[0] not in tasks]
            summary["tasks"] = [t for t in TASKS if t in set(tasks) | set(summary["results"])]
    for task in tasks:
        run_dirs, seconds = [], {}
        for variant in variants:
            run_dir = args.runs / task / variant
            timing = run_dir / "experiment_train_seconds.json"
            if args.stage == "eval":  # trained earlier (e.g. by parallel --stage train processes)
                if not timing.exists():
                    sys.exit(f"{run_dir} was not trained by this script: run --stage train first")
                seconds[variant] = json.loads(timing.read_text())["seconds"]
                run_dirs.append(run_dir)
                continue
            sets = [f"output.dir={run_dir}"]
            if args.smoke:
                sets += ["trainer.steps=2", "checkpoint.every=2", "trainer.eval_batches=1", *SMOKE_SET[task]]
            cmd = [sys.executable, "-m", "titans_train.cli", str(SPECS / task / f"{variant}.yaml")]
            for item in sets:
                cmd += ["--set", item]
            print(f"train {task}/{variant} …", flush=True)
            status, seconds[variant] = run(cmd, log, allowed=(0, DIVERGED), in_process=args.in_process)
            if status == DIVERGED:  # reported, and left out of the evaluation
                summary["diverged"].append(f"{task}/{variant}")
                print(f"  diverged after {seconds[variant] / 60:.1f} min (see {log})", flush=True)
                continue
            timing.write_text(json.dumps({"seconds": seconds[variant]}) + "\n")
            print(
                f"  {seconds[variant] / 60:.1f} min, final train loss {last_train_loss(run_dir):.3f}",
                flush=True,
            )
            run_dirs.append(run_dir)
        if not run_dirs or args.stage == "train":
            continue
        T = training_length(task)
        contexts = SMOKE_CONTEXTS[task] if args.smoke else tuple(m * T for m in CONTEXT_MULTIPLES)
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
        run(cmd, log, in_process=args.in_process)
        summary["results"][task] = json.loads(result.read_text())
        summary["train_seconds"][task] = seconds
        if task == "lm" and not args.smoke:  # also on English text no training source contains
            text_result = args.out / "lm_text.json"
            text_cmd = [*cmd[: cmd.index("-o")], "--text", str(HELDOUT_TEXT), "-o", str(text_result)]
            text_cmd += ["--plot", str(args.out / "lm_text.png")]
            print("evaluate lm on held-out English …", flush=True)
            run(text_cmd, log, in_process=args.in_process)
            summary["results"]["lm_text"] = json.loads(text_result.read_text())
            summary["train_seconds"]["lm_text"] = seconds
    if args.stage == "train":
        return
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    table = markdown(summary)
    if summary["diverged"]:
        table += f"\nDiverged (not evaluated): {', '.join(summary['diverged'])}\n"
    (args.out / "results.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
