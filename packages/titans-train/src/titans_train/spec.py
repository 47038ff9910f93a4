"""The training spec: ``titans-train SPEC.yaml`` validates one :class:`TrainSpec` before doing any work.

Sections (each a small frozen pydantic model; unknown keys are errors)::

    model:        the variant to train, {name: mac, ...its options}            (required)
    data:         {source: {name: python_stdlib, ...}, seq_len, val_fraction, shuffle}
    optimizer:    AdamW: lr, b1, b2, eps, weight_decay, no_decay, clip_norm
    schedule:     linear warmup then cosine decay: warmup_steps, decay_steps, min_lr_ratio
    trainer:      steps, batch_size, grad_accum, seed, log_every, eval_every, eval_batches, diagnostics_every,
                  carry_memory, carry_reset_every
    precision:    compute_dtype (float32 | bfloat16; master weights stay float32)
    mesh:         data, fsdp, tensor (-1 = the remaining devices), num_devices, rules (logical axis → mesh
    axis)
    distributed:  coordinator_address, num_processes, process_id (or TITANS_* environment variables), auto
    checkpoint:   every, keep, asynchronous
    output:       dir (the run directory)
    sample:       the generation printed at the end of training: prompt, max_new_tokens, temperature, top_k,
    top_p

Checks that involve several fields or the machine (mesh shape versus devices, batch versus data axis, …) are
in
:mod:`titans_train.spec_check`; they report problems in the same ``spec.yaml:LINE: path: message`` format.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator
from titans_core import ComponentRef, SpecModel, component_field

#: Default logical-axis → mesh-axis rules (``mesh.rules`` entries are merged over these).
DEFAULT_RULES: dict[str, str | None] = {
    "embed": "fsdp",
    "heads": "tensor",
    "mlp": "tensor",
    "vocab": "tensor",
}

MeshAxisName = Literal["fsdp", "tensor"]


class DataSpec(SpecModel):
    """Where the tokens come from and how they are cut into training windows."""

    source: ComponentRef("data_source") = component_field("data_source", "python_stdlib")  # type: ignore[valid-type]
    seq_len: int = Field(128, ge=1, description="tokens the model sees per window (a window holds seq_len + 1)")
    val_fraction: float = Field(
        0.05, ge=0, lt=1, description="tail fraction of the token stream held out for evaluation (0: none)"
    )
    shuffle: bool = Field(True, description="shuffle training windows from trainer.seed (each epoch differently)")


class OptimizerSpec(SpecModel):
    """AdamW with global-norm clipping and masked weight decay."""

    lr: float = Field(3e-3, gt=0, description="peak learning rate (reached after the warmup)")
    b1: float = Field(0.9, ge=0, lt=1, description="Adam β1")
    b2: float = Field(0.95, ge=0, lt=1, description="Adam β2")
    eps: float = Field(1e-8, gt=0, description="Adam ε")
    weight_decay: float = Field(0.1, ge=0, description="decoupled weight decay of matrices (see no_decay)")
    no_decay: list[str] = Field(
        default_factory=lambda: ["norm", "^gate_", "_gate$"],
        description="regexes: a parameter with a path segment matching one is not decayed (nor if ndim < 2)",
    )
    clip_norm: float | None = Field(1.0, gt=0, description="clip gradients to this global norm (null: no clipping)")


class ScheduleSpec(SpecModel):
    """Learning rate: linear warmup from 0, then cosine decay to min_lr_ratio · lr."""

    warmup_steps: int = Field(100, ge=0, description="steps of linear warmup")
    decay_steps: int | None = Field(
        None, ge=1, description="length of warmup + cosine decay in steps (null: trainer.steps)"
    )
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="final learning rate as a fraction of lr")


class TrainerSpec(SpecModel):
    """The training loop."""

    steps: int = Field(1000, ge=1, description="optimizer steps to train for")
    batch_size: int = Field(16, ge=1, description="global batch: windows per optimizer step (all processes)")
    grad_accum: int = Field(1, ge=1, description="micro-batches per step; must divide batch_size")
    seed: int = Field(0, ge=0, lt=2**32, description="seed of the initialisation and of the data order")
    log_every: int = Field(10, ge=1, description="steps between progress lines when stdout is not a terminal")
    eval_every: int | None = Field(200, ge=1, description="steps between evaluations (null: only at the end)")
    eval_batches: int = Field(8, ge=1, description="validation batches per evaluation (fewer if the split is small)")
    max_weight: float | None = Field(
        1e4,
        gt=0,
        description="stop as diverged when a parameter's magnitude exceeds this (weights blown up; null: off)",
    )
    carry_memory: bool = Field(
        False,
        description="each batch row is a stream of consecutive windows (task data: of its successive examples); "
        "the model's recurrent state (memory, attention caches) after one starts the next, without gradient "
        "(truncated BPTT)",
    )
    carry_reset_every: int | None = Field(
        None,
        ge=1,
        description="with carry_memory: restart every stream from a fresh state every N windows "
        "(null: only when a stream wraps to its start; task data: never after step 0)",
    )
    diagnostics_every: int | Literal["log_every"] | None = Field(
        "log_every",
        description="steps between memory diagnostics in metrics.jsonl (log_every: as trainer.log_every; null: off)",
    )

    @field_validator("diagnostics_every", mode="before")
    @classmethod
    def _diagnostics_every(cls, value: Any) -> Any:
        if value is None or value == "log_every" or (type(value) is int and value >= 1):
            return value
        raise ValueError(f"expected an integer ≥ 1, 'log_every' or null, got {value!r}")

    def diagnostics_interval(self) -> int | None:
        """Steps between memory diagnostics (None: off)."""
        return self.log_every if self.diagnostics_every == "log_every" else self.diagnostics_every


class PrecisionSpec(SpecModel):
    """Numerics of the forward and backward pass."""

    compute_dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="dtype of parameters in the forward pass; master weights stay float32"
    )


class MeshSpec(SpecModel):
    """The device mesh (axes data, fsdp, tensor) and how parameter axes map onto it."""

    data: int = Field(-1, ge=-1, description="data-parallel size (-1: all devices not used by fsdp and tensor)")
    fsdp: int = Field(1, ge=-1, description="fully-sharded data-parallel size (params sharded, batch split)")
    tensor: int = Field(1, ge=-1, description="tensor-parallel size (heads / mlp / vocab sharded)")
    num_devices: int | None = Field(
        None, ge=1, description="use only the first N devices (null: all; single-process runs only)"
    )
    rules: dict[str, MeshAxisName | None] = Field(
        default_factory=dict,
        description="logical axis → mesh axis (fsdp, tensor, null), over embed→fsdp, heads/mlp/vocab→tensor",
    )

    def resolved_rules(self) -> dict[str, str | None]:
        """The default rules updated with ``rules``."""
        return {**DEFAULT_RULES, **self.rules}


class DistributedSpec(SpecModel):
    """Multi-process (multi-host) runs through ``jax.distributed.initialize``; unset fields fall back to
    TITANS_COORDINATOR_ADDRESS, TITANS_NUM_PROCESSES and TITANS_PROCESS_ID."""

    coordinator_address: str | None = Field(None, description="host:port of process 0 (null: single process)")
    num_processes: int | None = Field(None, ge=1, description="number of processes")
    process_id: int | None = Field(None, ge=0, description="this process's id, 0 … num_processes − 1")
    auto: bool = Field(False, description="let JAX detect the cluster (SLURM, TPU pods, …) instead")
    timeout_s: int = Field(300, ge=1, description="seconds to wait for the other processes")


class CheckpointSpec(SpecModel):
    """Orbax checkpoints in RUN_DIR/checkpoints (model, optimizer, step, RNG and data-iterator state)."""

    every: int = Field(500, ge=1, description="save every N steps (and always at the end)")
    keep: int = Field(3, ge=1, description="keep the K most recent checkpoints")
    asynchronous: bool = Field(True, description="write checkpoints in the background while training continues")


class OutputSpec(SpecModel):
    """Where the run lives."""

    dir: str = Field(
        "runs/default",
        min_length=1,
        description="run directory, relative to the current one (resumed if it holds this run)",
    )


class SampleSpec(SpecModel):
    """A short generation from the trained model, printed at the end of training (max_new_tokens 0: none)."""

    prompt: str = Field("def ", description="prompt text (UTF-8 bytes; byte-level data only)")
    max_new_tokens: int = Field(200, ge=0, description="tokens to generate")
    temperature: float = Field(0.8, ge=0, description="sampling temperature (0: greedy)")
    top_k: int | None = Field(40, ge=1, description="sample from the k most likely tokens (null: all)")
    top_p: float | None = Field(None, gt=0, le=1, description="nucleus sampling mass (null: off)")


class TrainSpec(SpecModel):
    """A whole training run (``titans-train SPEC.yaml``)."""

    model: ComponentRef("variant") = Field(description="the variant to train: {name: mac, ...options}")  # type: ignore[valid-type]
    data: DataSpec = Field(default_factory=DataSpec, description="training and validation data")
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec, description="AdamW")
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec, description="learning-rate schedule")
    trainer: TrainerSpec = Field(default_factory=TrainerSpec, description="the training loop")
    precision: PrecisionSpec = Field(default_factory=PrecisionSpec, description="numerics")
    mesh: MeshSpec = Field(default_factory=MeshSpec, description="device mesh and sharding rules")
    distributed: DistributedSpec = Field(default_factory=DistributedSpec, description="multi-process set-up")
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec, description="checkpointing")
    output: OutputSpec = Field(default_factory=OutputSpec, description="the run directory")
    sample: SampleSpec = Field(default_factory=SampleSpec, description="sample generation after training")

    @property
    def vocab_size(self) -> int:
        """The model's vocabulary size (``model.vocab_size``, 256 = bytes, when the variant has none)."""
        return int(getattr(self.model, "vocab_size", 256))


#: Spec sections that may change when a run directory is resumed (they do not change the trajectory, or
#: only say how long to train); any other difference is refused.
RESUMABLE_CHANGES = (
    "trainer.steps",
    "trainer.log_every",
    "trainer.eval_every",
    "trainer.eval_batches",
    "trainer.diagnostics_every",
    "trainer.max_weight",
    "checkpoint",
    "mesh",
    "distributed",
    "sample",
    "output.dir",  # where the run lives is not what it is: a moved or copied run directory resumes
)
