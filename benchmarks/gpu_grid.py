"""The GPU-scale recall grid: ready to run on an accelerator, with no result claimed until it has run.

    uv run python benchmarks/gpu_grid.py                       # everything (a GPU machine; many hours)
    uv run python benchmarks/gpu_grid.py --task mqar --variants mac,swa --points 0,1
    uv run python benchmarks/gpu_grid.py --dry-run             # validate every point's spec (seconds each)
    uv run python benchmarks/gpu_grid.py --list                # print the grid

- **MQAR** (Zoology's grid): ``specs/gpu/mqar.yaml`` over (seq_len, num_kv_pairs) ∈ {(64, 4), (128, 8),
  (256, 16), (512, 64)} × d_model ∈ {64, 128, 256} × learning rate ∈ {1e-4, 4.6e-4, 2.2e-3, 1e-2} (Zoology's
  ``logspace(-4, -2, 4)``) × variant; each point is trained by ``titans-train`` and scored by ``titans-eval``
  at its own length (accuracy on queries). Zoology reports the best learning rate per point.
- **S-NIAH**: ``specs/gpu/niah.yaml`` (25–37M parameters, byte level, window 512) per variant, trained on
  contexts up to 2K bytes and scored at 2K, 4K, 8K and 16K.
- **Multi-key / multi-value NIAH and BABILong-style qa1**: ``specs/gpu/niah_multikey.yaml``,
  ``niah_multivalue.yaml`` and ``babilong.yaml`` -- the S-NIAH model and schedule on RULER's
  ``niah_multikey_1`` (4 keys, one asked) / ``niah_multivalue`` (4 values) and on bAbI-qa1-style facts in the
  haystack (4 facts), per variant, scored at the same contexts (accuracy versus context, ``titans-eval --plot``).

Results go to ``benchmarks/results/gpu_grid_<task>.json`` (a list of points with their accuracies), written
after every point so an interrupted grid keeps what it finished (the haystack tasks also get
``gpu_grid_<task>.png``, accuracy versus context per variant); run directories go under ``--runs`` and a
rerun resumes them. ``--steps`` scales training down for a smoke run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs" / "gpu"
VARIANTS = ("lmm", "mac", "mag", "mal", "swa")
MQAR_SHAPES = ((64, 4), (128, 8), (256, 16), (512, 64))
MQAR_WIDTHS = (64, 128, 256)
MQAR_LRS = (1e-4, 4.6e-4, 2.2e-3, 1e-2)
NIAH_CONTEXTS = (2048, 4096, 8192, 16384)
HAYSTACK_TASKS = ("niah", "niah_multikey", "niah_multivalue", "babilong")  # one spec each, same contexts
TASKS = ("mqar", *HAYSTACK_TASKS)


def grid(task: str, variants: tuple[str, ...]) -> list[dict]:
    """Every point of ``task``'s grid: a name, the base spec and its ``--set`` overrides."""
    points = []
    if task == "mqar":
        for (seq, pairs), width, lr, variant in itertools.product(MQAR_SHAPES, MQAR_WIDTHS, MQAR_LRS, variants):
            name = f"mqar/{variant}-T{seq}-kv{pairs}-d{width}-lr{lr:g}"
            sets = [
                f"model.name={variant}",
                f"model.d_model={width}",
                f"data.seq_len={seq}",
                f"data.source.num_kv_pairs={pairs}",
                f"optimizer.lr={lr}",
            ]
            points.append({"name": name, "spec": "mqar.yaml", "set": sets, "contexts": [seq]})
    elif task in HAYSTACK_TASKS:
        for variant in variants:
            points.append(
                {
                    "name": f"{task}/{variant}",
                    "spec": f"{task}.yaml",
                    "set": [f"model.name={variant}"],
                    "contexts": list(NIAH_CONTEXTS),
                }
            )
    else:
        raise ValueError(f"unknown task {task!r} (choose from {', '.join(TASKS)})")
    return points


def plot_task(task: str, points: list[dict], runs: Path, path: Path) -> None:
    """Accuracy versus context of every evaluated point of a haystack task, one line per variant."""
    from titans_train.evaluate.report import FORMAT, plot_results

    entries = []
    for p in points:
        eval_json = runs / p["name"] / "eval.json"
        if eval_json.exists():
            entry = json.loads(eval_json.read_text())["runs"][0]
            entries.append({**entry, "label": p["name"].split("/")[-1]})
    if entries:
        print(f"wrote {plot_results({'format': FORMAT, 'runs': entries}, path)}", flush=True)


def run(cmd: list[str], log: Path) -> int:
    with log.open("a", encoding="utf-8") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        return subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=(*TASKS, "all"), default="all")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--points", default="", help="comma-separated indices into the task's grid (--list)")
    parser.add_argument("--steps", type=int, default=None, help="override trainer.steps (smoke runs)")
    parser.add_argument("--examples", type=int, default=256, help="evaluation examples per context")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "gpu_grid")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--dry-run", action="store_true", help="validate each point's spec, train nothing")
    parser.add_argument("--list", action="store_true", help="print the grid points and exit")
    args = parser.parse_args(argv)
    variants = tuple(v for v in args.variants.split(",") if v)
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant {unknown[0]!r} (choose from {', '.join(VARIANTS)})")
    tasks = TASKS if args.task == "all" else (args.task,)
    failed = 0
    for task in tasks:
        points = grid(task, variants)
        if args.points:
            try:
                points = [points[int(i)] for i in args.points.split(",")]
            except (ValueError, IndexError):
                parser.error(f"--points: indices 0..{len(points) - 1} of the {task} grid")
        if args.list:
            for i, p in enumerate(points):
                print(f"{task}[{i}] {p['name']}: {' '.join(p['set'])}")
            continue
        args.out.mkdir(parents=True, exist_ok=True)
        log = args.out / f"gpu_grid_{task}.log"
        result_path = args.out / f"gpu_grid_{task}.json"
        results = [] if args.dry_run or not result_path.exists() else json.loads(result_path.read_text())
        for p in points:
            run_dir = args.runs / p["name"]
            sets = p["set"] + [f"output.dir={run_dir}"]
            if args.steps is not None:
                every = max(1, args.steps)
                sets += [
                    f"trainer.steps={args.steps}",
                    f"checkpoint.every={every}",
                    f"trainer.eval_every={every}",
                ]
            cmd = [sys.executable, "-m", "titans_train.cli", str(SPECS / p["spec"])]
            for item in sets:
                cmd += ["--set", item]
            if args.dry_run:
                status = run([*cmd, "--dry-run"], log)
                print(f"{p['name']}: {'ok' if status == 0 else f'FAILED ({status}), see {log}'}", flush=True)
                failed += status != 0
                continue
            start = time.time()
            print(f"{p['name']} …", flush=True)
            status = run(cmd, log)
            minutes = (time.time() - start) / 60
            entry = {"name": p["name"], "set": p["set"], "status": status, "train_minutes": round(minutes, 1)}
            if status == 0:
                eval_json = run_dir / "eval.json"
                ev = [
                    sys.executable,
                    "-m",
                    "titans_train.evaluate.cli",
                    str(run_dir),
                    "--task",
                    task,
                    "--contexts",
                    ",".join(map(str, p["contexts"])),
                    "--examples",
                    str(args.examples),
                    "--seed",
                    "1",
                    "-o",
                    str(eval_json),
                ]
                if run(ev, log) == 0:
                    doc = json.loads(eval_json.read_text())
                    keys = ("context", "accuracy", "all_accuracy")  # all_accuracy: niah_multivalue only
                    entry["results"] = [{k: r[k] for k in keys if k in r} for r in doc["runs"][0]["results"]]
            failed += "results" not in entry
            results = [r for r in results if r["name"] != p["name"]] + [entry]
            result_path.write_text(json.dumps(results, indent=2) + "\n")
            print(f"  {entry}", flush=True)
        if task in HAYSTACK_TASKS and not args.dry_run:
            plot_task(task, points, args.runs, args.out / f"gpu_grid_{task}.png")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
