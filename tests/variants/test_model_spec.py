"""Bad model specs give one clear error naming the field; good ones validate and build."""

from __future__ import annotations

import pytest
from titans_core.config import SpecModel
from titans_core.errors import SpecError
from titans_core.spec import ComponentRef, parse_spec


class Spec(SpecModel):
    model: ComponentRef("variant")  # type: ignore[valid-type]


def error(yaml_text: str) -> str:
    with pytest.raises(SpecError) as e:
        parse_spec(yaml_text, Spec, filename="spec.yaml")
    return str(e.value)


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("model: {name: mac, segment: 0}", "spec.yaml:1: model.segment: must be ≥ 1, got 0"),
        ("model: {name: mag, window: 0}", "spec.yaml:1: model.window: must be ≥ 1, got 0"),
        (
            "model: {name: mac, segment: 24, memory: {rule: {name: momentum_scan, chunk_size: 16}}}",
            "spec.yaml:1: model: segment (24) must be a multiple of memory.rule.chunk_size (16)",
        ),
        (
            "model:\n  name: mac\n  d_model: 30\n  num_heads: 4\n",
            "spec.yaml:1: model: num_heads (4) must divide d_model (30)",
        ),
        (
            "model: {name: mal, num_layers: 2, memory_layers: [0, 5]}",
            "spec.yaml:1: model: memory_layers: layer 5 does not exist (num_layers = 2)",
        ),
        (
            "model: {name: mag, memory: {num_heads: 3}}",
            "spec.yaml:1: model: memory.num_heads (3) must divide d_model (128) when memory.head_dim is not set",
        ),
        (
            "model:\n  name: mac\n  memory:\n    model: {name: mlp, depth: 0}\n",
            "spec.yaml:4: model.memory.model.depth: must be ≥ 1, got 0",
        ),
        ("model: {name: mac, windw: 3}", "spec.yaml:1: model.windw: unknown key 'windw'"),
    ],
)
def test_bad_model_specs(yaml_text, message):
    assert message in error(yaml_text)


def test_unknown_variant_lists_the_known_ones():
    msg = error("model: {name: macc}")
    assert "unknown variant 'macc'; known: lmm, mac, mag, mal, swa. Did you mean 'mac'?" in msg


def test_switching_variant_is_one_word():
    for name in ("mac", "mag", "mal", "lmm", "swa"):
        text = f"model: {{name: {name}, d_model: 32, memory: {{rule: {{name: sequential, chunk_size: 8}}}}}}"
        spec = parse_spec(text, Spec)
        assert spec.model.name == name and spec.model.memory.rule.chunk_size == 8
