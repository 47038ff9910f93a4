"""Spec validation: component sections, error messages (path + YAML line), round trips, the example plugin."""

from __future__ import annotations

import pickle
import textwrap

import pytest
from pydantic import Field
from titans_core import (
    ComponentRef,
    SpecError,
    SpecModel,
    dump_spec,
    get_registry,
    load_spec_file,
    make_config,
    parse_spec,
)

HINT = "(If it comes from a plugin, is the plugin installed? Check `titans-plugins list`.)"


class TrainerSpec(SpecModel):
    steps: int = Field(10, ge=1, description="optimizer steps")
    lr: float = Field(1e-3, gt=0)
    shuffle: bool = True


class ModelSpec(SpecModel):
    variant: ComponentRef("variant")
    extra_memories: list[ComponentRef("memory_model")] = []


class Spec(SpecModel):
    model: ModelSpec
    trainer: TrainerSpec = TrainerSpec()


class MemoryOnly(SpecModel):
    memory: ComponentRef("memory_model")


VALID = """\
model:
  variant:
    name: mac
    layers: 4
    memory:
      name: mlp
      depth: 3
  extra_memories:
    - name: linear
trainer:
  steps: 100
"""


def problems(text: str, model=Spec, **kwargs) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_spec(textwrap.dedent(text), model, filename="spec.yaml", **kwargs)
    return str(info.value).splitlines()


def test_valid_spec_gives_tagged_instances_of_the_plugins_config_classes(registry, fake):
    spec = parse_spec(VALID, Spec, filename="spec.yaml")
    variant = spec.model.variant
    assert isinstance(variant, fake.Variant) and variant.name == "mac" and variant.layers == 4
    assert isinstance(variant.memory, fake.MLP) and variant.memory.name == "mlp" and variant.memory.depth == 3
    assert type(variant.memory).component_kind == "memory_model"
    assert [m.name for m in spec.model.extra_memories] == ["linear"]
    with pytest.raises(Exception, match="frozen"):
        spec.trainer.steps = 3


def test_component_field_default_is_validated_and_used(registry, fake):
    spec = parse_spec("model: {variant: {name: mac}}", Spec)
    assert spec.model.variant.memory == make_config("memory_model", "mlp", depth=3)
    with pytest.raises(SpecError) as info:
        make_config("memory_model", "mlp", depth=0)
    assert str(info.value) == "memory_model 'mlp': depth: must be ≥ 1, got 0"


def test_round_trips_through_model_dump_yaml_and_pickle(registry):
    spec = parse_spec(VALID, Spec)
    dumped = spec.model_dump()
    assert list(dumped["model"]["variant"]) == ["name", "memory", "layers"]  # `name` first
    assert parse_spec(dumped, Spec) == spec
    assert parse_spec(dump_spec(spec), Spec) == spec
    assert pickle.loads(pickle.dumps(spec)) == spec
    assert spec != parse_spec(VALID.replace("depth: 3", "depth: 4"), Spec)


def test_config_objects_are_accepted_when_unambiguous(registry, fake):
    memory = parse_spec({"memory": fake.MLP(depth=6)}, MemoryOnly).memory
    assert memory.name == "mlp" and memory.depth == 6
    assert parse_spec({"memory": memory}, MemoryOnly).memory is memory
    with pytest.raises(SpecError) as info:
        parse_spec({"memory": make_config("variant", "mac")}, MemoryOnly)
    assert str(info.value) == "memory: expected a memory_model config, got the config of the variant 'mac'"


def test_bad_option_value_names_path_and_line(registry):
    text = VALID.replace("depth: 3", "depth: 0")
    assert problems(text) == ["spec.yaml:7: model.variant.memory.depth: must be ≥ 1, got 0"]


def test_unknown_keys_are_errors_with_suggestions(registry):
    text = """\
    model:
      variant:
        name: mac
        layres: 3
        memory: {name: mlp, depht: 2, colour: red}
    trainer:
      stpes: 3
    seed: 1
    """
    assert problems(text) == [
        "spec.yaml:4: model.variant.layres: unknown key 'layres'; did you mean 'layers'?",
        "spec.yaml:5: model.variant.memory.depht: unknown key 'depht'; did you mean 'depth'?",
        "spec.yaml:5: model.variant.memory.colour: unknown key 'colour'; "
        "allowed keys: depth, expansion, activation, name",
        "spec.yaml:7: trainer.stpes: unknown key 'stpes'; did you mean 'steps'?",
        "spec.yaml:8: seed: unknown key 'seed'; allowed keys: model, trainer",
    ]


def test_wrong_types_and_literals(registry):
    text = """\
    model:
      variant: {name: mac, layers: abc, memory: {name: mlp, expansion: x, activation: relu}}
    trainer:
      steps: 1.5
      shuffle: maybe
    """
    assert problems(text) == [
        "spec.yaml:2: model.variant.memory.expansion: expected a number, got 'x'",
        "spec.yaml:2: model.variant.memory.activation: expected 'gelu' or 'silu', got 'relu'",
        "spec.yaml:2: model.variant.layers: expected an integer, got 'abc'",
        "spec.yaml:4: trainer.steps: expected an integer, got 1.5",
        "spec.yaml:5: trainer.shuffle: expected true or false, got 'maybe'",
    ]


def test_missing_values_and_sections(registry):
    assert problems("trainer: {steps: 2}\n") == ["spec.yaml: model: required"]
    assert problems("model:\n  extra_memories: [{}]\n") == [
        "spec.yaml:1: model.variant: required",
        "spec.yaml:2: model.extra_memories[0].name: required: the memory_model to use (known: linear, mlp)",
    ]


def test_unknown_component_name_with_suggestion_and_list_index_path(registry):
    text = VALID.replace("- name: linear", "- name: linaer")
    assert problems(text) == [
        f"spec.yaml:9: model.extra_memories[0].name: unknown memory_model 'linaer'; known: linear, mlp. "
        f"Did you mean 'linear'? {HINT}"
    ]
    assert problems("model: {variant: mac}") == [
        "spec.yaml:1: model.variant: expected a mapping {name: <variant>, ...options}, got 'mac'"
    ]


def test_unknown_component_mentions_failed_plugins(registry, fake):
    registry.load_errors.append(fake_load_error())
    assert problems("memory: {name: swiglu}", MemoryOnly) == [
        f"spec.yaml:1: memory.name: unknown memory_model 'swiglu'; known: linear, mlp. {HINT}",
        "note: plugin 'swiglu_memory' (dist titans-swiglu-memory) failed to load: ImportError: boom",
    ]


def fake_load_error():
    from titans_core import LoadError

    return LoadError("swiglu_memory", "titans-swiglu-memory", "ImportError: boom")


def test_invalid_yaml_duplicates_and_top_level_type(registry):
    assert problems("model:\n  variant: [1,\n") == [
        "spec.yaml:3:1: invalid YAML: expected the node content, but found '<stream end>' (while parsing a flow node)"
    ]
    assert problems("model:\n  variant: {name: mac}\n  variant: {name: mac}\n") == [
        "spec.yaml:3: model.variant: duplicate key (first on line 2)"
    ]
    assert problems("- 1\n- 2\n") == ["spec.yaml: expected a mapping, got [1, 2]"]


def test_load_spec_file(tmp_path, registry):
    path = tmp_path / "spec.yaml"
    path.write_text(VALID.replace("steps: 100", "steps: 0"), encoding="utf-8")
    with pytest.raises(SpecError) as info:
        load_spec_file(path, Spec)
    assert str(info.value) == f"{path}:11: trainer.steps: must be ≥ 1, got 0"
    assert load_spec_file(path, Spec, overrides=["trainer.steps=7"]).trainer.steps == 7
    with pytest.raises(SpecError) as info:
        load_spec_file(tmp_path / "missing.yaml", Spec)
    assert str(info.value) == f"spec file not found: {tmp_path / 'missing.yaml'}"
    with pytest.raises(SpecError, match="cannot read spec file .*: Is a directory"):
        load_spec_file(tmp_path, Spec)


def test_overrides_in_parse_spec_are_named_in_errors(registry):
    spec = parse_spec(VALID, Spec, overrides=["model.variant.memory.depth=5", "trainer.lr=0.5"])
    assert (spec.model.variant.memory.depth, spec.trainer.lr) == (5, 0.5)
    assert problems(VALID, overrides=["trainer.steps=0", "model.variant.layers=x"]) == [
        "--set model.variant.layers=x: model.variant.layers: expected an integer, got 'x'",
        "--set trainer.steps=0: trainer.steps: must be ≥ 1, got 0",
    ]


# ------------------------------------------------------------------------- the real example plugin
def test_example_plugin_spec_validates_and_builds(monkeypatch):
    monkeypatch.setenv("TITANS_PLUGINS", "swiglu_memory")
    spec = parse_spec("memory: {name: swiglu, expansion: 3}", MemoryOnly)
    assert type(spec.memory).__name__ == "SwiGLUMemoryConfig" and spec.memory.expansion == 3.0
    memory = get_registry().build(spec.memory)
    assert memory.hidden_width(8) == 24 and memory.channel_axis_ok is False
    assert problems("memory: {name: swiglu, expansion: 0}", MemoryOnly) == [
        "spec.yaml:1: memory.expansion: must be > 0, got 0"
    ]
