"""Neural-memory throughput: tokens/s forward and forward+backward for each update rule, and compiled peak memory.

    uv run python benchmarks/memory_throughput.py                     # the issue's table (N = 1K, 4K, 16K)
    uv run python benchmarks/memory_throughput.py --lengths 1024 --rules momentum_scan

Setting: batch 2, width 256, 4 heads of 64, depth-2 MLP memory with expansion 4, chunk 16 (paper revision defaults).
Each number is the best of --repeats timed calls of one jitted function (after a warm-up call): the machine may be
shared, so the best call is the least disturbed one. "tok/cpu-s" divides by the process CPU time of that call instead
(both cores' time, so it does not depend on how busy the other core is): a check of the scaling in N when the machine
is contended. Peak memory is XLA's compiled estimate (arguments + outputs + temporaries of the jitted step).

The ``sequential`` rule is the token-by-token reference (the oracle of the tests, not a training path): its
forward+backward keeps a full parameter tree per token (≈ 4.5 GiB at N = 1K, so ≈ 18 and 73 GiB at 4K and 16K), so by
default it is timed forward+backward only up to --max-seq-len-sequential tokens; its forward pass runs at every N.

Prints a table and a check of the targets (momentum_scan forward+backward ≥ --target-tok-s at the shortest N, and
tokens/s at the longest N ≥ 0.8× the shortest), and writes JSON to benchmarks/out/memory_throughput.json and a copy to
--results (default benchmarks/results/memory_throughput.json, the committed one; pass "" to skip).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx
from titans_memory import MLPMemory, MLPMemoryConfig, MomentumScanRule, NeuralMemory, NeuralMemoryConfig, SequentialRule

RULES = {"sequential": SequentialRule, "momentum_scan": MomentumScanRule}
HERE = Path(__file__).parent


def build(rule: str, d_model: int, heads: int, chunk: int) -> NeuralMemory:
    return NeuralMemory(
        NeuralMemoryConfig(num_heads=heads),
        d_model=d_model,
        rngs=nnx.Rngs(0),
        memory_model=MLPMemory(MLPMemoryConfig(depth=2, expansion=4.0)),
        update_rule=RULES[rule](chunk_size=chunk),
    )


def measure(fn, args, repeats: int) -> dict:
    """Best wall seconds per call (and that call's process CPU seconds), compiled peak bytes."""
    compiled = fn.lower(*args).compile()
    mem = compiled.memory_analysis()
    peak = sum(getattr(mem, f, 0) for f in ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes"))
    jax.block_until_ready(compiled(*args))
    best, cpu = float("inf"), float("nan")
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(compiled(*args))
        wall = time.perf_counter() - t0
        if wall < best:
            best, cpu = wall, time.process_time() - c0
    return {"s": best, "cpu_s": cpu, "peak": peak}


def bench(rule: str, N: int, a, with_backward: bool) -> dict:
    B = a.batch
    model = build(rule, a.d_model, a.heads, a.chunk)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    x = jax.random.normal(jax.random.key(1), (B, N, a.d_model))

    def forward(params, x):
        return nnx.merge(graphdef, params, rest)(x)[0]

    def loss(params, x):
        return jnp.mean(forward(params, x) ** 2)

    row = {"rule": rule, "N": N, "B": B}
    fwd = measure(jax.jit(forward), (params, x), a.repeats)
    row |= {"fwd_tok_s": B * N / fwd["s"], "fwd_cpu_s": fwd["cpu_s"], "fwd_peak_mib": fwd["peak"] / 2**20}
    if with_backward:
        bwd = measure(jax.jit(jax.value_and_grad(loss)), (params, x), a.repeats)
        row |= {"fwd_bwd_tok_s": B * N / bwd["s"], "fwd_bwd_cpu_s": bwd["cpu_s"],
                "fwd_bwd_tok_per_cpu_s": B * N / bwd["cpu_s"], "fwd_bwd_peak_mib": bwd["peak"] / 2**20}
    else:
        row |= {"fwd_bwd_tok_s": None, "fwd_bwd_cpu_s": None, "fwd_bwd_tok_per_cpu_s": None, "fwd_bwd_peak_mib": None,
                "note": f"forward+backward skipped: N > --max-seq-len-sequential ({a.max_seq_len_sequential})"}
    return row


def fmt(x, spec: str, width: int) -> str:
    return f"{'—':>{width}}" if x is None else f"{x:>{width}{spec}}"


def check_targets(rows: list[dict], target: float) -> dict:
    """momentum_scan: fwd+bwd tok/s at the shortest N vs the target, and longest-N / shortest-N tok/s (≥ 0.8)."""
    ms = sorted((r for r in rows if r["rule"] == "momentum_scan" and r["fwd_bwd_tok_s"]), key=lambda r: r["N"])
    if not ms:
        return {}
    lo, hi = ms[0], ms[-1]
    out = {"N_shortest": lo["N"], "N_longest": hi["N"], "fwd_bwd_tok_s_at_shortest": lo["fwd_bwd_tok_s"],
           "target_tok_s": target, "meets_speed": lo["fwd_bwd_tok_s"] >= target}
    if hi is not lo:
        ratio = hi["fwd_bwd_tok_s"] / lo["fwd_bwd_tok_s"]
        out |= {"longest_over_shortest": ratio, "meets_flatness": ratio >= 0.8,
                "longest_over_shortest_per_cpu_s": hi["fwd_bwd_tok_per_cpu_s"] / lo["fwd_bwd_tok_per_cpu_s"],
                "peak_mib_per_1k_tokens": {r["N"]: r["fwd_bwd_peak_mib"] * 1024 / r["N"] for r in ms}}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384])
    p.add_argument("--rules", nargs="+", default=list(RULES), choices=list(RULES))
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--chunk", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5, help="timed calls per measurement; the best is reported")
    p.add_argument("--max-seq-len-sequential", type=int, default=1024,
                   help="longest N for the sequential rule's forward+backward (its forward runs at every N)")
    p.add_argument("--target-tok-s", type=float, default=9340.0,
                   help="momentum_scan fwd+bwd target at the shortest N (10x titans-pytorch's 934 tok/s)")
    p.add_argument("--out", type=Path, default=HERE / "out" / "memory_throughput.json")
    p.add_argument("--results", type=str, default=str(HERE / "results" / "memory_throughput.json"),
                   help='a second copy of the JSON (the committed one); "" to skip')
    a = p.parse_args()
    rows = []
    head = (f"{'rule':<14}{'N':>7}{'fwd tok/s':>12}{'fwd+bwd tok/s':>15}{'fwd+bwd tok/cpu-s':>19}"
            f"{'fwd MiB':>10}{'fwd+bwd MiB':>13}")
    print(head)
    print("-" * len(head))
    for rule in a.rules:
        for N in a.lengths:
            r = bench(rule, N, a, with_backward=rule != "sequential" or N <= a.max_seq_len_sequential)
            rows.append(r)
            print(f"{rule:<14}{N:>7}{r['fwd_tok_s']:>12.0f}{fmt(r['fwd_bwd_tok_s'], '.0f', 15)}"
                  f"{fmt(r['fwd_bwd_tok_per_cpu_s'], '.0f', 19)}"
                  f"{r['fwd_peak_mib']:>10.1f}{fmt(r['fwd_bwd_peak_mib'], '.1f', 13)}", flush=True)
    if any(r["fwd_bwd_tok_s"] is None for r in rows):
        print(f"— : sequential forward+backward not run above N = {a.max_seq_len_sequential} "
              "(a parameter tree per token; see --max-seq-len-sequential)")
    targets = check_targets(rows, a.target_tok_s)
    if targets:
        print(f"momentum_scan fwd+bwd at N={targets['N_shortest']}: {targets['fwd_bwd_tok_s_at_shortest']:.0f} tok/s "
              f"(target ≥ {a.target_tok_s:.0f}: {'met' if targets['meets_speed'] else 'MISSED'})")
        if "longest_over_shortest" in targets:
            print(f"momentum_scan fwd+bwd tok/s at N={targets['N_longest']} / N={targets['N_shortest']}: "
                  f"{targets['longest_over_shortest']:.2f} (target ≥ 0.80: "
                  f"{'met' if targets['meets_flatness'] else 'MISSED'}); per CPU-second: "
                  f"{targets['longest_over_shortest_per_cpu_s']:.2f}")
    meta = {"device": str(jax.devices()[0]), "cpu_count": os.cpu_count(), "machine": platform.machine(),
            "jax": jax.__version__, "load_average": os.getloadavg(), "timing": "best of --repeats calls, wall clock",
            "setting": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()}}
    doc = json.dumps({"meta": meta, "rows": rows, "targets": targets}, indent=2)
    for path in filter(None, [a.out, Path(a.results) if a.results else None]):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(doc)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
