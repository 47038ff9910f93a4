"""Mesh layouts: the same first losses on 1 device and on 8 simulated devices (data, FSDP, tensor, mixed), and
parameters, optimizer state and batches really sharded as the spec says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest
from titans_core import parse_spec
from titans_train.plan import make_plan
from titans_train.spec import TrainSpec
from titans_train.spec_check import SpecLocator
from titans_train.trainer import Trainer
from train.conftest import toy_spec
from train.toy import toy_registered

LAYOUTS = {
    "one-device": {"data": 1, "num_devices": 1},
    "data": {"data": 8},
    "fsdp": {"data": 1, "fsdp": 8},
    "tensor": {"data": 1, "tensor": 8},
    "mixed": {"data": 2, "fsdp": 2, "tensor": 2},
}


def _run(tmp_path: Path, name: str, mesh: dict[str, Any], steps: int = 3) -> Trainer:
    spec_data = toy_spec(
        tmp_path / name, mesh=mesh, trainer={"steps": steps, "eval_every": None}, checkpoint={"every": 100}
    )
    spec = parse_spec(spec_data, TrainSpec)
    trainer = Trainer(make_plan(spec, SpecLocator("<test>", None)), resume=False)
    trainer.result = trainer.run()
    return trainer


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> list[float]:
    with toy_registered():  # module fixtures run before the autouse one
        return _run(tmp_path_factory.mktemp("one"), "one", LAYOUTS["one-device"]).result.losses


def _shard_shape(array: jax.Array) -> tuple[int, ...]:
    return tuple(array.addressable_shards[0].data.shape)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Trainer:
    """The mixed layout's 3-step run, shared by two tests below (read only)."""
    with toy_registered():
        return _run(tmp_path_factory.mktemp("mixed"), "mixed", LAYOUTS["mixed"])


@pytest.mark.parametrize("layout", ["data", "fsdp", "tensor", "mixed"])
def test_same_losses_and_real_sharding(tmp_path: Path, baseline: list[float], layout: str, request) -> None:
    trainer = request.getfixturevalue("mixed") if layout == "mixed" else _run(tmp_path, layout, LAYOUTS[layout])
    assert len(baseline) == 3
    np.testing.assert_allclose(trainer.result.losses, baseline, rtol=0, atol=1e-5)

    sizes = trainer.plan.mesh_shape
    assert trainer.plan.mesh.devices.size == 8
    params, mu = trainer.state["params"], trainer.state["opt"][1][0].mu
    f, t = sizes["fsdp"], sizes["tensor"]
    expected = {  # logical (vocab, embed) → (tensor, fsdp) etc.
        ("embed", "embedding"): (256 // t, 16 // f),
        ("head", "kernel"): (16 // f, 256 // t),
        ("ffn", "up", "kernel"): (16 // f, 32 // t),
        ("ffn", "down", "kernel"): (32 // t, 16 // f),
        ("conv", "kernel_KxC"): (4, 16 // t),
        ("final_norm", "scale"): (16 // f,),
    }
    for path, shard in expected.items():
        leaf, moment = params, mu
        for key in path:
            leaf, moment = leaf[key], moment[key]
        assert _shard_shape(leaf) == shard, path
        assert _shard_shape(moment) == shard, path  # the optimizer state is sharded like its parameter
        assert len(leaf.sharding.device_set) == 8


def test_batches_are_split_over_data_and_fsdp(mixed: Trainer) -> None:
    plan = mixed.plan
    batch = jax.make_array_from_process_local_data(plan.batch_sharding, np.zeros(plan.batch_shape, np.int32))
    assert plan.batch_shape == (1, 8, 17)
    assert _shard_shape(batch) == (1, 2, 17)  # 8 rows over data × fsdp = 4


def test_rules_are_configurable(tmp_path: Path) -> None:
    trainer = _run(tmp_path, "rules", {"data": 1, "tensor": 8, "rules": {"vocab": None, "mlp": None}}, steps=1)
    params = trainer.state["params"]
    assert _shard_shape(params["embed"]["embedding"]) == (256, 16)
    assert _shard_shape(params["ffn"]["up"]["kernel"]) == (16, 32)
    assert _shard_shape(params["conv"]["kernel_KxC"]) == (4, 2)  # heads still → tensor
