"""Does more context help or hurt? Train language models at T, evaluate bits per byte at T and 4T.

    uv run python benchmarks/length_sweep.py lm128             # every row of one sweep (see SWEEPS)
    uv run python benchmarks/length_sweep.py lm128 --only lmm   # one row

Each row trains a spec of ``specs/experiments/lm/`` with ``--set`` overrides through ``titans-train`` (as
``benchmarks/recall_sweep.py`` does), then ``titans-eval --task lm`` at the contexts T and 4T on the held-out
split of the training data (Python) and on ``benchmarks/data/licenses.txt`` (English the models never saw).
A memory that ages badly shows as bits per byte at 4T above those at T; the memory diagnostics of the eval
(θ, α, update and surprise norms) are kept beside the numbers. The table goes to
``benchmarks/results/length/sweep_<name>.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from recall_sweep import ROOT, run_row

OUT = ROOT / "benchmarks" / "results" / "length"
TEXT = ROOT / "benchmarks" / "data" / "licenses.txt"

#: T = 128 (4× cheaper than the comparison's 512), window/segment 64 so that 4T spans eight windows
_T128 = ["data.seq_len=128", "model.window=64", "model.segment=64", "trainer.batch_size=16", "checkpoint.every=400"]
_TOKEN, _CHUNK = ["model.memory.rule.read=token"], ["model.memory.rule.read=chunk"]
_CARRY8 = ["model.memory.init_forget=0.01", "trainer.carry_memory=true", "trainer.carry_reset_every=8"]
_FLOOR = ["model.memory.init_forget=0.03", "model.memory.min_forget=0.02"]
_FORGET = ["model.memory.init_forget=0.05"]
_MAC_FLOOR = ["model.memory.init_forget=0.06", "model.memory.min_forget=0.05"]
SWEEPS: dict[str, list[tuple[str, str, list[str]]]] = {
    "lm128": [
        ("swa", "../experiments/lm/swa.yaml", _T128),
        ("lmm-chunk", "../experiments/lm/lmm.yaml", _T128 + _CHUNK),
        ("lmm-token", "../experiments/lm/lmm.yaml", _T128 + _TOKEN),
        ("lmm-token-fixed-init", "../experiments/lm/lmm.yaml", _T128 + _TOKEN + ["model.memory.learn_init=false"]),
        ("mac-chunk", "../experiments/lm/mac.yaml", _T128 + _CHUNK),
        ("mac-token", "../experiments/lm/mac.yaml", _T128 + _TOKEN),
        ("mac-token-forget0.05", "../experiments/lm/mac.yaml", _T128 + _TOKEN + ["model.memory.init_forget=0.05"]),
        ("mac-token-forget0.2", "../experiments/lm/mac.yaml", _T128 + _TOKEN + ["model.memory.init_forget=0.2"]),
        ("mag-token", "../experiments/lm/mag.yaml", _T128 + _TOKEN),
        ("mal-token", "../experiments/lm/mal.yaml", _T128 + _TOKEN),
        # a slow memory (α₀ = 0.01) trained with and without its state carried across 8 consecutive windows
        # (trainer.carry_memory: truncated BPTT, fresh state every 8 windows = 1024 tokens), two seeds each
        *[
            (f"lmm-token-forget0.01{tag}{seed_tag}", "../experiments/lm/lmm.yaml", _T128 + _TOKEN + sets + seed)
            for tag, sets in (("", ["model.memory.init_forget=0.01"]), ("-carry8", _CARRY8))
            for seed_tag, seed in (("", []), ("-seed1", ["trainer.seed=1"]))
        ],
        # a floor on α (model.memory.min_forget = 0.02: a write keeps at most 0.98^128 ≈ 7.5% after one window),
        # starting at α₀ = 0.03, two seeds
        *[
            (f"lmm-token-forget0.03-floor0.02{seed_tag}", "../experiments/lm/lmm.yaml", _T128 + _TOKEN + _FLOOR + seed)
            for seed_tag, seed in (("", []), ("-seed1", ["trainer.seed=1"]))
        ],
        # MAC, level at 4T with α₀ = 0.05 (+0.007): α₀ = 0.06 with a floor α ≥ 0.05 (a write keeps at most
        # 0.95^64 ≈ 4% of itself after one segment), two seeds
        *[
            (
                f"mac-token-forget0.06-floor0.05{seed_tag}",
                "../experiments/lm/mac.yaml",
                _T128 + _TOKEN + _MAC_FLOOR + seed,
            )
            for seed_tag, seed in (("", []), ("-seed1", ["trainer.seed=1"]))
        ],
        # the same MAC writing x+y or x instead of y (model.mac_write; the LM spec keeps y, as measured), two seeds
        *[
            (
                f"mac-token-forget0.06-floor0.05-write_{write}{seed_tag}",
                "../experiments/lm/mac.yaml",
                _T128 + _TOKEN + _MAC_FLOOR + [f"model.mac_write={write}"] + seed,
            )
            for write in ("x+y", "x")
            for seed_tag, seed in (("", []), ("-seed1", ["trainer.seed=1"]))
        ],
        # LMM, MAG and MAL with α₀ = 0.05 (level or better at 4T), two seeds
        *[
            (f"{v}-token-forget0.05{seed_tag}", f"../experiments/lm/{v}.yaml", _T128 + _TOKEN + _FORGET + seed)
            for v in ("lmm", "mag", "mal")
            for seed_tag, seed in (("", []), ("-seed1", ["trainer.seed=1"]))
        ],
    ],
}


def evaluate(run_dir: Path, contexts: list[int], text: Path | None, tokens: int) -> dict:
    """``titans-eval --task lm`` of one run; the result JSON's first run record."""
    out = run_dir / ("eval_text.json" if text else "eval_val.json")
    cmd = [sys.executable, "-m", "titans_train.evaluate.cli", str(run_dir), "--task", "lm"]
    cmd += ["--contexts", ",".join(map(str, contexts)), "--lm-tokens", str(tokens), "-o", str(out)]
    if text:
        cmd += ["--text", str(text)]
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())["runs"][0]


def summarise(record: dict) -> dict:
    """bits per byte per context, the last position bucket's bits, and the memory diagnostics if any."""
    out = {}
    for r in record["results"]:
        out[str(r["context"])] = {
            "bpb": r["bits_per_byte"],
            "last_bucket": r["by_position"][-1] if r.get("by_position") else None,
            "memory": r.get("memory"),
        }
    return out


def markdown(rows: list[dict], contexts: list[int]) -> str:
    T, T4 = contexts
    head = f"| row | overrides | exit | Python @{T} | @{T4} | Δ | English @{T} | @{T4} | Δ | train min |"
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = [r["name"], " ".join(f"`{s}`" for s in r["set"]), r["status"]]
        for key in ("val", "text"):
            e = r.get(key) or {}
            a, b = (e.get(str(c), {}).get("bpb") for c in contexts)
            cells += ["–", "–", "–"] if a is None or b is None else [f"{a:.3f}", f"{b:.3f}", f"{b - a:+.3f}"]
        cells.append(f"{r['minutes']:.1f}")
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", choices=sorted(SWEEPS))
    parser.add_argument("--only", default="", help="comma-separated row names (default: every row)")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "length_sweep")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--contexts", default="128,512", help="T,4T")
    parser.add_argument("--lm-tokens", type=int, default=16384, help="held-out tokens per context")
    args = parser.parse_args(argv)
    contexts = [int(c) for c in args.contexts.split(",")]
    rows = SWEEPS[args.sweep]
    if args.only:
        wanted = set(args.only.split(","))
        rows = [r for r in rows if r[0] in wanted]
    args.out.mkdir(parents=True, exist_ok=True)
    result_path = args.out / f"sweep_{args.sweep}.json"
    done = json.loads(result_path.read_text()) if result_path.exists() else []
    done = [r for r in done if r["name"] not in {row[0] for row in rows}]
    log = args.out / f"sweep_{args.sweep}.log"
    for name, spec, sets in rows:
        print(f"{name} …", flush=True)
        result = run_row(name, spec, sets, args.runs / args.sweep, log)
        if result["status"] == 0:
            run_dir = args.runs / args.sweep / name
            result["val"] = summarise(evaluate(run_dir, contexts, None, args.lm_tokens))
            result["text"] = summarise(evaluate(run_dir, contexts, TEXT, args.lm_tokens))
        print(f"  {result['name']}: exit {result['status']}, {result['minutes']:.1f} min", flush=True)
        done.append(result)
        result_path.write_text(json.dumps(done, indent=2) + "\n")
        (args.out / f"sweep_{args.sweep}.md").write_text(markdown(done, contexts))
    print(markdown(done, contexts))


if __name__ == "__main__":
    main()
