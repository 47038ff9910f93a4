"""Use the Titans neural memory inside your own Flax NNX model — needs only titans-core and titans-memory.

    python examples/memory_in_flax.py

A tiny byte model (embedding → NeuralMemory → output head) trains for a few steps on a repeated pattern; the loss
falls, and a second piece of the sequence is processed with the carried memory state.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from titans_memory import NeuralMemory, NeuralMemoryConfig


class TinyMemoryLM(nnx.Module):
    def __init__(self, vocab: int = 256, d_model: int = 32, *, rngs: nnx.Rngs):
        self.embed = nnx.Embed(vocab, d_model, rngs=rngs)
        self.memory = NeuralMemory(NeuralMemoryConfig(num_heads=2), d_model=d_model, rngs=rngs)
        self.head = nnx.Linear(d_model, vocab, rngs=rngs)

    def __call__(self, tokens_BxT, state=None):
        x = self.embed(tokens_BxT)
        y, state = self.memory(x, state)
        return self.head(x + y), state


def main(steps: int = 30) -> tuple[float, float]:
    model = TinyMemoryLM(rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)
    text = jnp.frombuffer(b"the titans memorize at test time. " * 4, dtype=jnp.uint8).astype(jnp.int32)
    batch = text[None, :-1], text[None, 1:]

    @nnx.jit
    def step(model, optimizer, inputs, targets):
        def loss_fn(model):
            logits, _ = model(inputs)
            return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    @nnx.jit  # one compiled program (run eagerly, every operation would compile on its own)
    def in_pieces(model, tokens):
        # Long sequences can be processed in pieces: the memory state carries over.
        _, state = model(tokens[:, :50])
        logits, _ = model(tokens[:, 50:], state)
        return logits

    losses = [float(step(model, optimizer, *batch)) for _ in range(steps)]
    logits = in_pieces(model, batch[0])
    assert bool(jnp.all(jnp.isfinite(logits)))
    print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f} over {steps} steps ({jax.devices()[0].platform})")
    return losses[0], losses[-1]


if __name__ == "__main__":
    first, last = main()
    raise SystemExit(0 if last < first else 1)
