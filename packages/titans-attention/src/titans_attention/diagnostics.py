"""Memory diagnostics of a whole model: the statistics of :mod:`titans_memory.diagnostics` for every layer's
neural memory, on the inputs that memory sees in the model's own forward pass.

:func:`model_memory_diagnostics` runs ``model(tokens)`` once with *capture* on: each mixer that writes a
memory calls :func:`record_memory_input` with the memory, the whole sequence it writes (for MAC the attention
outputs y of every segment, Eq 24) and the state it starts from (after the persistent tokens for MAG / MAL /
LMM). Then it replays each recorded memory chunk by chunk. Capture is a trace-time switch (a context variable
read while the model is traced): outside :func:`capture_memory_inputs` ``record_memory_input`` does nothing,
so the training step's computation is unchanged.

Layers are named ``layer{i}`` after their block index (``layer{i}.{j}`` when a block holds several memories).
A custom mixer takes part by calling ``record_memory_input`` in its full forward pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import jax
from flax import nnx
from titans_memory import MemoryState, NeuralMemory, memory_diagnostics

_TAPS: ContextVar[list[tuple[NeuralMemory, jax.Array, MemoryState | None]] | None] = ContextVar(
    "titans_memory_taps", default=None
)


def capturing() -> bool:
    """Whether memory inputs are being recorded (mixers may then return extra values from their scans)."""
    return _TAPS.get() is not None


def record_memory_input(memory: NeuralMemory, x_BxTxD: jax.Array, state: MemoryState | None = None) -> None:
    """Record that ``memory`` writes the whole sequence ``x_BxTxD`` from ``state`` (None: a fresh memory).
    A no-op unless inside :func:`capture_memory_inputs`."""
    taps = _TAPS.get()
    if taps is not None:
        taps.append((memory, x_BxTxD, state))


@contextmanager
def capture_memory_inputs() -> Iterator[list[tuple[NeuralMemory, jax.Array, MemoryState | None]]]:
    """Record every :func:`record_memory_input` call made inside the block (in call order)."""
    taps: list[tuple[NeuralMemory, jax.Array, MemoryState | None]] = []
    token = _TAPS.set(taps)
    try:
        yield taps
    finally:
        _TAPS.reset(token)


def memory_layers(model: nnx.Module) -> dict[str, NeuralMemory]:
    """The model's neural memories by layer name (``layer{block}``, see the module docstring), in order."""
    found: list[tuple[str, NeuralMemory]] = []
    for path, node in nnx.iter_graph(model):
        if isinstance(node, NeuralMemory):
            block = path[1] if len(path) > 1 and path[0] == "blocks" else None
            found.append((f"layer{block}" if block is not None else ".".join(map(str, path)), node))
    names = [name for name, _ in found]
    out: dict[str, NeuralMemory] = {}
    for name, memory in found:
        if names.count(name) > 1:
            name = f"{name}.{sum(1 for n in out if n.startswith(name + '.'))}"
        out[name] = memory
    return out


def model_memory_diagnostics(model: nnx.Module, tokens_BxT: jax.Array) -> dict[str, dict[str, Any]]:
    """``{"layer0": {"theta_mean": …, "update_norm_max": …, …}, …}`` for every memory the model's forward pass
    writes (empty for a model without memory, e.g. SWA). Jit it (``nnx.jit`` or ``nnx.merge`` inside
    ``jax.jit``): one forward pass plus one chunk-by-chunk pass per memory."""
    names = {id(memory): name for name, memory in memory_layers(model).items()}
    if not names:
        return {}
    with capture_memory_inputs() as taps:
        model(tokens_BxT)
    out: dict[str, dict[str, Any]] = {}
    for memory, x_BxTxD, state in taps:
        name = names.get(id(memory), f"memory{len(out)}")
        if name in out:
            raise RuntimeError(f"{name}: its memory was recorded twice in one forward pass")
        out[name] = memory_diagnostics(memory, x_BxTxD, state)
    return out
