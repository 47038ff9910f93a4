"""Neural-memory throughput: tokens/s forward and forward+backward for each update rule, and compiled peak memory.

    uv run python benchmarks/memory_throughput.py                     # the issue's table (N = 1K, 4K, 16K)
    uv run python benchmarks/memory_throughput.py --lengths 1024 --rules momentum_scan

Setting: batch 2, width 256, 4 heads of 64, depth-2 MLP memory with expansion 4, chunk 16 (paper revision defaults).
Prints a table and writes JSON to benchmarks/out/memory_throughput.json. Peak memory is XLA's compiled estimate
(arguments + outputs + temporaries of the jitted step), which is what grows with N.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx
from titans_memory import MLPMemory, MLPMemoryConfig, MomentumScanRule, NeuralMemory, NeuralMemoryConfig, SequentialRule

RULES = {"sequential": SequentialRule, "momentum_scan": MomentumScanRule}


def build(rule: str, d_model: int, heads: int, chunk: int) -> NeuralMemory:
    return NeuralMemory(
        NeuralMemoryConfig(num_heads=heads),
        d_model=d_model,
        rngs=nnx.Rngs(0),
        memory_model=MLPMemory(MLPMemoryConfig(depth=2, expansion=4.0)),
        update_rule=RULES[rule](chunk_size=chunk),
    )


def measure(fn, args, repeats: int) -> tuple[float, float]:
    """(best seconds per call, compiled peak bytes)."""
    compiled = fn.lower(*args).compile()
    mem = compiled.memory_analysis()
    peak = sum(getattr(mem, f, 0) for f in ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes"))
    jax.block_until_ready(compiled(*args))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        best = min(best, time.perf_counter() - t0)
    return best, peak


def bench(rule: str, N: int, B: int, D: int, heads: int, chunk: int, repeats: int) -> dict:
    model = build(rule, D, heads, chunk)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    x = jax.random.normal(jax.random.key(1), (B, N, D))

    def forward(params, x):
        return nnx.merge(graphdef, params, rest)(x)[0]

    def loss(params, x):
        return jnp.mean(forward(params, x) ** 2)

    fwd_s, fwd_mem = measure(jax.jit(forward), (params, x), repeats)
    bwd_s, bwd_mem = measure(jax.jit(jax.value_and_grad(loss)), (params, x), repeats)
    return {
        "rule": rule, "N": N, "B": B,
        "fwd_tok_s": B * N / fwd_s, "fwd_bwd_tok_s": B * N / bwd_s,
        "fwd_peak_mib": fwd_mem / 2**20, "fwd_bwd_peak_mib": bwd_mem / 2**20,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384])
    p.add_argument("--rules", nargs="+", default=list(RULES), choices=list(RULES))
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--chunk", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "memory_throughput.json")
    a = p.parse_args()
    rows = []
    print(f"{'rule':<14}{'N':>7}{'fwd tok/s':>12}{'fwd+bwd tok/s':>15}{'fwd MiB':>10}{'fwd+bwd MiB':>13}")
    for rule in a.rules:
        for N in a.lengths:
            r = bench(rule, N, a.batch, a.d_model, a.heads, a.chunk, a.repeats)
            rows.append(r)
            print(f"{rule:<14}{N:>7}{r['fwd_tok_s']:>12.0f}{r['fwd_bwd_tok_s']:>15.0f}"
                  f"{r['fwd_peak_mib']:>10.1f}{r['fwd_bwd_peak_mib']:>13.1f}", flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"device": str(jax.devices()[0]), "cpu_count": jax.local_device_count(), "machine": platform.machine(),
            "jax": jax.__version__, "setting": vars(a) | {"out": str(a.out)}}
    a.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
