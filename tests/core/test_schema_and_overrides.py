"""JSON schema export (checked with a tiny JSON-schema validator) and dotted overrides."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import Field
from titans_core import (
    ComponentConfig,
    ComponentRef,
    SpecError,
    SpecModel,
    apply_overrides,
    parse_spec,
    spec_json_schema,
)
from titans_core.spec import kind_json_schema


class TrainerSpec(SpecModel):
    steps: int = Field(10, ge=1, description="optimizer steps")


class Spec(SpecModel):
    variant: ComponentRef("variant")
    memories: list[ComponentRef("memory_model")] = []
    trainer: TrainerSpec = TrainerSpec()


VALID = {
    "variant": {"name": "mac", "layers": 3, "memory": {"name": "mlp", "depth": 2, "activation": "silu"}},
    "memories": [{"name": "linear"}, {"name": "mlp", "expansion": 0.5}],
    "trainer": {"steps": 5},
}


def check(schema: dict[str, Any], value: Any, root: dict[str, Any] | None = None) -> list[str]:
    """Violations of ``value`` against the JSON-schema subset that pydantic emits here (empty: valid)."""
    root = root or schema
    if "$ref" in schema:
        return check(root["$defs"][schema["$ref"].split("/")[-1]], value, root)
    if "anyOf" in schema:
        return [] if any(not check(s, value, root) for s in schema["anyOf"]) else [f"{value!r} matches no anyOf"]
    if "oneOf" in schema:
        matching = [s for s in schema["oneOf"] if not check(s, value, root)]
        if len(matching) == 1:
            return []
        mapping = schema.get("discriminator", {}).get("mapping", {})
        if isinstance(value, dict) and value.get("name") in mapping:  # explain via the selected option
            return check({"$ref": mapping[value["name"]]}, value, root)
        return [f"{value!r} matches {len(matching)} of oneOf"]
    errors: list[str] = []
    types = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}
    types |= {"integer": int, "number": (int, float)}
    expected = schema.get("type")
    is_bool_as_number = expected in ("integer", "number") and isinstance(value, bool)
    if expected and (not isinstance(value, types[expected]) or is_bool_as_number):
        return [f"{value!r} is not {expected}"]
    if "const" in schema and value != schema["const"]:
        errors.append(f"{value!r} != {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{value!r} not in {schema['enum']}")
    if "minimum" in schema and value < schema["minimum"]:
        errors.append(f"{value!r} < {schema['minimum']}")
    if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        errors.append(f"{value!r} <= {schema['exclusiveMinimum']}")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        errors += [f"missing {key!r}" for key in schema.get("required", []) if key not in value]
        for key, item in value.items():
            if key in properties:
                errors += check(properties[key], item, root)
            elif schema.get("additionalProperties") is False:
                errors.append(f"unexpected {key!r}")
    if isinstance(value, list) and "items" in schema:
        for item in value:
            errors += check(schema["items"], item, root)
    return errors


def test_json_schema_describes_components_and_accepts_exactly_valid_specs(registry):
    schema = spec_json_schema(Spec)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    variant = schema["properties"]["variant"]
    assert variant["discriminator"]["propertyName"] == "name"
    mlp = schema["$defs"]["memory_model_mlp"]
    assert list(mlp["properties"])[0] == "name" and mlp["required"] == ["name"]
    assert mlp["properties"]["name"]["const"] == "mlp"
    assert mlp["properties"]["depth"] == {
        "default": 2,
        "description": "number of layers",
        "minimum": 1,
        "title": "Depth",
        "type": "integer",
    }
    nested = schema["$defs"]["variant_mac"]["properties"]["memory"]
    assert nested["default"] == {"name": "mlp", "depth": 3}
    assert sorted(nested["discriminator"]["mapping"]) == ["linear", "mlp"]

    assert check(schema, VALID) == []
    spec = parse_spec(VALID, Spec)
    assert check(schema, spec.model_dump(mode="json")) == []
    assert parse_spec(spec.model_dump(), Spec) == spec
    # the schema rejects what validation rejects
    assert check(schema, {**VALID, "variant": {"name": "mac", "layers": 0}}) == ["0 < 1"]
    assert check(schema, {**VALID, "trainer": {"stpes": 1}}) == ["unexpected 'stpes'"]
    assert check(schema, {**VALID, "memories": [{"name": "mpl"}]}) == ["{'name': 'mpl'} matches 0 of oneOf"]
    assert check(schema, {"memories": []}) == ["missing 'variant'"]


def test_json_schema_follows_the_registry(registry, fake):
    registry.register("memory_model", "extra", fake.Linear, fake.build)
    assert [o["$ref"] for o in kind_json_schema("memory_model")["oneOf"]] == [
        "#/$defs/memory_model_extra",
        "#/$defs/memory_model_linear",
        "#/$defs/memory_model_mlp",
    ]
    assert kind_json_schema("objective") == {"not": {}, "description": "no objective is registered"}


class Wrapper(ComponentConfig):
    """A component that may contain a component of its own kind."""

    inner: ComponentRef("wrapper") | None = None


def test_json_schema_of_a_component_nested_in_itself(registry, fake):
    registry.register("wrapper", "box", Wrapper, fake.build)
    schema = kind_json_schema("wrapper")
    assert schema["oneOf"] == [{"$ref": "#/$defs/wrapper_box"}]
    value = {"name": "box", "inner": {"name": "box", "inner": {"name": "box"}}}
    assert check(schema, value) == []
    assert check(schema, {"name": "box", "inner": {"name": "box", "x": 1}}) != []
    assert parse_spec({"w": value}, type("W", (SpecModel,), {"__annotations__": {"w": ComponentRef("wrapper")}}))


# ------------------------------------------------------------------------------------------------ overrides
def test_apply_overrides_sets_nested_values_parsed_as_yaml():
    data = {"trainer": {"steps": 1}, "layers": [{"width": 1}, {"width": 2}]}
    result = apply_overrides(
        data,
        [
            "trainer.steps=100",
            "model.memory.depth=3",
            "layers[1].width=8",
            "tags=[a, b]",
            "flag=true",
            "s='3'",
            "x=",
        ],
    )
    assert result == {
        "trainer": {"steps": 100},
        "model": {"memory": {"depth": 3}},
        "layers": [{"width": 1}, {"width": 8}],
        "tags": ["a", "b"],
        "flag": True,
        "s": "3",
        "x": None,
    }
    assert data == {"trainer": {"steps": 1}, "layers": [{"width": 1}, {"width": 2}]}  # not mutated


def test_malformed_overrides_are_spec_errors_one_line_each():
    with pytest.raises(SpecError) as info:
        apply_overrides(
            {"trainer": {"steps": 1}, "layers": [1]},
            ["trainer.steps", "=3", "a..b=1", "trainer.steps.x=1", "layers[3]=1", "a=[1", "trainer[0]=1"],
        )
    assert str(info.value).splitlines() == [
        "--set trainer.steps: expected KEY.PATH=VALUE, e.g. trainer.steps=100",
        "--set =3: expected KEY.PATH=VALUE, e.g. trainer.steps=100",
        "--set a..b=1: bad key path 'a..b': use dotted keys and [i] for list items",
        "--set trainer.steps.x=1: trainer.steps is 1, not a mapping",
        "--set layers[3]=1: layers[3]: index out of range (the list has 1 items)",
        "--set a=[1: invalid YAML value '[1': expected ',' or ']', but got '<stream end>'",
        '--set trainer[0]=1: trainer is {"steps": 1}, not a list',
    ]
