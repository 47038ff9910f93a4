"""Streaming a NeuralMemory with pieces of many lengths: a jitted call per piece against MemoryStream.

    uv run python benchmarks/stream_compiles.py                 # 24 pieces of random lengths 1…300
    uv run python benchmarks/stream_compiles.py --pieces 48 --max-len 600

Both sides feed the same pieces, carrying the state, and are timed in the same run (compile included, since the
compiles are what differs). ``plain``: ``nnx.jit`` of ``memory(x, state)``, one program per distinct length.
``stream``: ``MemoryStream(memory, max_piece=256)``, at most 9 programs (256, 128, …, 1). The outputs are compared
(they must agree to float32 rounding). Writes benchmarks/results/stream_compiles.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from titans_memory import MemoryStream, NeuralMemory, NeuralMemoryConfig

HERE = Path(__file__).parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pieces", type=int, default=24)
    p.add_argument("--max-len", type=int, default=300)
    p.add_argument("--max-piece", type=int, default=256)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--results", default=str(HERE / "results" / "stream_compiles.json"))
    a = p.parse_args()
    lengths = [int(n) for n in np.random.default_rng(0).integers(1, a.max_len + 1, a.pieces)]
    memory = NeuralMemory(NeuralMemoryConfig(num_heads=4), d_model=a.d_model, rngs=nnx.Rngs(0))
    xs = [jax.random.normal(jax.random.key(i), (1, n, a.d_model)) for i, n in enumerate(lengths)]

    traces = {"plain": 0}

    def call(m, x, s):
        traces["plain"] += 1
        return m(x, s)

    plain = nnx.jit(call)
    stream = MemoryStream(memory, max_piece=a.max_piece)
    rows, outs = {}, {}
    for name, step in [("plain", lambda x, s: plain(memory, x, s)), ("stream", stream)]:
        state, ys = memory.init_state(1), []
        t0 = time.perf_counter()
        for x in xs:
            y, state = step(x, state)
            ys.append(y)
        jax.block_until_ready(state)
        rows[name] = {"seconds": time.perf_counter() - t0}
        outs[name] = jnp.concatenate(ys, axis=1)
    rows["plain"]["programs"] = traces["plain"]
    rows["stream"]["programs"] = stream.traces
    err = float(jnp.max(jnp.abs(outs["plain"] - outs["stream"])) / jnp.max(jnp.abs(outs["plain"])))
    result = {
        "meta": {
            "pieces": a.pieces,
            "distinct_lengths": len(set(lengths)),
            "total_tokens": sum(lengths),
            "max_piece": a.max_piece,
            "d_model": a.d_model,
            "cpu_count": os.cpu_count(),
            "jax": jax.__version__,
            "max_rel_diff_plain_vs_stream": err,
        },
        "rows": rows,
        "speedup": rows["plain"]["seconds"] / rows["stream"]["seconds"],
    }
    for name, r in rows.items():
        print(f"{name:7s} {r['programs']:3d} programs  {r['seconds']:7.1f} s")
    print(f"speedup {result['speedup']:.1f}×, max relative difference {err:.1e}")
    if a.results:
        Path(a.results).write_text(json.dumps(result, indent=2))
        print(f"wrote {a.results}")


if __name__ == "__main__":
    main()
