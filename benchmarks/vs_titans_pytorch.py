"""Side by side, in one run: titans-pytorch's NeuralMemory against ours, forward+backward tokens/s, and their ratio.

    uv run python benchmarks/vs_titans_pytorch.py                  # builds benchmarks/out/peer-venv once (downloads)
    uv run python benchmarks/vs_titans_pytorch.py --lengths 1024 16384 --repeats 5

Outside CI: the first run builds a throwaway environment (``uv venv`` + CPU torch + a pinned titans-pytorch) under
benchmarks/out/peer-venv. Absolute numbers drift by tens of percent on a shared machine; only a ratio measured in the
same run counts, so the peer and each of our rules are timed alternately, best of --repeats calls each.

Configuration (memory_throughput.py's): batch 2, width 256, 4 heads × 64, depth-2 MLP memory with expansion 4, chunk 16.
The peer runs at paper semantics: ``batch_size`` = chunk, so each chunk's gradients are taken at the previous chunk's
end weights (Eq 16), as ours are. The peer's keyword names follow titans-pytorch 0.5.x (``chunk_size``,
``batch_size``, ``heads``, ``dim_head``, ``model=MemoryMLP(dim, depth, expansion_factor)``); if a newer pin renames
them the peer script fails loudly rather than timing something else.

Run here on 2026-12-04 (2 cores, torch 2.13.0+cpu from a local wheel: ``--torch-source PATH.whl``), results in
benchmarks/results/vs_titans_pytorch.json: ``--lengths 1024 4096 --repeats 3 --rules momentum_scan fused`` (both
reads, the default). N = 16K
was not measurable for the peer on this machine: one forward+backward call grew past 20 GiB of the 23 GiB of memory and
had not finished after 9 CPU-minutes, so it was stopped (ours: 1.3 GiB compiled peak for forward+backward at N = 16K,
benchmarks/results/memory_throughput.json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).parent
PEER_PIN = "titans-pytorch==0.5.5"
TORCH_INDEX = "https://download.pytorch.org/whl/cpu"

PEER_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import torch
    from titans_pytorch import MemoryMLP, NeuralMemory
    B, N, D, H, b, repeats = (int(x) for x in sys.argv[1:7])
    torch.manual_seed(0)
    mem = NeuralMemory(dim=D, chunk_size=b, batch_size=b, heads=H, dim_head=D // H,
                       model=MemoryMLP(dim=D // H, depth=2, expansion_factor=4.0))
    x = torch.randn(B, N, D)
    def step():
        y, _ = mem(x)
        (y ** 2).mean().backward()
    step()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter(); step(); best = min(best, time.perf_counter() - t0)
    print(json.dumps({"fwd_bwd_tok_s": B * N / best, "torch": torch.__version__}))
    """
)


def peer_python(torch_source: str | None) -> Path:
    """The throwaway environment's interpreter (built on first use). ``torch_source``: a local torch wheel (or
    any requirement uv accepts) instead of ``torch`` from the PyTorch CPU index."""
    venv = HERE / "out" / "peer-venv"
    py = venv / "bin" / "python"
    if not py.exists():
        subprocess.run(["uv", "venv", str(venv), "--python", sys.executable], check=True)
        base = ["uv", "pip", "install", "--python", str(py)]
        torch = [torch_source] if torch_source else ["torch", "--index-url", TORCH_INDEX]
        subprocess.run(base + torch, check=True)
        subprocess.run(base + [PEER_PIN], check=True)  # torch is already satisfied: the CPU build stays
    return py


def time_peer(py: Path, B: int, N: int, a) -> tuple[float, str]:
    """The peer's forward+backward tokens/s (one warm-up call, then one timed call) and its torch version."""
    out = subprocess.run(
        [str(py), "-c", PEER_SCRIPT, str(B), str(N), str(a.d_model), str(a.heads), str(a.chunk), "1"],
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["fwd_bwd_tok_s"], result["torch"]


def ours(rule: str, read: str, B: int, N: int, a):
    """A compiled forward+backward step of our NeuralMemory (depth-2 memory, the given Eq 15 read) and its arguments.

    ``read="token"`` (the default of every rule but ``fused``) reads each token with the memory as of that token
    (Eq 15: M_t applied to q_t); ``read="chunk"`` reads the whole chunk with the chunk-start memory, as titans-pytorch
    does (its retrieval uses the previous chunk's weights)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from memory_throughput import build

    graphdef, params, rest = nnx.split(build(rule, a.d_model, a.heads, a.chunk, read, 2), nnx.Param, ...)
    x = jax.random.normal(jax.random.key(1), (B, N, a.d_model))
    loss = lambda p, x: jnp.mean(nnx.merge(graphdef, p, rest)(x)[0] ** 2)  # noqa: E731
    step = jax.jit(jax.value_and_grad(loss)).lower(params, x).compile()
    jax.block_until_ready(step(params, x))
    return lambda: jax.block_until_ready(step(params, x))


def main() -> None:
    sys.path.insert(0, str(HERE))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[1024])
    p.add_argument("--rules", nargs="+", default=["momentum_scan"])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--chunk", type=int, default=16)
    p.add_argument("--reads", nargs="+", default=["token", "chunk"], choices=["token", "chunk"])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument(
        "--results", default=str(HERE / "results" / "vs_titans_pytorch.json"), help='committed copy ("": skip)'
    )
    p.add_argument("--torch-source", help="a local CPU torch wheel for the peer environment (default: CPU index)")
    a = p.parse_args()
    py = peer_python(a.torch_source)
    rows, peer_torch = [], ""
    for N in a.lengths:
        steps = {}
        for rule in a.rules:
            for read in a.reads:
                try:
                    steps[f"{rule}/{read}"] = ours(rule, read, a.batch, N, a)
                except (ValueError, NotImplementedError) as err:  # e.g. a rule without this read
                    print(f"N={N}: {rule} read={read} skipped: {err}")
        best = {name: 0.0 for name in ["titans-pytorch", *steps]}
        for _ in range(a.repeats):  # alternate, so both sides see the same machine load
            peer_tok_s, peer_torch = time_peer(py, a.batch, N, a)
            best["titans-pytorch"] = max(best["titans-pytorch"], peer_tok_s)
            for rule, step in steps.items():
                t0 = time.perf_counter()
                step()
                best[rule] = max(best[rule], a.batch * N / (time.perf_counter() - t0))
        for name in steps:
            rule, read = name.split("/")
            ratio = best[name] / best["titans-pytorch"]
            rows.append({"N": N, "rule": rule, "read": read, "ours_tok_s": best[name]})
            rows[-1] |= {"peer_tok_s": best["titans-pytorch"], "ratio": ratio}
            print(f"N={N}: {name} {best[name]:.0f} tok/s, titans-pytorch {best['titans-pytorch']:.0f}: {ratio:.2f}×")
    import jax

    meta = {
        "peer": PEER_PIN,
        "torch": peer_torch,
        "jax": jax.__version__,
        "cpu_count": os.cpu_count(),
        "load_average_after": list(os.getloadavg()),
        "timing": f"best of {a.repeats} alternating calls each, forward+backward, wall clock",
        "setting": {
            k: getattr(a, k) for k in ("lengths", "rules", "reads", "batch", "d_model", "heads", "chunk", "repeats")
        },
    }
    text = json.dumps({"meta": meta, "rows": rows}, indent=2)
    for out in [HERE / "out" / "vs_titans_pytorch.json"] + ([Path(a.results)] if a.results else []):
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
