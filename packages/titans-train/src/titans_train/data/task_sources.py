"""The synthetic tasks as ``data_source`` components: ``mqar``, ``niah``, ``niah_multikey``, ``niah_multivalue``
and ``babilong`` (registered in :mod:`titans_train.plugin`), so a spec can train on them::

    data:
      source: {name: mqar, num_kv_pairs: 16}
      seq_len: 256          # the length of every example

Both return a :class:`~titans_train.data.examples.LabelledTask`: examples are generated on demand from
``(seed, split, index)`` by the generators of :mod:`titans_train.tasks`, and only the positions the task
scores carry a target (the value after each MQAR query; the answer bytes of the haystack tasks and the byte
that ends the answer). ``data.val_fraction`` does not apply: the validation examples are ``num_val`` further
examples from an independent generator stream.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from pydantic import Field, model_validator
from titans_core import ComponentConfig

from titans_train.data.examples import Split, example_rng, shift_with_mask
from titans_train.tasks.babilong import DEFAULT_FACTS, babilong_min_context_length, make_babilong_example
from titans_train.tasks.mqar import mqar_batch, validate_mqar_config
from titans_train.tasks.niah import (
    VALUE_KINDS,
    PromptAnswer,
    encode_niah_example,
    make_niah_example,
    niah_min_context_length,
)
from titans_train.tasks.niah_multi import DEFAULT_NEEDLES, make_multi_example, multi_min_context_length


class TaskConfig(ComponentConfig):
    """Options shared by the synthetic tasks."""

    num_train: int = Field(100_000, ge=1, description="training examples (an epoch; generated on demand)")
    num_val: int = Field(256, ge=1, description="validation examples (a separate generator stream)")
    seed: int = Field(0, ge=0, description="seed of the examples (independent of trainer.seed)")


# ----------------------------------------------------------------------------------------------------- mqar
class MqarSourceConfig(TaskConfig):
    """Multi-query associative recall (Zoology): key-value pairs, then queries; targets after queries only."""

    vocab_size: int = Field(256, ge=4, description="token ids 0..vocab_size−1 (keys: first half, values: second)")
    num_kv_pairs: int = Field(8, ge=1, description="key-value pairs per example (= queries per example)")
    power_a: float = Field(0.01, gt=0, description="power-law exponent of the query gaps (1: uniform)")
    random_non_queries: bool = Field(True, description="filler positions hold random tokens (else 0)")
    delay: int = Field(
        0,
        ge=0,
        description="filler tokens between the last pair and the first query (beyond the reach of the "
        "stacked attention windows, no query sees its pair through attention); 0 = Zoology",
    )


class MqarSource:
    """Factory of ``mqar``: see :class:`MqarSourceConfig` and :mod:`titans_train.tasks.mqar`."""

    byte_level = False

    def __init__(self, config: MqarSourceConfig):
        self.config = config
        self.num_train, self.num_val = config.num_train, config.num_val
        self.vocab_size = config.vocab_size
        self.description = (
            f"mqar: {config.num_kv_pairs} key-value pairs, vocabulary {config.vocab_size}, "
            f"delay {config.delay}, {config.num_train:,} training / {config.num_val:,} validation examples"
        )

    def load(self) -> MqarSource:
        return self

    def check_length(self, seq_len: int) -> str | None:
        c = self.config
        try:
            validate_mqar_config(c.vocab_size, seq_len, c.num_kv_pairs, c.power_a, c.delay)
        except ValueError as exc:
            return f"data.source (mqar): {exc}"
        return None

    def example(self, split: Split, index: int, seq_len: int) -> np.ndarray:
        c = self.config
        inputs, labels = mqar_batch(
            example_rng(c.seed, split, index),
            1,
            c.vocab_size,
            seq_len,
            c.num_kv_pairs,
            c.power_a,
            c.random_non_queries,
            c.delay,
        )
        return np.stack([inputs[0], labels[0]])


# ----------------------------------------------------------------------------------------------------- niah
class NiahSourceConfig(TaskConfig):
    """Single-needle haystack (RULER): the loss is on the answer bytes only; byte level (vocabulary 256)."""

    value_kind: str = Field("number", description="the needle's value: number (7 digits) or uuid")
    min_length: int | None = Field(
        None,
        ge=1,
        description="draw each example's length uniformly from [min_length, seq_len + 1] (null: always "
        "seq_len + 1); shorter examples are right-padded with 0 and the padding is not scored",
    )

    @model_validator(mode="after")
    def _check(self) -> NiahSourceConfig:
        if self.value_kind not in VALUE_KINDS:
            raise ValueError(f"value_kind must be one of {', '.join(VALUE_KINDS)}, got {self.value_kind!r}")
        shortest = niah_min_context_length(self.value_kind)
        if self.min_length is not None and self.min_length < shortest:
            raise ValueError(
                f"min_length {self.min_length} is shorter than an S-NIAH example ({shortest} bytes for "
                f"value_kind {self.value_kind})"
            )
        return self


class NiahSource:
    """Factory of ``niah``: see :class:`NiahSourceConfig` and :mod:`titans_train.tasks.niah`.

    An example of ``seq_len`` inputs is the text ``prompt + answer`` of a context length ``L <= seq_len + 1``
    (bytes), padded with 0 to ``seq_len + 1`` and shifted: inputs ``text[:-1]``, targets ``text[1:]`` on the
    answer bytes and on the first padding byte, so the model is trained to produce the value right after the
    question's ``"is: "`` and then to stop (S-NIAH scoring rejects a value that runs on into more digits).
    When
    the text fills all ``seq_len + 1`` bytes there is no padding byte and only the answer is scored.
    """

    byte_level = True
    vocab_size = 256

    def __init__(self, config: NiahSourceConfig):
        self.config = config
        self.num_train, self.num_val = config.num_train, config.num_val
        lengths = f"lengths {config.min_length}…seq_len+1" if config.min_length else "length seq_len+1"
        self.description = (
            f"niah: single needle ({config.value_kind}), {lengths}, "
            f"{config.num_train:,} training / {config.num_val:,} validation examples"
        )

    def load(self) -> NiahSource:
        return self

    def check_length(self, seq_len: int) -> str | None:
        shortest = niah_min_context_length(self.config.value_kind)
        if seq_len + 1 < shortest:
            return (
                f"data.seq_len {seq_len} is too short for S-NIAH: an example needs up to {shortest} bytes "
                f"(seq_len + 1 >= {shortest})"
            )
        if self.config.min_length is not None and self.config.min_length > seq_len + 1:
            return f"data.source.min_length {self.config.min_length} is longer than data.seq_len + 1"
        return None

    def example(self, split: Split, index: int, seq_len: int) -> np.ndarray:
        rng = example_rng(self.config.seed, split, index)
        length = seq_len + 1
        if self.config.min_length is not None:
            length = int(rng.integers(self.config.min_length, seq_len + 2))
        example = make_niah_example(rng, length, self.config.value_kind)
        tokens, mask = encode_niah_example(example, pad_to=seq_len + 1)
        end = len(example.prompt) + len(example.answer)
        if end < mask.size:  # the first padding byte (0) is the end-of-answer target
            mask[end] = True
        return shift_with_mask(tokens.astype(np.int32), mask)


# ------------------------------------------------------------------ niah_multikey, niah_multivalue, babilong
class _HaystackConfig(TaskConfig):
    """Options shared by the byte-level haystack tasks below."""

    min_length: int | None = Field(
        None,
        ge=1,
        description="draw each example's length uniformly from [min_length, seq_len + 1] (null: always "
        "seq_len + 1); shorter examples are right-padded with 0 and the padding is not scored",
    )

    task_name: ClassVar[str] = ""  # the data_source name

    def shortest(self) -> int:
        """The shortest example of these options (bytes)."""
        raise NotImplementedError

    def make(self, rng: np.random.Generator, length: int) -> PromptAnswer:
        """One example of context ``length`` (anything with ``prompt`` and ``answer``)."""
        raise NotImplementedError

    @model_validator(mode="after")
    def _check_min_length(self) -> _HaystackConfig:
        if self.min_length is not None and self.min_length < self.shortest():
            raise ValueError(f"min_length {self.min_length} is shorter than an example ({self.shortest()} bytes)")
        return self


class _MultiConfig(_HaystackConfig):
    value_kind: str = Field("number", description="the needles' values: number (7 digits) or uuid")

    @model_validator(mode="before")
    @classmethod
    def _check_kind(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("value_kind", "number") not in VALUE_KINDS:
            raise ValueError(f"value_kind must be one of {', '.join(VALUE_KINDS)}, got {data['value_kind']!r}")
        return data


class NiahMultiKeySourceConfig(_MultiConfig):
    """RULER ``niah_multikey_1``: needles with distinct keys, one asked; the loss is on its value only."""

    task_name: ClassVar[str] = "niah_multikey"
    num_keys: int = Field(DEFAULT_NEEDLES, ge=2, le=40, description="needles (one asked, the rest distractors)")

    def shortest(self) -> int:
        return multi_min_context_length("niah_multikey", self.num_keys, self.value_kind)

    def make(self, rng: np.random.Generator, length: int) -> PromptAnswer:
        return make_multi_example(rng, length, "niah_multikey", self.num_keys, self.value_kind)


class NiahMultiValueSourceConfig(_MultiConfig):
    """RULER ``niah_multivalue``: one key with several values; the loss is on the listed values."""

    task_name: ClassVar[str] = "niah_multivalue"
    num_values: int = Field(DEFAULT_NEEDLES, ge=2, le=40, description="values of the key (needles)")

    def shortest(self) -> int:
        return multi_min_context_length("niah_multivalue", self.num_values, self.value_kind)

    def make(self, rng: np.random.Generator, length: int) -> PromptAnswer:
        return make_multi_example(rng, length, "niah_multivalue", self.num_values, self.value_kind)


class BabilongSourceConfig(_HaystackConfig):
    """BABILong-style qa1: facts in the haystack, "Where is X?" at the end; the loss is on the location."""

    task_name: ClassVar[str] = "babilong"
    num_facts: int = Field(DEFAULT_FACTS, ge=1, le=40, description="bAbI qa1 facts per example")

    def shortest(self) -> int:
        return babilong_min_context_length(self.num_facts)

    def make(self, rng: np.random.Generator, length: int) -> PromptAnswer:
        return make_babilong_example(rng, length, self.num_facts)


class HaystackSource:
    """Factory of ``niah_multikey``, ``niah_multivalue`` and ``babilong`` (generators in
    :mod:`titans_train.tasks.niah_multi` / :mod:`titans_train.tasks.babilong`); examples as :class:`NiahSource`'s:
    ``prompt + answer`` padded with 0 to ``seq_len + 1`` and shifted, targets on the answer bytes and on the
    first padding byte."""

    byte_level = True
    vocab_size = 256

    def __init__(self, config: _HaystackConfig):
        self.config = config
        self.num_train, self.num_val = config.num_train, config.num_val
        self.name = config.task_name
        lengths = f"lengths {config.min_length}…seq_len+1" if config.min_length else "length seq_len+1"
        self.description = (
            f"{self.name}: {lengths}, {config.num_train:,} training / {config.num_val:,} validation examples"
        )

    def load(self) -> HaystackSource:
        return self

    def check_length(self, seq_len: int) -> str | None:
        shortest = self.config.shortest()
        if seq_len + 1 < shortest:
            return (
                f"data.seq_len {seq_len} is too short for {self.name}: an example needs up to {shortest} bytes "
                f"(seq_len + 1 >= {shortest})"
            )
        if self.config.min_length is not None and self.config.min_length > seq_len + 1:
            return f"data.source.min_length {self.config.min_length} is longer than data.seq_len + 1"
        return None

    def example(self, split: Split, index: int, seq_len: int) -> np.ndarray:
        rng = example_rng(self.config.seed, split, index)
        length = seq_len + 1
        if self.config.min_length is not None:
            length = int(rng.integers(self.config.min_length, seq_len + 2))
        example = self.config.make(rng, length)
        tokens, mask = encode_niah_example(example, pad_to=seq_len + 1)
        end = len(example.prompt) + len(example.answer)
        if end < mask.size:  # the first padding byte (0) is the end-of-answer target
            mask[end] = True
        return shift_with_mask(tokens.astype(np.int32), mask)


TASK_SOURCES: dict[str, tuple[type[TaskConfig], type]] = {
    "mqar": (MqarSourceConfig, MqarSource),
    "niah": (NiahSourceConfig, NiahSource),
    "niah_multikey": (NiahMultiKeySourceConfig, HaystackSource),
    "niah_multivalue": (NiahMultiValueSourceConfig, HaystackSource),
    "babilong": (BabilongSourceConfig, HaystackSource),
}
