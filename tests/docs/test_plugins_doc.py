"""docs/plugins.md cannot rot: its ``python`` blocks run, in order, in one namespace (``py`` blocks are
fragments and are not run). They define a memory model, an objective and an update rule, register them, build
a NeuralMemory with them and run the author-side checks."""

from __future__ import annotations

import re
from pathlib import Path

from titans_core import ComponentRef, SpecModel, get_registry, parse_spec, reset_registry

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "plugins.md"
SWIGLU_README = ROOT / "plugins" / "titans-swiglu-memory" / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
MODEL_YAML = re.compile(r"^```yaml\n(model:\n.*?)^```", re.S | re.M)


class ModelOnly(SpecModel):
    """The ``model`` section of a training spec."""

    model: ComponentRef("variant")  # type: ignore[valid-type]


def python_blocks() -> list[str]:
    return BLOCK.findall(DOC.read_text(encoding="utf-8"))


def test_the_guide_has_runnable_walkthroughs():
    blocks = python_blocks()
    assert len(blocks) >= 6
    text = "\n".join(blocks)
    for needle in ("register_components", "check_objective", "check_update_rule", "class ChunkedGD", "parts.layer"):
        assert needle in text


def test_the_python_blocks_of_the_guide_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the spec-file example reads spec.yaml from the working directory
    (tmp_path / "spec.yaml").write_text("memory:\n  name: mlp\n  depth: 2\n", encoding="utf-8")
    namespace: dict[str, object] = {"__name__": "plugins_doc"}
    try:
        for number, block in enumerate(python_blocks(), start=1):
            code = compile(block, f"{DOC.name} python block {number}", "exec", dont_inherit=True)
            exec(code, namespace)  # noqa: S102 — the blocks run as a reader would run them
    finally:
        reset_registry()
    registry = namespace["registry"]
    assert "logcosh" in registry.names("objective") and "plain_gd" in registry.names("update_rule")  # type: ignore
    assert registry.get("update_rule", "chunked_gd").description  # type: ignore[attr-defined]
    reset_registry(registry)  # type: ignore[arg-type]
    try:  # the guide's spec example validates against the components it registered
        (text,) = MODEL_YAML.findall(DOC.read_text(encoding="utf-8"))
        memory = parse_spec(text, ModelOnly, filename="plugins.md").model.memory
        assert (memory.model.name, memory.objective.name, memory.rule.name) == ("tanh", "logcosh", "plain_gd")
    finally:
        reset_registry()


def test_the_swiglu_readme_spec_validates(monkeypatch):
    monkeypatch.setenv("TITANS_PLUGINS", "titans-memory,titans-attention,swiglu_memory")
    reset_registry()
    try:
        (text,) = MODEL_YAML.findall(SWIGLU_README.read_text(encoding="utf-8"))
        model = parse_spec(text, ModelOnly, filename="README.md").model
        assert model.memory.model.name == "swiglu" and model.memory.model.expansion == 3
        assert get_registry().load_errors == []
    finally:
        reset_registry()
