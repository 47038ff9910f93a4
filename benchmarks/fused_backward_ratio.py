"""The ``fused`` rule's forward+backward (forward kernel + backward kernel) against ``momentum_scan``'s, side by side.

    uv run python benchmarks/fused_backward_ratio.py                      # N = 1024, depth 1 and 2
    uv run python benchmarks/fused_backward_ratio.py --lengths 256 --depths 2 --repeats 2

The NeuralMemory setting of benchmarks/memory_throughput.py (batch 2, width 256, 4 heads of 64, chunk 16, MLP
expansion 4, ``read: chunk``). For each depth and N the four jitted functions (forward, and forward+backward, of each
rule) are compiled first, then their timed calls alternate (``memory_throughput.measure``), so both rules see the
same machine load; each figure is the best call. On CPU ``fused`` runs both kernels in Pallas interpret mode (the
kernels as plain XLA ops with a loop over chunks), so the ratio measures the interpreter, not a compiled kernel.
Also reports the compiled peak memory (XLA's estimate) of each forward+backward: the fused backward keeps every
chunk's start state. Writes benchmarks/out/fused_backward_ratio.json and a copy to --results.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

sys.path.insert(0, str(Path(__file__).parent))
from memory_throughput import build, measure  # noqa: E402

HERE = Path(__file__).parent


def jobs(rule: str, N: int, a, depth: int) -> list:
    """(jitted forward, args) and (jitted forward+backward, args) of one rule."""
    x = jax.random.normal(jax.random.key(1), (a.batch, N, a.d_model))
    graphdef, params, rest = nnx.split(build(rule, a.d_model, a.heads, a.chunk, "chunk", depth), nnx.Param, ...)
    forward = lambda params, x: nnx.merge(graphdef, params, rest)(x)[0]  # noqa: E731
    loss = lambda params, x: jnp.mean(forward(params, x) ** 2)  # noqa: E731
    return [(jax.jit(forward), (params, x)), (jax.jit(jax.value_and_grad(loss)), (params, x))]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[1024])
    p.add_argument("--depths", type=int, nargs="+", default=[1, 2], choices=[1, 2])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--chunk", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3, help="timed rounds; the best call of each function is kept")
    p.add_argument("--results", default=str(HERE / "results" / "fused_backward_ratio.json"), help='"" to skip')
    a = p.parse_args(argv)
    rows = []
    print(f"backend {jax.default_backend()}")
    print(f"{'depth':>5}{'N':>7}{'rule':>15}{'fwd tok/s':>12}{'fwd+bwd tok/s':>15}{'fwd+bwd MiB':>13}")
    for depth in a.depths:
        for N in a.lengths:
            rules = ("momentum_scan", "fused")
            timed = measure(jobs(rules[0], N, a, depth) + jobs(rules[1], N, a, depth), a.repeats)
            fwd_ms, bwd_ms, fwd_fu, bwd_fu = timed
            tokens = a.batch * N
            for rule, fwd, bwd in ((rules[0], fwd_ms, bwd_ms), (rules[1], fwd_fu, bwd_fu)):
                row = {
                    "depth": depth,
                    "N": N,
                    "rule": rule,
                    "fwd_tok_s": tokens / fwd["s"],
                    "fwd_bwd_tok_s": tokens / bwd["s"],
                    "fwd_bwd_peak_mib": bwd["peak"] / 2**20,
                }
                rows.append(row)
                print(
                    f"{depth:>5}{N:>7}{rule:>15}{row['fwd_tok_s']:>12.0f}{row['fwd_bwd_tok_s']:>15.0f}"
                    f"{row['fwd_bwd_peak_mib']:>13.1f}",
                    flush=True,
                )
            ms, fu = rows[-2], rows[-1]
            fu["fwd_ratio"] = fu["fwd_tok_s"] / ms["fwd_tok_s"]
            fu["fwd_bwd_ratio"] = fu["fwd_bwd_tok_s"] / ms["fwd_bwd_tok_s"]
            print(f"  fused / momentum_scan: forward {fu['fwd_ratio']:.2f}x, fwd+bwd {fu['fwd_bwd_ratio']:.2f}x")
    result = {
        "meta": {
            "backend": jax.default_backend(),
            "device": str(jax.devices()[0]),
            "jax": jax.__version__,
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "setting": {k: v for k, v in vars(a).items() if k != "results"},
            "note": "fused on CPU: both kernels in Pallas interpret mode; best call of each, timed alternately",
        },
        "rows": rows,
    }
    out = HERE / "out" / "fused_backward_ratio.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2)
    out.write_text(text)
    if a.results:
        Path(a.results).write_text(text)
    print(f"wrote {out}" + (f" and {a.results}" if a.results else ""))
    return result


if __name__ == "__main__":
    main()
