"""Stream through the Titans memory with per-row resets, a store mask and bf16 compute, save the state, and
continue exactly in another process — needs only titans-core and titans-memory.

    python examples/memory_stream_state.py save DIR     # train, stream, save the model and the memory state
    python examples/memory_stream_state.py resume DIR   # a new process: reload both and continue the stream

``save`` trains a tiny byte model (embedding → NeuralMemory in bf16 → head), streams two rows through it in
pieces under ``jax.jit`` — row 1 is reset mid-stream (``NeuralMemory.reset``) and one piece is read but not
written (``store_mask_BxT``) — then writes the parameters, the memory state and the next piece's outputs to DIR.
``resume`` rebuilds the model, loads both, runs the next piece and checks that its outputs are bit for bit those
of the first process.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from titans_memory import NeuralMemory, NeuralMemoryConfig


class TinyMemoryLM(nnx.Module):
    def __init__(self, vocab: int = 256, d_model: int = 32, *, rngs: nnx.Rngs):
        self.embed = nnx.Embed(vocab, d_model, rngs=rngs)
        self.memory = NeuralMemory(NeuralMemoryConfig(num_heads=2), d_model=d_model, dtype=jnp.bfloat16, rngs=rngs)
        self.head = nnx.Linear(d_model, vocab, rngs=rngs)

    def __call__(self, tokens_BxT, state=None, store_mask_BxT=None):
        x = self.embed(tokens_BxT)
        y, state = self.memory(x, state, store_mask_BxT=store_mask_BxT)
        return self.head(x + y.astype(x.dtype)), state


TEXT = jnp.frombuffer(b"the titans memorize at test time. " * 4, dtype=jnp.uint8).astype(jnp.int32)


@nnx.jit
def piece(model, tokens_BxT, state, store_mask_BxT):
    """One piece of the stream: logits and the state after it (one program per piece length)."""
    return model(tokens_BxT, state, store_mask_BxT)


@nnx.jit
def reset(model, state, mask_B):
    return model.memory.reset(state, mask_B)


def train(model: TinyMemoryLM, steps: int = 10) -> None:
    optimizer = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, inputs, targets):
        def loss_fn(model):
            logits, _ = model(inputs)
            return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    for _ in range(steps):
        step(model, optimizer, TEXT[None, :-1], TEXT[None, 1:])


def stream_rows() -> jax.Array:
    return jnp.stack([TEXT[:40], TEXT[50:90]])  # two rows, B = 2


def save(folder: Path) -> None:
    model = TinyMemoryLM(rngs=nnx.Rngs(0))
    train(model)
    rows, write = stream_rows(), jnp.ones((2, 7), bool)
    state = model.memory.init_state(2)
    _, state = piece(model, rows[:, :7], state, write)
    state = reset(model, state, jnp.array([False, True]))  # row 1 starts a new document at position 7
    _, after = piece(model, rows[:, 7:14], state, write)
    # row 1 after its reset equals a fresh memory reading the same piece; row 0 is untouched by the reset
    _, fresh = piece(model, rows[:, 7:14], model.memory.init_state(2), write)
    for a, b in zip(jax.tree.leaves(after), jax.tree.leaves(fresh), strict=True):
        assert np.array_equal(np.asarray(a[1]), np.asarray(b[1])), "reset row differs from a fresh memory"
    # a piece read but not written (a prompt, padding): M and S stay exactly as they were
    logits, skipped = piece(model, rows[:, 14:21], after, jnp.zeros((2, 7), bool))
    assert all(
        np.array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(
            jax.tree.leaves((after.rule.memory, after.rule.surprise)),
            jax.tree.leaves((skipped.rule.memory, skipped.rule.surprise)),
            strict=True,
        )
    ), "a masked piece changed M or S"
    model.memory.check_state(skipped, 2)  # every call returns the dtypes and shapes of init_state
    next_logits, _ = piece(model, rows[:, 21:28], skipped, write)
    folder.mkdir(parents=True, exist_ok=True)
    blob = {
        "params": nnx.to_pure_dict(nnx.state(model)),
        "state": jax.device_get(skipped),
        "next_logits": np.asarray(next_logits),
    }
    (folder / "stream.pkl").write_bytes(pickle.dumps(jax.device_get(blob)))
    dtypes = sorted({str(x.dtype) for x in jax.tree.leaves(skipped)})
    print(f"saved to {folder}: state leaves {dtypes}, logits {logits.dtype}")


def resume(folder: Path) -> None:
    blob = pickle.loads((folder / "stream.pkl").read_bytes())
    model = TinyMemoryLM(rngs=nnx.Rngs(1))  # other initial weights: everything comes from the file
    state = nnx.state(model)
    nnx.replace_by_pure_dict(state, blob["params"])
    nnx.update(model, state)
    model.memory.check_state(blob["state"], 2)
    rows = stream_rows()
    logits, _ = piece(model, rows[:, 21:28], blob["state"], jnp.ones((2, 7), bool))
    assert np.array_equal(np.asarray(logits), blob["next_logits"]), "the resumed stream differs"
    print("resumed: the next piece equals the first process's bit for bit")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("save", "resume"):
        raise SystemExit("usage: python examples/memory_stream_state.py save|resume DIR")
    (save if sys.argv[1] == "save" else resume)(Path(sys.argv[2]))
