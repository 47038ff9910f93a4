"""Neural-memory throughput: tokens/s forward and forward+backward for each update rule, and compiled peak memory.

    uv run python benchmarks/memory_throughput.py                     # the README's table (N = 1K, 4K, 16K)
    uv run python benchmarks/memory_throughput.py --lengths 1024 --rules momentum_scan
    uv run python benchmarks/memory_throughput.py --lengths 1024 --rules momentum_scan --reads chunk token
    uv run python benchmarks/memory_throughput.py --lengths 1024 --rules momentum_scan fused
    uv run python benchmarks/memory_throughput.py --lengths 1024 --depth 1 --rules momentum_scan fused

Setting: batch 2, width 256, 4 heads of 64, depth-2 MLP memory with expansion 4, chunk 16 (paper revision defaults).
Each number is the best of --repeats timed calls of one jitted function (after a warm-up call): the machine may be
shared, so the best call is the least disturbed one. "tok/cpu-s" divides by the process CPU time of that call instead
(both cores' time, so it does not depend on how busy the other core is): a check of the scaling in N when the machine
is contended. Peak memory is XLA's compiled estimate (arguments + outputs + temporaries of the jitted step).

The ``fused`` rule (one Pallas kernel) supports the matrix memory (``--depth 1``) and the two-layer MLP memory (depth 2,
the default setting); at depth ≥ 3 its rows are skipped with the build error as the note. On CPU it runs in Pallas
interpret mode (the kernel as plain XLA ops, with a loop over chunks that XLA does not fuse), so its CPU figures
measure the interpreter, not a compiled kernel.

The ``sequential`` rule is the token-by-token reference (the oracle of the tests, not a training path): its
forward+backward keeps a full parameter tree per token (≈ 4.5 GiB at N = 1K, so ≈ 18 and 73 GiB at 4K and 16K), so by
default it is timed forward+backward only up to --max-seq-len-sequential tokens; its forward pass runs at every N.

FLOPs: "model FLOPs" per token are written down from the shapes (``model_flops_per_token``: the projections, and per
memory layer the read, the prediction, the backward rows and the two weighted gradient sums of a chunk; forward+backward
= 3× forward, rematerialisation not counted). The machine's matmul peak is measured in the same run (the best of
4 × --repeats timed float32 1024³ matmuls), and every row reports its model FLOP/s as a fraction of it. Also measured:
what the memory's own per-chunk product reaches alone (``chunk_matmul_peak_flops``: B·H batched chunk × D_h by
D_h × hidden products in a scan over chunks), i.e. the ceiling that these small shapes, not the rules, put on that
fraction (on 2 CPU cores: 0.34–0.39 of the 1024³ peak in three back-to-back measurements).

Prints a table and a check of the targets, all measured in this run (no fixed tokens/s from another day): the best
rule's forward+backward model FLOP/s ≥ --target-peak-fraction (0.5) of the measured peak at the shortest N, and
its tokens/s at the longest N ≥ --target-flatness (0.9) × the shortest; the ratio to the peer implementation is
benchmarks/vs_titans_pytorch.py's job (it times both in one run). Writes JSON to
benchmarks/out/memory_throughput.json and a copy to --results (default benchmarks/results/memory_throughput.json,
the committed one; pass "" to skip).

``--reads chunk token`` times the rules' ``read`` option side by side in the same run (read: chunk, every
token of a chunk reads the chunk-start weights, against read: token, every token reads the weights after its
own write): for each rule and N the two models are compiled first, then their timed calls alternate, so both
see the same machine load; the JSON gets ``read_ratios`` (token / chunk tokens/s) and goes by default to
benchmarks/out/read_token_throughput.json and benchmarks/results/read_token_throughput.json (the committed
memory_throughput.json is only the default of a read: chunk run).
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
from titans_memory import (
    FusedRule,
    FusedUnsupportedError,
    MLPMemory,
    MLPMemoryConfig,
    MomentumScanRule,
    NeuralMemory,
    NeuralMemoryConfig,
    SequentialRule,
)

RULES = {"sequential": SequentialRule, "momentum_scan": MomentumScanRule, "fused": FusedRule}
HERE = Path(__file__).parent


def build(rule: str, d_model: int, heads: int, chunk: int, read: str = "chunk", depth: int = 2) -> NeuralMemory:
    return NeuralMemory(
        NeuralMemoryConfig(num_heads=heads),
        d_model=d_model,
        rngs=nnx.Rngs(0),
        memory_model=MLPMemory(MLPMemoryConfig(depth=depth, expansion=4.0)),
        update_rule=RULES[rule](chunk_size=chunk, read=read),
    )


def model_flops_per_token(d_model: int, heads: int, depth: int, expansion: float = 4.0) -> float:
    """Forward model FLOPs per token of NeuralMemory (2 per multiply-add), from the shapes.

    Projections: q/k/v (d × 3HD), output gate (d × HD), output (HD × d). Per head and memory layer of shape
    (i, o): the read M(q) and the prediction M(k) (2io each), the backward rows δ for every layer but the first
    (2io), and the chunk's two weighted gradient sums Σ a_t h_tᵀ δ_t and Σ m_t h_tᵀ δ_t (2io each). Gates, norms
    and activations are O(d) and left out."""
    Dh = d_model // heads
    HD = heads * Dh
    hid = max(1, round(expansion * Dh))
    widths = [Dh] + [hid] * (depth - 1) + [Dh]
    per_head = 0.0
    for layer, (i, o) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        per_head += 2 * i * o * (4 + (1 if layer else 0))
    return 2.0 * d_model * 5 * HD + heads * per_head


def _best_seconds(f, args: tuple, repeats: int) -> float:
    """The fastest of 4 × ``repeats`` (at least 12) timed calls of ``f(*args)``, after a warm-up call."""
    jax.block_until_ready(f(*args))
    best = float("inf")
    for _ in range(max(repeats, 3) * 4):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_peak_flops(repeats: int, n: int = 1024) -> float:
    """The machine's float32 matmul FLOP/s, measured now: the best of 4 × ``repeats`` timed n³ matmuls (one takes
    milliseconds, and a shared machine's best call varies by 2× between short runs of 5)."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    return 2.0 * n**3 / _best_seconds(f, (a,), repeats)


def chunk_matmul_peak_flops(repeats: int, a, n_chunks: int = 64) -> float:
    """FLOP/s of the memory's largest per-chunk product alone, measured now: for every (batch, head) a chunk's
    rows times the first layer, (chunk × D_h) @ (D_h × hidden), batched over B·H and run in a ``lax.scan`` over
    ``n_chunks`` chunks as the rules run it. What these shapes allow on this machine, against the 1024³ peak."""
    Dh = a.d_model // a.heads
    hid = max(1, round(4.0 * Dh)) if a.depth > 1 else Dh
    G = a.batch * a.heads
    x = jax.random.normal(jax.random.key(0), (n_chunks, G, a.chunk, Dh), jnp.float32)
    w = jax.random.normal(jax.random.key(1), (G, Dh, hid), jnp.float32)
    f = jax.jit(lambda x, w: jax.lax.scan(lambda c, x_c: (c, jnp.einsum("gbd,gdh->gbh", x_c, w)), 0.0, x)[1])
    return 2.0 * n_chunks * G * a.chunk * Dh * hid / _best_seconds(f, (x, w), repeats)


def measure(jobs: list, repeats: int) -> list[dict]:
    """For each (jitted fn, args) job: best wall seconds per call (and that call's process CPU seconds),
    compiled peak bytes. Every job is compiled and warmed up first; then the timed calls go round-robin over
    the jobs, so jobs compared side by side see the same machine load."""
    compiled, out = [], []
    for fn, args in jobs:
        c = fn.lower(*args).compile()
        mem = c.memory_analysis()
        fields = ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes")
        peak = sum(getattr(mem, f, 0) for f in fields)
        jax.block_until_ready(c(*args))
        compiled.append((c, args))
        out.append({"s": float("inf"), "cpu_s": float("nan"), "peak": peak})
    for _ in range(repeats):
        for (c, args), res in zip(compiled, out, strict=True):
            t0, c0 = time.perf_counter(), time.process_time()
            jax.block_until_ready(c(*args))
            wall = time.perf_counter() - t0
            if wall < res["s"]:
                res["s"], res["cpu_s"] = wall, time.process_time() - c0
    return out


def bench(rule: str, N: int, a, with_backward: bool, reads: list[str]) -> list[dict]:
    """One row per read option, timed side by side (see ``measure``)."""
    B = a.batch
    x = jax.random.normal(jax.random.key(1), (B, N, a.d_model))
    fwd_jobs, bwd_jobs = [], []
    for read in reads:
        graphdef, params, rest = nnx.split(build(rule, a.d_model, a.heads, a.chunk, read, a.depth), nnx.Param, ...)

        def forward(params, x, graphdef=graphdef, rest=rest):
            return nnx.merge(graphdef, params, rest)(x)[0]

        def loss(params, x, forward=forward):
            return jnp.mean(forward(params, x) ** 2)

        fwd_jobs.append((jax.jit(forward), (params, x)))
        bwd_jobs.append((jax.jit(jax.value_and_grad(loss)), (params, x)))
    rows = [{"rule": rule, "read": read, "N": N, "B": B, "depth": a.depth} for read in reads]
    for row, fwd in zip(rows, measure(fwd_jobs, a.repeats), strict=True):
        row |= {"fwd_tok_s": B * N / fwd["s"], "fwd_cpu_s": fwd["cpu_s"], "fwd_peak_mib": fwd["peak"] / 2**20}
    if with_backward:
        for row, bwd in zip(rows, measure(bwd_jobs, a.repeats), strict=True):
            row |= {
                "fwd_bwd_tok_s": B * N / bwd["s"],
                "fwd_bwd_cpu_s": bwd["cpu_s"],
                "fwd_bwd_tok_per_cpu_s": B * N / bwd["cpu_s"],
                "fwd_bwd_peak_mib": bwd["peak"] / 2**20,
            }
    else:
        for row in rows:
            row |= {
                "fwd_bwd_tok_s": None,
                "fwd_bwd_cpu_s": None,
                "fwd_bwd_tok_per_cpu_s": None,
                "fwd_bwd_peak_mib": None,
                "note": f"forward+backward skipped: N > --max-seq-len-sequential ({a.max_seq_len_sequential})",
            }
    return rows


def fmt(x, spec: str, width: int) -> str:
    return f"{'—':>{width}}" if x is None else f"{x:>{width}{spec}}"


def add_flops(rows: list[dict], a, peak: float, shape_peak: float) -> None:
    """Model FLOPs per token (forward; forward+backward = 3×) and each row's model FLOP/s over the measured 1024³
    peak and over what the memory's per-chunk product reaches alone (``chunk_matmul_peak_flops``)."""
    fwd = model_flops_per_token(a.d_model, a.heads, a.depth)
    for r in rows:
        r["model_flops_per_token_fwd"] = fwd
        r["model_flops_per_token_fwd_bwd"] = 3 * fwd
        for name, ref in (("peak", peak), ("chunk_peak", shape_peak)):
            r[f"fwd_{name}_fraction"] = r["fwd_tok_s"] * fwd / ref
            r[f"fwd_bwd_{name}_fraction"] = r["fwd_bwd_tok_s"] * 3 * fwd / ref if r["fwd_bwd_tok_s"] else None


def check_targets(rows: list[dict], peak_fraction: float, flatness: float) -> dict:
    """The best rule (highest forward+backward tok/s at the shortest N, read: chunk): its fraction of the matmul
    peak measured in this run (≥ peak_fraction) and longest-N / shortest-N tok/s (≥ flatness)."""
    timed = [r for r in rows if r["read"] == "chunk" and r.get("fwd_bwd_tok_s")]
    if not timed:
        return {}
    N_lo = min(r["N"] for r in timed)
    best = max((r for r in timed if r["N"] == N_lo), key=lambda r: r["fwd_bwd_tok_s"])["rule"]
    ms = sorted((r for r in timed if r["rule"] == best), key=lambda r: r["N"])
    lo, hi = ms[0], ms[-1]
    out = {
        "best_rule": best,
        "N_shortest": lo["N"],
        "N_longest": hi["N"],
        "fwd_bwd_tok_s_at_shortest": lo["fwd_bwd_tok_s"],
        "fwd_bwd_peak_fraction_at_shortest": lo["fwd_bwd_peak_fraction"],
        "target_peak_fraction": peak_fraction,
        "meets_peak_fraction": lo["fwd_bwd_peak_fraction"] >= peak_fraction,
        "rule_ratios_at_shortest": {
            r["rule"]: r["fwd_bwd_tok_s"] / lo["fwd_bwd_tok_s"] for r in timed if r["N"] == N_lo
        },
    }
    if hi is not lo:
        ratio = hi["fwd_bwd_tok_s"] / lo["fwd_bwd_tok_s"]
        out |= {
            "longest_over_shortest": ratio,
            "target_flatness": flatness,
            "meets_flatness": ratio >= flatness,
            "longest_over_shortest_per_cpu_s": hi["fwd_bwd_tok_per_cpu_s"] / lo["fwd_bwd_tok_per_cpu_s"],
            "peak_mib_per_1k_tokens": {r["N"]: r["fwd_bwd_peak_mib"] * 1024 / r["N"] for r in ms},
        }
    return out


def read_ratios(rows: list[dict]) -> list[dict]:
    """read: token over read: chunk tokens/s (forward, forward+backward) per rule and N where both ran."""
    by = {(r["rule"], r["N"], r["read"]): r for r in rows}
    out = []
    for (rule, N, read), tok in by.items():
        chk = by.get((rule, N, "chunk"))
        if read == "token" and chk:
            both = tok["fwd_bwd_tok_s"] and chk["fwd_bwd_tok_s"]
            bwd = tok["fwd_bwd_tok_s"] / chk["fwd_bwd_tok_s"] if both else None
            out.append({"rule": rule, "N": N, "fwd": tok["fwd_tok_s"] / chk["fwd_tok_s"], "fwd_bwd": bwd})
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
    p.add_argument(
        "--max-seq-len-sequential",
        type=int,
        default=1024,
        help="longest N for the sequential rule's forward+backward (its forward runs at every N)",
    )
    p.add_argument("--depth", type=int, default=2, help="memory depth L_M (fused: 1 or 2)")
    p.add_argument("--target-peak-fraction", type=float, default=0.5, help="best rule's model FLOP/s / matmul peak")
    p.add_argument("--target-flatness", type=float, default=0.9, help="tok/s at the longest N / at the shortest")
    p.add_argument(
        "--reads",
        nargs="+",
        default=["chunk"],
        choices=["chunk", "token"],
        help="the rules' read option(s); several are timed side by side (see the docstring)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="default benchmarks/out/memory_throughput.json (read_token_throughput.json if token)",
    )
    p.add_argument(
        "--results",
        type=str,
        default=None,
        help='a second copy of the JSON; "" to skip; default benchmarks/results/'
        "memory_throughput.json (the committed one), or read_token_throughput.json when "
        "--reads includes token",
    )
    a = p.parse_args()
    name = "read_token_throughput.json" if "token" in a.reads else "memory_throughput.json"
    a.out = a.out or HERE / "out" / name
    a.results = str(HERE / "results" / name) if a.results is None else a.results
    rows, skipped = [], []
    peak = matmul_peak_flops(a.repeats)
    print(f"float32 1024³ matmul peak, measured now: {peak / 1e9:.1f} GFLOP/s")
    shape_peak = chunk_matmul_peak_flops(a.repeats, a)
    print(
        f"the memory's per-chunk product alone ({a.batch * a.heads} × {a.chunk}×{a.d_model // a.heads} @ "
        f"{a.d_model // a.heads}×hidden, scanned over chunks): {shape_peak / 1e9:.1f} GFLOP/s = "
        f"{shape_peak / peak:.2f} of the 1024³ peak"
    )
    head = (
        f"{'rule':<14}{'read':>6}{'N':>7}{'fwd tok/s':>12}{'fwd+bwd tok/s':>15}{'fwd+bwd tok/cpu-s':>19}"
        f"{'fwd MiB':>10}{'fwd+bwd MiB':>13}"
    )
    print(head)
    print("-" * len(head))
    for rule in a.rules:
        for N in a.lengths:
            try:
                got = bench(rule, N, a, rule != "sequential" or N <= a.max_seq_len_sequential, a.reads)
            except FusedUnsupportedError as exc:
                print(f"{rule:<14} skipped: {exc}")
                skipped.append({"rule": rule, "N": N, "note": str(exc)})
                continue
            for r in got:
                rows.append(r)
                print(
                    f"{rule:<14}{r['read']:>6}{N:>7}{r['fwd_tok_s']:>12.0f}"
                    f"{fmt(r['fwd_bwd_tok_s'], '.0f', 15)}"
                    f"{fmt(r['fwd_bwd_tok_per_cpu_s'], '.0f', 19)}"
                    f"{r['fwd_peak_mib']:>10.1f}{fmt(r['fwd_bwd_peak_mib'], '.1f', 13)}",
                    flush=True,
                )
    if any(r["fwd_bwd_tok_s"] is None for r in rows):
        print(
            f"— : sequential forward+backward not run above N = {a.max_seq_len_sequential} "
            "(a parameter tree per token; see --max-seq-len-sequential)"
        )
    add_flops(rows, a, peak, shape_peak)
    flops = model_flops_per_token(a.d_model, a.heads, a.depth)
    print(f"model FLOPs per token: {flops / 1e6:.2f} M forward, ×3 forward+backward")
    for r in rows:
        frac = r["fwd_bwd_peak_fraction"]
        print(
            f"{r['rule']:<14}{r['read']:>6}{r['N']:>7}  fraction of the matmul peak: forward "
            f"{r['fwd_peak_fraction']:.3f}, forward+backward {fmt(frac, '.3f', 0)}; of the per-chunk product's: "
            f"{r['fwd_chunk_peak_fraction']:.3f}, {fmt(r['fwd_bwd_chunk_peak_fraction'], '.3f', 0)}"
        )
    targets = check_targets(rows, a.target_peak_fraction, a.target_flatness)
    if targets:
        print(
            f"best rule {targets['best_rule']}: fwd+bwd at N={targets['N_shortest']} "
            f"{targets['fwd_bwd_tok_s_at_shortest']:.0f} tok/s = {targets['fwd_bwd_peak_fraction_at_shortest']:.3f} "
            f"of the peak (target ≥ {a.target_peak_fraction}: {'met' if targets['meets_peak_fraction'] else 'MISSED'})"
        )
        for rule, ratio in targets["rule_ratios_at_shortest"].items():
            print(f"  {rule} / {targets['best_rule']} fwd+bwd tok/s at N={targets['N_shortest']}: {ratio:.3f}")
        if "longest_over_shortest" in targets:
            print(
                f"{targets['best_rule']} fwd+bwd tok/s at N={targets['N_longest']} / N={targets['N_shortest']}: "
                f"{targets['longest_over_shortest']:.2f} (target ≥ {a.target_flatness}: "
                f"{'met' if targets['meets_flatness'] else 'MISSED'}); per CPU-second: "
                f"{targets['longest_over_shortest_per_cpu_s']:.2f}"
            )
    ratios = read_ratios(rows)
    for r in ratios:
        print(
            f"{r['rule']} N={r['N']}: read token / read chunk tokens/s: forward {r['fwd']:.3f}, "
            f"forward+backward {fmt(r['fwd_bwd'], '.3f', 0)}"
        )
    meta = {
        "device": str(jax.devices()[0]),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "jax": jax.__version__,
        "load_average": os.getloadavg(),
        "timing": "best of --repeats calls, wall clock",
        "matmul_peak_flops": peak,
        "chunk_matmul_peak_flops": shape_peak,
        "chunk_matmul_peak_fraction": shape_peak / peak,
        "fused_mode": "interpret" if jax.default_backend() == "cpu" else "compiled",
        "setting": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
    }
    doc = json.dumps(
        {"meta": meta, "rows": rows, "skipped": skipped, "targets": targets, "read_ratios": ratios}, indent=2
    )
    for path in filter(None, [a.out, Path(a.results) if a.results else None]):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(doc)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
