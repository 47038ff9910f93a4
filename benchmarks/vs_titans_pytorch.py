"""Side by side, in one run: titans-pytorch's NeuralMemory against ours, forward+backward tokens/s, and their ratio.

    uv run python benchmarks/vs_titans_pytorch.py                  # builds benchmarks/out/peer-venv once (downloads)
    uv run python benchmarks/vs_titans_pytorch.py --lengths 1024 16384 --repeats 5

Outside CI: the first run builds a throwaway environment (``uv venv`` + CPU torch + a pinned titans-pytorch) under
benchmarks/out/peer-venv. Absolute numbers drift by tens of percent on a shared machine; only a ratio measured in the
same run counts, so the peer and each of our rules are timed alternately, best of --repeats calls each.

Configuration (the issue's): batch 2, width 256, 4 heads × 64, depth-2 MLP memory with expansion 4, chunk 16.
The peer runs at paper semantics: ``batch_size`` = chunk, so each chunk's gradients are taken at the previous chunk's
end weights (Eq 16), as ours are. The peer's keyword names follow titans-pytorch 0.5.x (``chunk_size``,
``batch_size``, ``heads``, ``dim_head``, ``model=MemoryMLP(dim, depth, expansion_factor)``); if a newer pin renames
them the peer script fails loudly rather than timing something else.

Status: written, not yet run in this project (no run of it is reported anywhere until it has been).
"""

from __future__ import annotations

import argparse
import json
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


def peer_python() -> Path:
    """The throwaway environment's interpreter (built on first use)."""
    venv = HERE / "out" / "peer-venv"
    py = venv / "bin" / "python"
    if not py.exists():
        subprocess.run(["uv", "venv", str(venv), "--python", sys.executable], check=True)
        base = ["uv", "pip", "install", "--python", str(py)]
        subprocess.run(base + ["torch", "--index-url", TORCH_INDEX], check=True)
        subprocess.run(base + [PEER_PIN], check=True)
    return py


def time_peer(py: Path, B: int, N: int, a) -> float:
    out = subprocess.run(
        [str(py), "-c", PEER_SCRIPT, str(B), str(N), str(a.d_model), str(a.heads), str(a.chunk), "1"],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["fwd_bwd_tok_s"]


def ours(rule: str, B: int, N: int, a):
    """A compiled forward+backward step of our NeuralMemory (depth-2 memory) and its arguments."""
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from memory_throughput import build

    graphdef, params, rest = nnx.split(build(rule, a.d_model, a.heads, a.chunk, "chunk", 2), nnx.Param, ...)
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
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    py = peer_python()
    rows = []
    for N in a.lengths:
        steps = {rule: ours(rule, a.batch, N, a) for rule in a.rules}
        best = {name: 0.0 for name in ["titans-pytorch", *a.rules]}
        for _ in range(a.repeats):  # alternate, so both sides see the same machine load
            best["titans-pytorch"] = max(best["titans-pytorch"], time_peer(py, a.batch, N, a))
            for rule, step in steps.items():
                t0 = time.perf_counter()
                step()
                best[rule] = max(best[rule], a.batch * N / (time.perf_counter() - t0))
        for rule in a.rules:
            ratio = best[rule] / best["titans-pytorch"]
            rows.append({"N": N, "rule": rule, "ours_tok_s": best[rule], "peer_tok_s": best["titans-pytorch"]})
            rows[-1]["ratio"] = ratio
            print(f"N={N}: {rule} {best[rule]:.0f} tok/s, titans-pytorch {best['titans-pytorch']:.0f}: {ratio:.2f}×")
    out = HERE / "out" / "vs_titans_pytorch.json"
    out.write_text(json.dumps({"peer": PEER_PIN, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
