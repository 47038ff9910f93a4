"""Seeded comparisons: each row of a named sweep trained with several ``trainer.seed`` values, then scored with
``titans-eval`` at several contexts; the table gives mean and spread (min–max) over seeds.

    uv run python benchmarks/seeded_sweep.py mac_write_mqar                # every row, seeds 0 1 2
    uv run python benchmarks/seeded_sweep.py mac_write_niah --only x+y --seeds 0 1 --jobs 2

A row is a spec (relative to ``specs/``) with ``--set`` overrides; each (row, seed) trains in its own run
directory under ``--runs`` (kept, so ``niah_probe.py`` and ``titans-eval`` can look at it again; a finished run is
not trained again, and a run scored before at the sweep's contexts is not scored again). ``--jobs 2`` trains two
runs at once, each pinned to one core; every run shares one persistent JAX compilation cache, so seeds after the
first reuse the compiled step. Results go to ``benchmarks/results/seeded/<sweep>.{json,md}``: per run the final
training loss, minutes, the evaluation at each context and the memory's diagnostics at the first; rows not run
this time keep their earlier results (rows since removed from the sweep are dropped), and a run's earlier result
stays until the run finishes again. Two processes may work on one sweep at once (e.g. one row each, pinned with
``taskset``): each merges its runs into the file under a lock, so neither loses the other's. Minutes are wall
time on the 2-core machine while other jobs may share it: an upper bound.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import queue
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
OUT = ROOT / "benchmarks" / "results" / "seeded"


class Sweep:
    """Rows (name → spec, overrides) of one task, scored at ``contexts`` on ``examples`` examples each."""

    def __init__(self, task: str, contexts: tuple[int, ...], examples: int, rows: dict[str, tuple[str, list[str]]]):
        self.task, self.contexts, self.examples, self.rows = task, contexts, examples, rows


_MQAR_600 = ["trainer.steps=600", "trainer.eval_every=600", "checkpoint.every=600"]
_NIAH = ["trainer.eval_every=800", "checkpoint.every=800"]
_NIAH_1500 = ["trainer.steps=1500", "trainer.eval_every=1500", "checkpoint.every=1500"]
_NIAH_2000 = ["trainer.steps=2000", "trainer.eval_every=2000", "checkpoint.every=2000"]
_NIAH_2500 = ["trainer.steps=2500", "trainer.eval_every=2500", "checkpoint.every=2500"]


_LONG = ["model.memory.num_heads=1", "model.memory.init_forget=1e-5"]  # one head of 64, a long horizon
_ETA = ["model.memory.max_momentum=0.95"]
_RECIPE = _LONG + ["model.memory.init_lr=0.005"]  # the S-NIAH recipe of the README
_TWO_64 = ["model.memory.num_heads=2", "model.memory.head_dim=64", "model.memory.init_forget=1e-5"]  # MAC's probes
_CARRY8 = ["trainer.carry_memory=true", "trainer.carry_reset_every=8"]  # titans_train.carry, task data


def _mac(variant: str, task: str) -> list[str]:
    """MAC's settings where the sweeps below change the memory: the library's write (x+y; the experiment specs
    keep y, as measured) and, for S-NIAH, the segment of 64 that puts the question's key in the answer's segment."""
    if variant != "mac":
        return []
    return ["model.mac_write=x+y"] + (["model.segment=64"] if task == "niah" else [])


SWEEPS: dict[str, Sweep] = {
    # MAC's write (model.mac_write): MQAR with the delay of 32 (T = 64), 600 steps (where MAC was at 25% with y)
    "mac_write_mqar": Sweep(
        "mqar",
        (64, 128),
        256,
        # (x, the block's input alone, added after S-NIAH's recall_8x rows)
        {
            w: ("experiments/mqar/mac.yaml", _MQAR_600 + [f"model.mac_write={w}"])
            for w in ("y", "x+y", "norm(x+y)", "x")
        },
    ),
    # MAC's write on S-NIAH (T = 320), 800 steps, segment 32 as in the variant comparison
    "mac_write_niah": Sweep(
        "niah",
        (320, 640),
        64,
        {w: ("experiments/niah/mac.yaml", _NIAH + [f"model.mac_write={w}"]) for w in ("y", "x+y", "norm(x+y)")}
        # the segment handicap: the question's key ends 36 bytes before the answer, past a 32-byte segment
        | {"x+y@seg64": ("experiments/niah/mac.yaml", _NIAH + ["model.mac_write=x+y", "model.segment=64"])}
        # the Eq 25 read: every token reads the memory after its own write (the library default) instead of the
        # chunk-start weights, on the segment-64 row
        | {
            "x+y@seg64@read=token": (
                "experiments/niah/mac.yaml",
                _NIAH + ["model.mac_write=x+y", "model.segment=64", "model.memory.rule.read=token"],
            )
        }
        # the training budget: the segment-64 row with 1,500 steps (the MQAR experiments' budget) instead of 800
        | {"x+y@seg64@1500": ("experiments/niah/mac.yaml", _NIAH_1500 + ["model.mac_write=x+y", "model.segment=64"])},
    ),
    # Recall at 8x the training length (issue 21), the rows that were run. α₀ (model.memory.init_forget) 1e-5: a
    # write keeps (1 - 1e-5)^2560 ≈ 97% of itself over the longest context, where the specs' α₀ (1e-3 for S-NIAH,
    # 1e-2 for MQAR) keeps 8% and ~0%. One memory head of 64: a write of another key erodes a stored one by
    # ~θ/d_head, 4x slower than the specs' four heads of 16. θ₀ (init_lr) 0.005 instead of 0.05: a write gate that
    # starts nearly closed, so training opens it where a write pays (the needle) and the haystack's writes stay small
    "horizon_niah": Sweep(
        "niah",
        (320, 640, 1280, 2560),
        64,
        {
            "lmm@forget1e-5": ("experiments/niah/lmm.yaml", _NIAH + _LONG[1:]),
            "lmm@heads1@forget1e-5": ("experiments/niah/lmm.yaml", _NIAH + _LONG),
            "lmm@heads1@forget1e-5@eta0.95": ("experiments/niah/lmm.yaml", _NIAH + _LONG + _ETA),
            "lmm@heads1@forget1e-5@theta0.001": (
                "experiments/niah/lmm.yaml",
                _NIAH + _LONG + ["model.memory.init_lr=0.001"],
            ),
        }
        | {
            f"{v}@heads1@forget1e-5@theta0.005": (f"experiments/niah/{v}.yaml", _NIAH + _RECIPE)
            for v in ("lmm", "mag", "mal")
        }
        # the recipe trained with the memory carried across each row's examples, restarted every 8: in training
        # the memory meets the state of up to 8T tokens of writes, as at the longest context scored
        | {
            f"{v}@heads1@forget1e-5@theta0.005@carry8": (f"experiments/niah/{v}.yaml", _NIAH + _RECIPE + _CARRY8)
            for v in ("lmm",)
        },
    ),
    # the recipe with the MQAR experiments' 1,500 steps (800 left seed 1 short of training at T)
    "horizon_niah_1500": Sweep(
        "niah",
        (320, 640, 1280, 2560),
        64,
        {
            f"{v}@heads1@forget1e-5@theta0.005@1500": (
                f"experiments/niah/{v}.yaml",
                _NIAH_1500 + _RECIPE + _mac(v, "niah"),
            )
            # MAC was stopped at step 1,080, still on the plateau (results/probes/mac_niah_recipe_stopped.md)
            for v in ("lmm", "mag", "mac", "mal")
        }
        # MAC with the long horizon but the specs' θ₀ (0.05): the closed start kept MAC on the plateau
        | {"mac@heads1@forget1e-5@1500": ("experiments/niah/mac.yaml", _NIAH_1500 + _LONG + _mac("mac", "niah"))}
        # and a start between the two: every seed learns; at 8T two of three keep ≥ 81%
        | {
            "mac@heads1@forget1e-5@theta0.02@1500": (
                "experiments/niah/mac.yaml",
                _NIAH_1500 + _LONG + ["model.memory.init_lr=0.02"] + _mac("mac", "niah"),
            )
        },
    ),
    # LMM, the one variant short of 70% at 8T after 1,500 steps (67.2%), with 2,000: at 800 and 1,500 steps every
    # variant recalled more at 8T the longer it trained (its own sweep: the 1,500-step one is still running)
    "horizon_niah_2000": Sweep(
        "niah",
        (320, 640, 1280, 2560),
        64,
        {"lmm@heads1@forget1e-5@theta0.005@2000": ("experiments/niah/lmm.yaml", _NIAH_2000 + _RECIPE)},
    ),
    # Issue 21's S-NIAH table at 8T, every row trained again after the closed-form surprise clamp
    # (MLPMemory.grad_norms: the same function, 2x the training tokens/s) so that each run's minutes are today's:
    # LMM, MAG and MAL with the recipe and the budgets that passed (2,000 steps for LMM, 1,500 for MAG and MAL);
    # MAC with θ₀ 0.02 and 2,000 steps, and 2,500 for one seed (at 1,500 one seed of three kept large writes and
    # failed at 8T)
    "recall_8x": Sweep(
        "niah",
        (320, 640, 1280, 2560),
        64,
        {"lmm@heads1@forget1e-5@theta0.005@2000": ("experiments/niah/lmm.yaml", _NIAH_2000 + _RECIPE)}
        | {
            f"{v}@heads1@forget1e-5@theta0.005@1500": (f"experiments/niah/{v}.yaml", _NIAH_1500 + _RECIPE)
            for v in ("mag", "mal")
        }
        | {
            f"mac@heads1@forget1e-5@theta0.02@{steps}": (
                "experiments/niah/mac.yaml",
                budget + _LONG + ["model.memory.init_lr=0.02"] + _mac("mac", "niah"),
            )
            for steps, budget in ((2000, _NIAH_2000), (2500, _NIAH_2500))
        }
        # two heads of 32: with four heads of 16 (and θ₀ 0.05) every MAC seed learned S-NIAH within 1,500 steps
        # (mac_write_niah), with one head of 64 one seed of five had not after 2,000; a write of another key
        # erodes a stored one by ~θ/d_head, so two heads sit between the two
        | {
            "mac@heads2@forget1e-5@theta0.02@2000": (
                "experiments/niah/mac.yaml",
                _NIAH_2000
                + ["model.memory.num_heads=2", "model.memory.init_forget=1e-5", "model.memory.init_lr=0.02"]
                + _mac("mac", "niah"),
            )
        }
        # two heads of 64 (model.memory.head_dim: the memory 128 wide, a step ~1.6x one head's): two
        # chances to leave the plateau, as with two heads of 32, while each head erodes a stored key by ~θ/64, as
        # the one head of 64 does; 1,500 steps (aimed at 15 minutes a run; ~20 beside another run)
        | {
            f"mac@heads2x64@forget1e-5@theta{theta}@1500": (
                "experiments/niah/mac.yaml",
                _NIAH_1500 + _TWO_64 + [f"model.memory.init_lr={theta}"] + _mac("mac", "niah"),
            )
            for theta in ("0.02", "0.01", "0.005")
        }
        # (θ₀ 0.005, the recipe's: both seeds still on the plateau at step 700 and stopped; θ₀ 0.01: seed 0 left it at
        # step ~700 and scores 1.6% at T; results/probes/mac_niah_2x64_theta0.005_stopped.md)
        # the same with θ capped at 0.1 or 1.0 instead of 0.5 (model.memory.max_lr; 0.1 holds less at 8T, 1.0 no more)
        | {
            f"mac@heads2x64@forget1e-5@theta0.02@maxlr{cap}@1500": (
                "experiments/niah/mac.yaml",
                _NIAH_1500
                + _TWO_64
                + ["model.memory.init_lr=0.02", f"model.memory.max_lr={cap}"]
                + _mac("mac", "niah"),
            )
            for cap in ("0.1", "1.0")
        }
        # the same with η capped at 0.8 (model.memory.max_momentum; η₀ 0.72, the gate's start as with 0.9 of 1):
        # a surprise moves M for ≲ 5 tokens. Across the MAC runs above, 8T recall falls as the first layer's mean
        # update norm (and mean η) grows. Both seeds were still on the plateau at step 800 and were stopped
        # (results/probes/mac_niah_2x64_eta0.8_stopped.md): the momentum is what gets MAC off it
        | {
            "mac@heads2x64@forget1e-5@theta0.02@eta0.8@1500": (
                "experiments/niah/mac.yaml",
                _NIAH_1500
                + _TWO_64
                + ["model.memory.init_lr=0.02", "model.memory.init_momentum=0.72", "model.memory.max_momentum=0.8"]
                + _mac("mac", "niah"),
            )
        }
        # MAC writing x, the block's normalised input, as MAG's and LMM's memories do (model.mac_write=x; Eq 21's
        # read h = M*(q_t) takes its queries from x too, so the memory's keys and queries see one signal)
        | {
            f"mac@write_x@heads1@forget1e-5@theta{theta}@1500": (
                "experiments/niah/mac.yaml",
                _NIAH_1500 + _LONG + [f"model.memory.init_lr={theta}", "model.mac_write=x", "model.segment=64"],
            )
            for theta in ("0.005", "0.02")
        }
        # MAC within 1,500 steps with a write gate that starts between the recipe's (0.005: the plateau) and 0.02:
        # seed 2 was still on the plateau at step ~1,290 and was stopped (results/probes/mac_niah_theta0.01_stopped.md)
        | {
            "mac@heads1@forget1e-5@theta0.01@1500": (
                "experiments/niah/mac.yaml",
                _NIAH_1500 + _LONG + ["model.memory.init_lr=0.01"] + _mac("mac", "niah"),
            ),
        },
    ),
    # MQAR: the specs unchanged (the variant comparison's settings) and with the ceiling on η
    # (model.memory.max_momentum) for every variant; the other rows are LMM's one-seed probes
    "horizon_mqar": Sweep(
        "mqar",
        (64, 128, 256, 512),
        256,
        {
            "lmm": ("experiments/mqar/lmm.yaml", []),
            "lmm@forget1e-5": ("experiments/mqar/lmm.yaml", _LONG[1:]),
            "lmm@heads1": ("experiments/mqar/lmm.yaml", _LONG[:1]),
            "lmm@heads1@eta0.95": ("experiments/mqar/lmm.yaml", _LONG[:1] + _ETA),
        }
        | {f"{v}@eta0.95": (f"experiments/mqar/{v}.yaml", _ETA + _mac(v, "mqar")) for v in ("lmm", "mag", "mac", "mal")}
        # MAC writing x (model.mac_write=x, its S-NIAH setting in recall_8x) with MQAR's budget and η ceiling
        | {"mac@eta0.95@write_x": ("experiments/mqar/mac.yaml", _ETA + ["model.mac_write=x"])},
    ),
}


def run_dir(runs: Path, sweep: str, row: str, seed: int) -> Path:
    safe = row.replace("+", "p").replace("(", "_").replace(")", "").replace(":", "-").replace(",", "_")
    return runs / sweep / f"{safe}-s{seed}"


def _env(core: int | None) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(ROOT / "runs" / ".jax-cache"))
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    return env


def _run(cmd: list[str], log: Path, core: int | None) -> int:
    if core is not None:
        cmd = ["taskset", "-c", str(core), *cmd]
    with log.open("a", encoding="utf-8") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        return subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=_env(core)).returncode


def last_train_loss(path: Path) -> float | None:
    if not (path / "metrics.jsonl").exists():
        return None
    records = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines() if line.strip()]
    train = [r for r in records if r.get("kind") == "train"]
    return train[-1]["loss"] if train else None


def _scored_as(scored: Path, sweep: Sweep) -> bool:
    """Whether ``scored`` (a titans-eval result) holds this sweep's contexts, examples and evaluation seed 1."""
    if not scored.exists():
        return False
    results = json.loads(scored.read_text())["runs"][0]["results"]
    got = {(r["context"], r["examples"], r["seed"]) for r in results}
    return got == {(c, sweep.examples, 1) for c in sweep.contexts}


def train_and_score(sweep: Sweep, name: str, row: str, seed: int, runs: Path, log: Path, core: int | None) -> dict:
    spec, sets = sweep.rows[row]
    path = run_dir(runs, name, row, seed)
    timing = path / "seeded_sweep_train_seconds.json"
    status = 0
    if not timing.exists():
        cmd = [sys.executable, "-m", "titans_train.cli", str(SPECS / spec), "--set", f"output.dir={path}"]
        for item in [*sets, f"trainer.seed={seed}"]:
            cmd += ["--set", item]
        start = time.time()
        status = _run(cmd, log, core)
        if status == 0:
            timing.write_text(json.dumps({"seconds": time.time() - start}) + "\n")
    result: dict = {"row": row, "seed": seed, "run_dir": str(path.relative_to(ROOT)), "status": status}
    if status != 0:
        return result
    result["train_minutes"] = round(json.loads(timing.read_text())["seconds"] / 60, 2)
    result["final_train_loss"] = last_train_loss(path)
    scored = path / f"eval_{sweep.task}.json"
    if _scored_as(scored, sweep):  # scored before, the same way: not scored again
        result["eval_status"] = 0
    else:
        cmd = [sys.executable, "-m", "titans_train.evaluate.cli", str(path), "--task", sweep.task]
        cmd += ["--contexts", ",".join(map(str, sweep.contexts)), "--examples", str(sweep.examples), "--seed", "1"]
        cmd += ["-o", str(scored)]
        result["eval_status"] = _run(cmd, log, core)
    if result["eval_status"] == 0:
        doc = json.loads(scored.read_text())
        result["accuracy"] = {str(r["context"]): r["accuracy"] for r in doc["runs"][0]["results"]}
        # the memory's gates and norms per layer at the training length (titans-eval diagnostics), when recorded
        result["memory_at_T"] = doc["runs"][0]["results"][0].get("memory")
    return result


def summarise(sweep: Sweep, results: list[dict]) -> list[dict]:
    rows = []
    for row in sweep.rows:
        done = [r for r in results if r["row"] == row and "accuracy" in r]
        if not done:
            continue
        entry: dict = {"row": row, "seeds": sorted(r["seed"] for r in done), "accuracy": {}}
        for c in map(str, sweep.contexts):
            values = [100 * r["accuracy"][c] for r in done if c in r["accuracy"]]
            entry["accuracy"][c] = {
                "mean": statistics.fmean(values),
                "min": min(values),
                "max": max(values),
                "values": values,
            }
        entry["train_minutes_mean"] = statistics.fmean(r["train_minutes"] for r in done)
        rows.append(entry)
    return rows


def markdown(name: str, sweep: Sweep, summary: list[dict]) -> str:
    head = ["row", "seeds"] + [f"@{c} mean (min–max)" for c in sweep.contexts] + ["per seed", "train min"]
    lines = [f"**{name}** ({sweep.task}, accuracy %)", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for entry in summary:
        cells = [f"`{entry['row']}`", ",".join(map(str, entry["seeds"]))]
        for c in map(str, sweep.contexts):
            a = entry["accuracy"][c]
            cells.append(f"{a['mean']:.1f} ({a['min']:.1f}–{a['max']:.1f})")
        per_seed = "; ".join(
            "/".join(f"{v:.1f}" for v in vs)
            for vs in zip(*(entry["accuracy"][str(c)]["values"] for c in sweep.contexts), strict=True)
        )
        cells += [per_seed, f"{entry['train_minutes_mean']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", choices=sorted(SWEEPS))
    parser.add_argument("--only", default="", help="comma-separated row names (default: every row)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, choices=(1, 2), default=1, help="runs at once (each pinned to a core)")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "seeded")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    sweep = SWEEPS[args.sweep]
    rows = [r for r in sweep.rows if not args.only or r in args.only.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    result_path = args.out / f"{args.sweep}.json"
    todo = [(row, seed) for row in rows for seed in args.seeds]
    mine: dict[tuple[str, int], dict] = {}  # the runs this process finished
    log = args.out / f"{args.sweep}.log"

    cores: queue.Queue[int | None] = queue.Queue()
    for core in range(2) if args.jobs == 2 else [None]:
        cores.put(core)

    def one(row: str, seed: int) -> dict:
        core = cores.get()  # a core no other running job holds
        try:
            print(f"{row} seed {seed} …", flush=True)
            r = train_and_score(sweep, args.sweep, row, seed, args.runs, log, core)
        finally:
            cores.put(core)
        print(f"  {r}", flush=True)
        return r

    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(one, row, seed) for row, seed in todo]
        for f in futures:
            r = f.result()
            mine[r["row"], r["seed"]] = r
            write_results(result_path, args.runs / f"{args.sweep}.lock", args.sweep, sweep, mine)
    print(markdown(args.sweep, sweep, summarise(sweep, _on_disk(result_path, sweep))))


def _on_disk(result_path: Path, sweep: Sweep) -> list[dict]:
    runs = json.loads(result_path.read_text())["runs"] if result_path.exists() else []
    return [r for r in runs if r["row"] in sweep.rows]


def write_results(
    result_path: Path, lock_path: Path, name: str, sweep: Sweep, mine: dict[tuple[str, int], dict]
) -> None:
    """Merge this process's finished runs into the results on disk and write them (JSON and table).

    Under a lock, the file is read again just before it is written: earlier results stay until their run finishes
    again (an interrupted sweep loses none of them), and two processes working on one sweep (say, one row each)
    keep each other's runs."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:  # (in the runs folder, which git ignores)
        fcntl.flock(lock, fcntl.LOCK_EX)
        by_run = {(r["row"], r["seed"]): r for r in _on_disk(result_path, sweep)} | mine
        results = list(by_run.values())
        summary = summarise(sweep, results)
        doc = {
            "sweep": name,
            "task": sweep.task,
            "contexts": sweep.contexts,
            "examples": sweep.examples,
            "rows": {r: {"spec": s, "set": o} for r, (s, o) in sweep.rows.items()},
            "runs": results,
            "summary": summary,
        }
        result_path.write_text(json.dumps(doc, indent=2) + "\n")
        result_path.with_suffix(".md").write_text(markdown(name, sweep, summary))


if __name__ == "__main__":
    main()
