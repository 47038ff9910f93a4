"""The learning-rate schedule and the weight-decay mask."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from titans_core import get_registry, parse_spec
from titans_train.optim import decay_mask, lr_schedule, param_path
from titans_train.plan import abstract_model
from titans_train.spec import TrainSpec


def _spec(**sections) -> TrainSpec:
    return parse_spec({"model": {"name": "toy"}, **sections}, TrainSpec)


def test_warmup_then_cosine_to_the_floor() -> None:
    spec = _spec(optimizer={"lr": 1.0}, schedule={"warmup_steps": 4, "min_lr_ratio": 0.1}, trainer={"steps": 14})
    lr = [float(lr_schedule(spec)(s)) for s in range(16)]
    np.testing.assert_allclose(lr[:4], [0.25, 0.5, 0.75, 1.0])
    assert lr[4] == pytest.approx(1.0)
    assert lr[9] == pytest.approx(0.55)  # half way through the cosine
    assert lr[14] == pytest.approx(0.1) and lr[15] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lr[4:], lr[5:], strict=False))


def test_decay_steps_decouples_the_schedule_from_trainer_steps() -> None:
    a = _spec(schedule={"warmup_steps": 2, "decay_steps": 10}, trainer={"steps": 5})
    b = _spec(schedule={"warmup_steps": 2, "decay_steps": 10}, trainer={"steps": 50})
    assert [float(lr_schedule(a)(s)) for s in range(12)] == [float(lr_schedule(b)(s)) for s in range(12)]


def _mask(spec: TrainSpec) -> dict[str, bool]:
    from flax import nnx

    _, params, _ = abstract_model(spec)
    mask = decay_mask(nnx.to_pure_dict(params), spec.optimizer.no_decay)
    return {param_path(path): bool(v) for path, v in jax.tree_util.tree_flatten_with_path(mask)[0]}


def test_decay_mask_of_the_toy_model() -> None:
    mask = _mask(_spec())
    assert mask["embed.embedding"] and mask["ffn.gate.kernel"] and mask["head.kernel"] and mask["conv.kernel_KxC"]
    assert not mask["head.bias"] and not mask["norm.scale"] and not mask["conv.bias_C"]
    custom = _mask(_spec(optimizer={"no_decay": ["^embed$", "head"]}))
    assert not custom["embed.embedding"] and not custom["head.kernel"] and custom["ffn.gate.kernel"]


@pytest.mark.skipif("mac" not in get_registry().names("variant"), reason="the mac variant is not registered")
def test_decay_mask_of_mac_excludes_norms_biases_and_gates() -> None:
    mask = _mask(parse_spec({"model": {"name": "mac", "d_model": 32, "num_layers": 1}}, TrainSpec))
    gates = [p for p in mask if any(s.startswith("gate_") or s.endswith("_gate") for s in p.split("."))]
    assert gates and not any(mask[p] for p in gates)
    assert not any(mask[p] for p in mask if "norm" in p)
    assert mask["blocks.0.ffn.gate.kernel"] and mask["embed.embedding"]
