"""Which of MAC's two memory reads answers S-NIAH? Exact match with each read cut off from what was stored.

MAC reads its long-term memory twice per segment (``titans_attention.mixers.MACMixer``):

- ``h``: Eq 21, h_t = M*_{t−1}(q_t), the memory as the segment began, prepended to the segment's attention
  context (Eq 22): the paper's "memory as a context";
- ``gate``: Eq 25, o_t = y_t ⊗ M*_t(u_t), the memory read back after the segment's writes, gating the attention
  output (as MAG's gate does).

Each ablation replaces one read by the same read of a memory that holds nothing from earlier segments: ``no_h``
reads h from the initial memory M_0, ``no_gate`` reads the gate's M* from M_0 plus the current segment's own
writes (the needle, far back, is in neither). Everything else (the writes, the other read, the convolution
caches) runs as trained. Exact match is teacher-forced: every answer byte is the argmax given the true bytes
before it, which is exactly when greedy decoding returns the answer.

    uv run python benchmarks/mac_paths.py \
        runs/seeded/recall_8x/mac@write_x@heads1@forget1e-5@theta0.005@1500-s{0,1,2,3} \
        --contexts 320,2560 --output benchmarks/results/probes/mac_paths.json
"""

from __future__ import annotations

import argparse
import json
from contextlib import contextmanager
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from titans_memory import NeuralMemory
from titans_train.sampling import load_run_model
from titans_train.tasks.niah import encode_text, make_niah_example

MODES = ("intact", "no_h", "no_gate")


@contextmanager
def _patched(mode: str):
    """Within the block, MAC's h read (``no_h``: ``NeuralMemory.retrieve``) or its gate read (``no_gate``: the
    output of ``NeuralMemory.__call__``) comes from a memory with nothing of earlier segments; the state carried on
    (writes, convolution caches) is the real one. The mixer itself (``MACMixer._segment``) runs unchanged."""
    retrieve, call = NeuralMemory.retrieve, NeuralMemory.__call__

    def no_h(self, x, state):
        h, read = retrieve(self, x, state._replace(rule=self.init_state(x.shape[0]).rule))
        return h, state._replace(conv=read.conv)

    def no_gate(self, u, state, **kw):
        m, _ = call(self, u, state._replace(rule=self.init_state(u.shape[0]).rule), **kw)
        return m, call(self, u, state, **kw)[1]

    if mode == "no_h":
        NeuralMemory.retrieve = no_h
    elif mode == "no_gate":
        NeuralMemory.__call__ = no_gate
    try:
        yield
    finally:
        NeuralMemory.retrieve, NeuralMemory.__call__ = retrieve, call


def _batch(context: int, n: int, value_kind: str):
    """n S-NIAH examples (seeds 0..n−1) as prompt + answer bytes right-padded to ``context`` (causal: the padding
    cannot reach the answer), with the positions whose next byte is an answer byte."""
    tokens = np.zeros((n, context), np.int32)
    starts, lengths = [], []
    for i in range(n):
        ex = make_niah_example(i, context, value_kind)
        seq = encode_text(ex.prompt + ex.answer)
        tokens[i, : len(seq)] = seq
        starts.append(len(ex.prompt))
        lengths.append(len(ex.answer))
    return tokens, np.asarray(starts), np.asarray(lengths)


def exact_match(model, tokens, starts, lengths, batch: int = 16) -> float:
    forward = jax.jit(lambda t: jnp.argmax(model(t), axis=-1))
    hits = []
    for i in range(0, len(tokens), batch):
        pred = np.asarray(forward(jnp.asarray(tokens[i : i + batch])))
        for j, row in enumerate(pred):
            s, n = starts[i + j], lengths[i + j]
            hits.append(bool(np.all(row[s - 1 : s - 1 + n] == tokens[i + j, s : s + n])))
    return float(np.mean(hits))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs="+", help="MAC run directories")
    parser.add_argument("--contexts", default="320,2560")
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--output", type=Path, required=True, help="JSON; a Markdown table goes beside it")
    args = parser.parse_args(argv)
    contexts = [int(c) for c in args.contexts.split(",")]
    results = []
    for run in args.runs:
        model, spec, step, _ = load_run_model(run)
        value_kind = getattr(spec.data.source, "value_kind", "number")
        row = {"run": str(run), "step": step, "exact_match": {}}
        for context in contexts:
            data = _batch(context, args.examples, value_kind)
            for mode in MODES:
                with _patched(mode):
                    row["exact_match"][f"{mode}@{context}"] = exact_match(model, *data)
        print(run.name, {k: round(100 * v, 1) for k, v in row["exact_match"].items()}, flush=True)
        results.append(row)
    doc = {"contexts": contexts, "examples": args.examples, "modes": MODES, "runs": results}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(doc, indent=2) + "\n")
    head = ["run"] + [f"{m} @{c}" for c in contexts for m in MODES]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        scores = [100 * r["exact_match"][f"{m}@{c}"] for c in contexts for m in MODES]
        cells = [f"`{Path(r['run']).name}`"] + [f"{v:.1f}" for v in scores]
        lines.append("| " + " | ".join(cells) + " |")
    args.output.with_suffix(".md").write_text(
        f"MAC's memory reads cut off one at a time: S-NIAH exact match % ({args.examples} examples a context, "
        "teacher-forced; `benchmarks/mac_paths.py`)\n\n" + "\n".join(lines) + "\n"
    )


if __name__ == "__main__":
    main()
