"""The model spec shared by every variant: ``model: {name: mac, d_model: 256, memory: {...}, ...}``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from titans_core.config import ComponentConfig
from titans_core.layers import head_width
from titans_core.spec import ComponentRef
from titans_memory import NeuralMemoryConfig

MacWrite = Literal["y", "x+y", "norm(x+y)", "x"]
"""What MAC's memory writes and reads back (``model.mac_write``; ``titans_attention.mixers.MACMixer``)."""


class VariantConfig(ComponentConfig):
    """Options of a Titans language model (MAC, MAG, MAL, LMM, or the SWA baseline)."""

    vocab_size: int = Field(256, ge=2, description="token ids 0..vocab_size−1; 256 = bytes")
    d_model: int = Field(128, ge=2, description="model width D")
    num_layers: int = Field(2, ge=1, description="number of blocks")
    num_heads: int = Field(4, ge=1, description="attention heads; must divide d_model")
    ffn_hidden: int | None = Field(None, ge=1, description="SwiGLU hidden width; default ≈ 8/3·d_model (×8)")
    window: int = Field(128, ge=1, description="sliding-window size of MAG / MAL / SWA attention")
    segment: int = Field(
        128, ge=1, description="MAC segment length (attention context per segment); a multiple of the chunk"
    )
    num_persistent: int = Field(
        4, ge=0, description="learnable persistent-memory tokens N_p (Eq 19); LMM's memory reads them first"
    )
    memory: NeuralMemoryConfig = Field(default_factory=NeuralMemoryConfig, description="the long-term memory")
    mac_write: MacWrite = Field(
        "x+y",
        description="MAC only: what the memory writes and reads back in Eq 24–25: the block's normalised input plus "
        "the attention output (x+y, default: learns MQAR fastest, README 'MAC's write'), RMSNorm(x+y), the attention "
        "output y alone (the paper's text), or the block's normalised input x alone (what MAG's and LMM's memories "
        "write; what keeps S-NIAH at 8x the training length, README 'Recall at 8x')",
    )
    attention: ComponentRef("attention") | None = Field(  # type: ignore[valid-type]
        None,
        description="the attention component ({name: sliding_window | segment | global | <plugin>, ...}); "
        "default: the variant's own (MAC: segment of `segment`; the others: sliding_window of `window`)",
    )
    memory_layers: list[int] | None = Field(
        None,
        description="indices of the blocks that carry a memory (default: all); the others use attention only",
    )
    tie_embeddings: bool = Field(True, description="output head shares the embedding matrix")
    rope_base: float = Field(10_000.0, gt=0, description="RoPE base")

    @model_validator(mode="after")
    def _consistent(self):
        head_width(self.d_model, self.num_heads, even=True)
        chunk = getattr(self.memory.rule, "chunk_size", None)
        mac = getattr(self, "name", None) == "mac"
        segment = getattr(self.attention, "segment", self.segment) if self.attention is not None else self.segment
        if mac and isinstance(chunk, int) and chunk > 0 and isinstance(segment, int) and segment % chunk:
            raise ValueError(
                f"segment ({segment}) must be a multiple of memory.rule.chunk_size ({chunk}): each "
                "segment reads the memory as it stood at the segment's start (Eq 21), a chunk boundary"
            )
        for i in self.memory_layers or []:
            if not 0 <= i < self.num_layers:
                raise ValueError(f"memory_layers: layer {i} does not exist (num_layers = {self.num_layers})")
        if self.memory.head_dim is None:
            head_width(self.d_model, self.memory.num_heads, prefix="memory.", suffix=" when memory.head_dim is not set")
        return self

    def has_memory(self, layer: int) -> bool:
        return self.memory_layers is None or layer in self.memory_layers

    def hidden(self) -> int:
        return self.ffn_hidden or 8 * max(1, round(self.d_model * 8 / 3 / 8))
