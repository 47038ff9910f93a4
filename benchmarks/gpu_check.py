"""The GPU check of the ``fused`` rule: one command, ready for a GPU machine; no GPU figure exists until it has run.

    uv run python benchmarks/gpu_check.py              # on a GPU machine: tests compiled + the throughput table
    uv run python benchmarks/gpu_check.py --dry-run    # anywhere (CPU): tiny sizes, the fast tests, nothing committed

1. The fused equivalence tests (tests/memory/test_fused.py: outputs and state, depth 1 and 2;
   tests/memory/test_fused_backward.py: the backward kernel's gradients against momentum_scan's) in a subprocess.
   On a GPU the rule's ``interpret`` default (None) compiles the kernels (Triton lowering), so these run the
   compiled kernels, not the interpreter; the float64 cases need a backend with float64 matmuls in the kernel and
   are reported as they come out.
2. The backward kernel's float32 gradients against momentum_scan's on the benchmark's NeuralMemory (N = 256, every
   parameter's gradient; relative error, reported next to the 1e-4 whole-model tolerance of the tests).
3. The throughput table (benchmarks/memory_throughput.py's ``bench``) for sequential, momentum_scan and fused at
   N = 1K … 64K (the depth-2 MLP memory with expansion 4, as memory_throughput.py; ``--depth 1``: the matrix memory),
   next to ``jax.nn.dot_product_attention`` (causal, the same batch, heads and head width) as a yardstick, with the
   float32 matmul peak measured in the same run and each rule's fraction of it. fused's forward+backward is its
   forward kernel (which also saves each chunk's start state) plus its backward kernel (rules/fused_backward.py).
4. The targets of issue 11 for that run: fused ≥ 3× momentum_scan forward+backward at N = 16K; fused tokens/s flat
   (≥ 0.8×) from the shortest to the longest N; training memory (compiled peak) linear in N.

Writes benchmarks/results/gpu_<backend>_<date>.json (a dry run writes benchmarks/out/gpu_dry_run.json instead).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).parent))
from flax import nnx  # noqa: E402
from memory_throughput import bench, build, matmul_peak_flops, measure, model_flops_per_token  # noqa: E402

HERE = Path(__file__).parent
ROOT = HERE.parent


def run_tests(dry_run: bool) -> dict:
    """pytest on the fused tests; returns its exit code and the last lines of its output."""
    files = ["tests/memory/test_fused.py", "tests/memory/test_fused_backward.py"]
    cmd = [sys.executable, "-m", "pytest", *files, "-q", "-p", "no:cacheprovider"]
    if dry_run:
        cmd += ["-k", "refuses or each_kernel_once"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
    print("\n".join(tail))
    return {"cmd": " ".join(cmd[1:]), "returncode": proc.returncode, "seconds": time.perf_counter() - t0, "tail": tail}


def backward_check(a, N: int = 256) -> dict:
    """float32 outer gradients of the benchmark's NeuralMemory with fused (the backward kernel) against
    momentum_scan: max over parameters of max |Δg| / max |g|."""
    x = jax.random.normal(jax.random.key(2), (a.batch, N, a.d_model), jnp.float32)
    grads = {}
    for rule in ("momentum_scan", "fused"):
        graphdef, params, rest = nnx.split(build(rule, a.d_model, a.heads, a.chunk, "chunk", a.depth), nnx.Param, ...)
        loss = lambda params, x, g=graphdef, r=rest: jnp.mean(nnx.merge(g, params, r)(x)[0] ** 2)  # noqa: E731
        grads[rule] = jax.tree.leaves(jax.jit(jax.grad(loss))(params, x))
    errs = [
        float(jnp.max(jnp.abs(f - m)) / (jnp.max(jnp.abs(m)) + 1e-30))
        for m, f in zip(grads["momentum_scan"], grads["fused"], strict=True)
    ]
    out = {"N": N, "depth": a.depth, "max_rel_err": max(errs), "tolerance": 1e-4, "met": max(errs) <= 1e-4}
    print(f"backward kernel vs momentum_scan gradients (float32, N = {N}): max rel err {out['max_rel_err']:.2e}")
    return out


def attention_row(N: int, a) -> dict:
    """Causal ``jax.nn.dot_product_attention`` at B×N×H×Dh, forward and forward+backward tokens/s."""
    Dh = a.d_model // a.heads
    q, k, v = (jax.random.normal(jax.random.key(i), (a.batch, N, a.heads, Dh), jnp.float32) for i in range(3))
    attn = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True)  # noqa: E731
    loss = lambda q, k, v: jnp.mean(attn(q, k, v) ** 2)  # noqa: E731
    fwd, bwd = measure(
        [(jax.jit(attn), (q, k, v)), (jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2))), (q, k, v))], a.repeats
    )
    tokens = a.batch * N
    return {
        "rule": "dot_product_attention",
        "N": N,
        "fwd_tok_s": tokens / fwd["s"],
        "fwd_bwd_tok_s": tokens / bwd["s"],
        "fwd_bwd_peak_mib": bwd["peak"] / 2**20,
    }


def targets(rows: list[dict], lengths: list[int]) -> dict:
    by = {(r["rule"], r["N"]): r for r in rows}
    out = {}
    N16 = 16384 if 16384 in lengths else lengths[len(lengths) // 2]
    fu, ms = by.get(("fused", N16)), by.get(("momentum_scan", N16))
    if fu and ms and fu.get("fwd_bwd_tok_s") and ms.get("fwd_bwd_tok_s"):
        ratio = fu["fwd_bwd_tok_s"] / ms["fwd_bwd_tok_s"]
        out["fused_over_momentum_scan"] = {"N": N16, "ratio": ratio, "target": 3.0, "met": ratio >= 3.0}
    lo, hi = by.get(("fused", lengths[0])), by.get(("fused", lengths[-1]))
    if lo and hi and lo is not hi and lo.get("fwd_bwd_tok_s") and hi.get("fwd_bwd_tok_s"):
        flat = hi["fwd_bwd_tok_s"] / lo["fwd_bwd_tok_s"]
        out["fused_flatness"] = {"N": [lengths[0], lengths[-1]], "ratio": flat, "target": 0.8, "met": flat >= 0.8}
        per_token = [by[("fused", N)]["fwd_bwd_peak_mib"] / N for N in lengths if ("fused", N) in by]
        out["fused_peak_mib_per_token"] = per_token  # linear in N: roughly constant
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="tiny sizes, the fast tests, write to benchmarks/out")
    p.add_argument("--skip-tests", action="store_true")
    p.add_argument("--lengths", type=int, nargs="+", default=None)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--depth", type=int, choices=[1, 2], default=2, help="memory depth (both have a fused kernel)")
    a = p.parse_args(argv)
    a.chunk = 16
    if a.dry_run:
        a.lengths = a.lengths or [32, 64]
        a.batch, a.d_model, a.heads, a.repeats, a.max_seq_len_sequential = 1, 16, 2, 1, 32
    else:
        a.lengths = a.lengths or [1024, 4096, 16384, 65536]
        a.batch, a.d_model, a.heads, a.repeats, a.max_seq_len_sequential = 2, 256, 4, 5, 1024
    backend = jax.default_backend()
    print(f"backend {backend}: {jax.devices()[0]}" + ("  (dry run)" if a.dry_run else ""))
    if backend == "cpu" and not a.dry_run:
        print("no accelerator: this is a GPU check; pass --dry-run to exercise it on CPU")
    tests = None if a.skip_tests else run_tests(a.dry_run)
    grad_check = backward_check(a, N=64 if a.dry_run else 256)
    peak = matmul_peak_flops(a.repeats)
    flops = model_flops_per_token(a.d_model, a.heads, a.depth)
    print(f"float32 matmul peak, measured now: {peak / 1e9:.1f} GFLOP/s; memory model FLOPs/token {flops / 1e6:.3f} M")
    rows = []
    print(f"{'rule':<22}{'N':>7}{'fwd tok/s':>13}{'fwd+bwd tok/s':>15}{'fwd+bwd MiB':>13}{'peak frac':>11}")
    for N in a.lengths:
        for rule in ("sequential", "momentum_scan", "fused"):
            for r in bench(rule, N, a, rule != "sequential" or N <= a.max_seq_len_sequential, ["chunk"]):
                r["fwd_bwd_peak_fraction"] = r["fwd_bwd_tok_s"] * 3 * flops / peak if r["fwd_bwd_tok_s"] else None
                rows.append(r)
        rows.append(attention_row(N, a))
        for r in rows[-4:]:
            bwd = r.get("fwd_bwd_tok_s") or float("nan")
            frac = r.get("fwd_bwd_peak_fraction") or float("nan")
            mib = r.get("fwd_bwd_peak_mib") or float("nan")
            print(f"{r['rule']:<22}{N:>7}{r['fwd_tok_s']:>13.0f}{bwd:>15.0f}{mib:>13.1f}{frac:>11.3f}", flush=True)
    result = {
        "meta": {
            "backend": backend,
            "device": str(jax.devices()[0]),
            "jax": jax.__version__,
            "dry_run": a.dry_run,
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "matmul_peak_flops": peak,
            "memory_model_flops_per_token_fwd": flops,
            "setting": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
            "load_average": os.getloadavg(),
        },
        "tests": tests,
        "backward_check": grad_check,
        "rows": rows,
        "targets": targets(rows, a.lengths),
    }
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d")
    results = HERE / "results" / f"gpu_{backend}_{stamp}.json"
    out = a.out or (HERE / "out" / "gpu_dry_run.json" if a.dry_run else results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result["targets"], indent=2))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
