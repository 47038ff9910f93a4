"""Load a training spec and report problems that span fields (or need the machine) in the core's error format.

``load_train_spec(path, overrides)`` validates the file with ``titans_core.spec.load_spec_file`` and then runs
:func:`check_static`; :class:`SpecLocator` turns ``(dotted path, message)`` pairs found later (mesh versus
devices,
batch versus data axis, a mesh axis that does not divide a parameter) into ``spec.yaml:LINE: path: message``
lines —
or ``--set mesh.data=3: …`` when the value came from ``--set``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import yaml
from titans_core import SpecError, SpecProblem, load_spec_file
from titans_core.spec_errors import override_origin
from titans_core.yaml_lines import YamlDocument, parse_yaml

from titans_train.resources import counter_problems
from titans_train.spec import TrainSpec

Problem = tuple[str, str]
_INDEX = re.compile(r"\[(\d+)\]")


def split_path(dotted: str) -> tuple[object, ...]:
    """``optimizer.no_decay[1]`` → ``("optimizer", "no_decay", 1)``."""
    out: list[object] = []
    for part in dotted.split(".") if dotted else []:
        name = _INDEX.sub("", part)
        if name:
            out.append(name)
        out.extend(int(i) for i in _INDEX.findall(part))
    return tuple(out)


class SpecLocator:
    """Where each value of a spec came from: a line of the file, or a ``--set`` override."""

    def __init__(self, filename: str, text: str | None, overrides: Sequence[str] = ()):
        self.filename = filename
        try:
            self.doc = parse_yaml(text) if text is not None else YamlDocument(data=None)
        except yaml.YAMLError:
            self.doc = YamlDocument(data=None)
        self.overrides = [(split_path(o.partition("=")[0].strip()), o) for o in overrides]  # in order

    def problem(self, dotted: str, message: str) -> SpecProblem:
        path = split_path(dotted)
        origin = override_origin(path, dict(self.overrides), message)
        if origin is not None:
            return SpecProblem(dotted, message, where=origin)
        return SpecProblem(dotted, message, self.filename, self.doc.line_of(path))

    def error(self, problems: Sequence[Problem]) -> SpecError:
        return SpecError([self.problem(path, message) for path, message in problems])

    def check(self, problems: Sequence[Problem]) -> None:
        """Raise the SpecError of ``problems``, if any."""
        if problems:
            raise self.error(problems)


def check_static(spec: TrainSpec) -> list[Problem]:
    """Problems that involve several fields but no devices."""
    problems: list[Problem] = []
    t = spec.trainer
    if t.batch_size % t.grad_accum:
        problems.append(("trainer.grad_accum", f"{t.grad_accum} does not divide trainer.batch_size = {t.batch_size}"))
    if t.carry_reset_every is not None and not t.carry_memory:
        problems.append(("trainer.carry_reset_every", "applies only with trainer.carry_memory: true"))
    if t.carry_memory and spec.data.shuffle and "shuffle" in spec.data.model_fields_set:
        problems.append(
            ("data.shuffle", "must be false with trainer.carry_memory (each row reads its stream in order)")
        )
    for i, pattern in enumerate(spec.optimizer.no_decay):
        try:
            re.compile(pattern)
        except re.error as exc:
            problems.append((f"optimizer.no_decay[{i}]", f"invalid regular expression {pattern!r}: {exc}"))
    d = spec.distributed
    if d.num_processes is not None and d.process_id is not None and d.process_id >= d.num_processes:
        problems.append(
            (
                "distributed.process_id",
                f"must be < distributed.num_processes = {d.num_processes}, got {d.process_id}",
            )
        )
    if d.coordinator_address is not None and not re.fullmatch(r"\[?[^\s\]]+\]?:\d+", d.coordinator_address):
        problems.append(("distributed.coordinator_address", f"expected HOST:PORT, got {d.coordinator_address!r}"))
    problems.extend(counter_problems(spec))  # step counts within the int32 step counter
    top_k_set = "top_k" in spec.sample.model_fields_set  # the default (40) is clamped to the vocabulary
    if top_k_set and spec.sample.top_k is not None and spec.sample.top_k > spec.vocab_size:
        problems.append(("sample.top_k", f"must be ≤ model.vocab_size = {spec.vocab_size}, got {spec.sample.top_k}"))
    return problems


def load_train_spec(path: str | Path, overrides: Sequence[str] = ()) -> tuple[TrainSpec, SpecLocator]:
    """Validate the spec file ``path`` (after ``overrides``) and its cross-field rules; else SpecError."""
    spec = load_spec_file(path, TrainSpec, overrides=overrides)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        text = None
    locator = SpecLocator(str(path), text, overrides)
    locator.check(check_static(spec))
    return spec, locator
