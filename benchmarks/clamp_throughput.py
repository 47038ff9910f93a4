"""The surprise clamp's cost: forward+backward tokens/s of one memory layer, clamp off and on, with the per-token
norms from ``MLPMemory.grad_norms`` (closed form) or from the generic path (one gradient tree per token).

    uv run python benchmarks/clamp_throughput.py                 # writes benchmarks/results/clamp_throughput.json

Setting: the S-NIAH recipe's memory (batch 16, T = 320, d_model 64, one head of 64, chunk 16, ``max_grad_norm``
1.0, ``read: chunk``) with a depth-1 (matrix) and a depth-2 memory. The three jitted steps of one depth are
compiled first, then their timed calls alternate (--repeats rounds), so that all see the same machine load; each
figure is the best call. Compare the ratios, not the tokens/s: absolute figures drift between runs on a shared
machine.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx
from titans_memory import MLPMemory, MLPMemoryConfig, MomentumScanRule, NeuralMemory, NeuralMemoryConfig

ROOT = Path(__file__).resolve().parent.parent


class GenericMemory:
    """The MLP memory without ``grad_norms``: the rule's generic path for the clamp."""

    def __init__(self, model: MLPMemory):
        self.channel_axis_ok = model.channel_axis_ok
        self.init, self.apply = model.init, model.apply
        self.read_and_linearize, self.read_after_updates = model.read_and_linearize, model.read_after_updates


def step_fn(depth: int, clamp: str, batch: int, seq_len: int, d_model: int):
    """A jitted forward+backward of one memory layer (gradient of a scalar of its output w.r.t. its parameters)."""
    model = MLPMemory(MLPMemoryConfig(depth=depth))
    memory_model = GenericMemory(model) if clamp == "generic" else model
    rule = MomentumScanRule(chunk_size=16, read="chunk", max_grad_norm=None if clamp == "off" else 1.0)
    cfg = NeuralMemoryConfig(num_heads=1, init_forget=1e-5, init_lr=0.005, max_lr=0.5)
    layer = NeuralMemory(cfg, d_model=d_model, rngs=nnx.Rngs(0), memory_model=memory_model, update_rule=rule)
    graph, params = nnx.split(layer)
    x = jax.random.normal(jax.random.key(1), (batch, seq_len, d_model))

    @jax.jit
    def step(params, x):
        def loss(params):
            y, _ = nnx.merge(graph, params)(x, aligned=True)
            return jnp.mean(jnp.square(y))

        return jax.value_and_grad(loss)(params)

    return lambda: jax.block_until_ready(step(params, x))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=320)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "clamp_throughput.json")
    args = parser.parse_args(argv)
    tokens = args.batch * args.seq_len
    rows = []
    for depth in (1, 2):
        steps = {c: step_fn(depth, c, args.batch, args.seq_len, args.d_model) for c in ("off", "generic", "closed")}
        for run in steps.values():
            run()  # compile and warm up
        best = dict.fromkeys(steps, float("inf"))
        for _ in range(args.repeats):
            for name, run in steps.items():
                t0 = time.perf_counter()
                run()
                best[name] = min(best[name], time.perf_counter() - t0)
        row = {"depth": depth, **{f"{c} tok/s": round(tokens / best[c]) for c in steps}}
        row["closed / generic"] = round(best["generic"] / best["closed"], 2)
        row["closed / off"] = round(best["off"] / best["closed"], 2)
        rows.append(row)
        print(row, flush=True)
    doc = {
        "command": "uv run python benchmarks/clamp_throughput.py",
        "setting": {"batch": args.batch, "seq_len": args.seq_len, "d_model": args.d_model, "heads": 1, "chunk": 16},
        "devices": [str(d) for d in jax.devices()],
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
