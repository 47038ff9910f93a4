"""trainer.carry_memory: the carried state continues the concatenated sequence exactly, no gradient reaches earlier
windows, the streams' layout, resume bit for bit, and the spec's checks."""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx
from titans_train.carry import cache_structure, make_carry_loss, make_carry_loss_and_grads
from titans_train.checkpoint import Checkpoints
from titans_train.data.pipeline import BatchLayout
from titans_train.data.streams import StreamBatches, stream_period, stream_starts
from titans_train.plan import split_params
from titans_train.tasks.scoring import IGNORE_INDEX
from train.conftest import LINEAR_MEMORY, losses, run_cli, toy_spec, write_spec
from variants_utils import tiny

T, B, K = 8, 2, 3  # window, rows, windows


#: layers of each variant: MAL's two layers carry a memory state and a sliding-window cache each (so a carry
#: whose leaves were mixed up between layers fails); LMM's one layer is the memory alone, for the gradient tests;
#: MAC's windows are whole segments (4) from a segment boundary, so they take its segment-by-segment decode.
LAYERS = {"lmm": 1, "mal": 2, "mac": 1}


@functools.cache
def _carried(variant: str):
    """(model pieces, loss function, cache leaves) of a tiny variant, and K windows of one stream per row; shared
    by the tests of this module (nothing here is mutated), so that each jitted function is traced and compiled
    once."""
    model = tiny(variant, layers=LAYERS[variant], chunk=4)
    graphdef, params, rest = split_params(model)
    treedef, leaves = cache_structure(graphdef, params, rest, B)
    loss = jax.jit(make_carry_loss(graphdef, jnp.float32, treedef))
    tokens_BxN = jax.random.randint(jax.random.key(1), (B, K * T + 1), 0, 32)
    windows = [tokens_BxN[:, k * T : k * T + T + 1] for k in range(K)]
    pure = nnx.to_pure_dict(params), nnx.to_pure_dict(rest)
    return model, pure, loss, leaves, tokens_BxN, windows


@pytest.mark.parametrize("variant", ["lmm", "mal", "mac"])
def test_carried_windows_equal_the_concatenated_sequence(variant: str) -> None:
    """Window k continued from the carried state scores exactly the last T positions of windows 1..k run as one
    sequence (the memory state, and for MAL the sliding-window cache, of every layer are carried); from a fresh
    state it does not."""
    model, (params, rest), loss, leaves, tokens_BxN, windows = _carried(variant)
    # one jitted forward pass over windows 1..K: the model is causal, so its logits at window k are those of
    # windows 1..k run as one sequence (one compiled program instead of K eager passes of growing length)
    logits_BxNxV = nnx.jit(lambda m, x: m(x))(model, tokens_BxN[:, : K * T])
    carried = [jnp.zeros(s.shape, s.dtype) for s in leaves]
    for k, rows in enumerate(windows):
        value, carried = loss(params, rest, rows, carried, jnp.asarray(k == 0))
        end = (k + 1) * T
        logits = logits_BxNxV[:, end - T : end]
        want = optax.softmax_cross_entropy_with_integer_labels(logits, tokens_BxN[:, end - T + 1 : end + 1]).mean()
        np.testing.assert_allclose(float(value), float(want), rtol=1e-4)
        if k:
            fresh, _ = loss(params, rest, rows, carried, jnp.asarray(True))
            assert abs(float(fresh) - float(want)) > 1e-3  # the carried state matters


def test_task_examples_continue_the_carried_state_and_score_only_their_targets() -> None:
    """Labelled examples (``B × 2 × T``, targets −100 where not scored): example k continued from the state after
    example k − 1 has the logits of the examples' inputs run as one sequence, and its loss is the mean over its
    scored targets only (the targets of the other positions hold a wrong token, so scoring them would show)."""
    model, (params, rest), loss, leaves, tokens_BxN, _ = _carried("lmm")
    inputs_BxN = tokens_BxN[:, : K * T]
    logits_BxNxV = nnx.jit(lambda m, x: m(x))(model, inputs_BxN)
    answers_BxN = jax.random.randint(jax.random.key(2), inputs_BxN.shape, 0, 32)
    scored_BxN = jax.random.bernoulli(jax.random.key(3), 0.3, inputs_BxN.shape).at[:, ::T].set(True)
    targets_BxN = jnp.where(scored_BxN, answers_BxN, IGNORE_INDEX)
    carried = [jnp.zeros(s.shape, s.dtype) for s in leaves]
    for k in range(K):
        window = slice(k * T, (k + 1) * T)
        rows = jnp.stack([inputs_BxN[:, window], targets_BxN[:, window]], axis=1)
        value, carried = loss(params, rest, rows, carried, jnp.asarray(k == 0))
        ce = optax.softmax_cross_entropy_with_integer_labels(logits_BxNxV[:, window], answers_BxN[:, window])
        want = ce[scored_BxN[:, window]].mean()
        np.testing.assert_allclose(float(value), float(want), rtol=1e-5)
        assert abs(float(want) - float(ce.mean())) > 1e-3  # the unscored positions would change the loss


def test_no_gradient_flows_into_earlier_windows() -> None:
    """The loss of window 2 depends on the carried state, but its gradient with respect to that state is zero,
    and its parameter gradient equals the one with the state as a constant (computed under other parameters)."""
    _, (params, rest), loss, leaves, _, windows = _carried("lmm")
    fresh = [jnp.zeros(s.shape, s.dtype) for s in leaves]
    _, carried = loss(params, rest, windows[0], fresh, jnp.asarray(True))

    def of_carry(c):
        return loss(params, rest, windows[1], c, jnp.asarray(False))[0]

    floating = [i for i, c in enumerate(carried) if jnp.issubdtype(c.dtype, jnp.floating)]

    def of_floating(values):
        c = list(carried)
        for i, v in zip(floating, values, strict=True):
            c[i] = v
        return of_carry(c)

    grads = jax.grad(of_floating)([carried[i] for i in floating])
    assert floating and all(float(jnp.abs(g).max()) == 0.0 for g in grads)
    assert float(of_carry(carried)) != float(of_carry(fresh))

    def through_first(p):  # both windows under p: window 1's state is computed from p too
        _, c = loss(p, rest, windows[0], fresh, jnp.asarray(True))
        return loss(p, rest, windows[1], c, jnp.asarray(False))[0]

    got = jax.grad(through_first)(params)
    want = jax.grad(lambda p: loss(p, rest, windows[1], carried, jnp.asarray(False))[0])(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), got, want)


def test_gradient_accumulation_carries_each_micro_batch() -> None:
    """With two micro-batches of one row each, each carries its own rows: the loss and the new carry are those of
    the rows run one by one (the model treats batch rows independently, so those are the rows of the two-row
    carried loss)."""
    model, (params, rest), loss, leaves, _, windows = _carried("lmm")
    graphdef, _, _ = split_params(model)
    treedef, leaves1 = cache_structure(graphdef, *split_params(model)[1:], 1)
    run = jax.jit(make_carry_loss_and_grads(graphdef, jnp.float32, treedef))
    zero = [jnp.zeros((2, *s.shape), s.dtype) for s in leaves1]
    _, _, carry = run(params, rest, windows[0][:, None], zero, jnp.asarray(True))
    value, _, carry2 = run(params, rest, windows[1][:, None], carry, jnp.asarray(False))
    # the rows one by one: the two-row carried loss is the mean of its rows' losses, its carry their carries
    _, c = loss(params, rest, windows[0], [jnp.zeros(s.shape, s.dtype) for s in leaves], jnp.asarray(True))
    want, c2 = loss(params, rest, windows[1], c, jnp.asarray(False))
    np.testing.assert_allclose(float(value), float(want), rtol=1e-5)
    for got, whole in zip(carry2, c2, strict=True):  # micro-batch r's carry is row r's
        np.testing.assert_allclose(np.asarray(got)[:, 0], np.asarray(whole), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("variant", ["lmm", "mac"])
def test_the_plan_reads_the_cache_structure_from_the_abstract_model(variant: str) -> None:
    """The plan has only the model's shapes (``nnx.eval_shape``); a memory variant's cache is made from M_0, a
    parameter, so the structure must come out of the abstract parameters as it does out of concrete ones (a
    closure over ShapeDtypeStructs failed here, a bug the toy model of the CLI tests did not reach)."""
    abstract = split_params(nnx.eval_shape(lambda: tiny(variant, layers=1, chunk=4)))
    concrete = split_params(tiny(variant, layers=1, chunk=4))
    treedef, leaves = cache_structure(*abstract, B)
    want_treedef, want = cache_structure(*concrete, B)
    assert treedef == want_treedef and leaves
    assert [(x.shape, x.dtype) for x in leaves] == [(x.shape, x.dtype) for x in want]


def test_streams_read_contiguous_regions_and_reset() -> None:
    tokens = np.arange(203)
    layout = BatchLayout(batch_size=4, grad_accum=2, row_lo=0, row_hi=2)
    streams = StreamBatches(tokens, 5, layout)
    assert streams.region == 50 and streams.windows == 9  # (50 − 1) // 5
    first, second = next(streams), next(streams)
    assert first.shape == (2, 2, 6)
    np.testing.assert_array_equal(first[1, 0], np.arange(100, 106))  # global row 2 reads region 2
    np.testing.assert_array_equal(second[1, 0], np.arange(105, 111))  # its next window continues it
    assert streams.get_state() == {"next_window": 2}
    np.testing.assert_array_equal(streams.batch(9), first)  # a pass over the region: the stream starts again
    W, R = stream_period(streams.windows, 4)
    # a stream starts at window k of a pass when k % R == 0: windows 0, 4, 8 of the 9, then the next pass
    assert [bool(stream_starts(s, W, R)) for s in range(10)] == [1, 0, 0, 0, 1, 0, 0, 0, 1, 1]


CARRY = {"steps": 6, "batch_size": 4, "eval_every": 3, "eval_batches": 2, "log_every": 1, "carry_memory": True}


def _spec(run_dir: Path, **trainer) -> dict:
    return toy_spec(
        run_dir,
        data={
            "source": {"name": "python_stdlib", "max_bytes": 60_000},
            "seq_len": 16,
            "val_fraction": 0.1,
            "shuffle": False,
        },
        trainer={**CARRY, **trainer},
        mesh={"num_devices": 1},
        schedule={"warmup_steps": 2, "decay_steps": 6},
    )


def test_a_memory_variant_trains_with_carried_memory(tmp_path: Path, capsys) -> None:
    """The CLI end to end with a neural memory in the carried state (LMM, one layer, a matrix memory)."""
    run_dir = tmp_path / "run"
    spec = _spec(run_dir, steps=2, eval_every=2, carry_reset_every=4)
    spec["model"] = {"name": "lmm", "d_model": 16, "num_layers": 1, "num_heads": 2, "memory": LINEAR_MEMORY}
    spec["checkpoint"] = {"every": 2, "keep": 1}
    result = run_cli(capsys, [str(write_spec(tmp_path / "s.yaml", spec))])
    assert result.code == 0, result.err
    trained = losses(run_dir)
    assert len(trained) == 2 and all(np.isfinite(trained))


def test_resume_mid_stream_is_bit_for_bit(tmp_path: Path, capsys) -> None:
    straight, split, plain = tmp_path / "straight", tmp_path / "split", tmp_path / "plain"
    assert run_cli(capsys, [str(write_spec(tmp_path / "a.yaml", _spec(straight)))]).code == 0
    spec = write_spec(tmp_path / "b.yaml", _spec(split))
    assert run_cli(capsys, [str(spec), "--set", "trainer.steps=3"]).code == 0
    result = run_cli(capsys, [str(spec)])
    assert result.code == 0 and "resumed" in result.out
    assert losses(split) == losses(straight)
    # the carried state is in the checkpoint, and it matters: without it the same windows score differently
    args = ocp.args.Composite(state=ocp.args.StandardRestore())
    restored = Checkpoints(split, read_only=True).manager.restore(3, args=args)
    assert "carry" in restored["state"] and any(np.abs(np.asarray(x)).max() > 0 for x in restored["state"]["carry"])
    assert run_cli(capsys, [str(write_spec(tmp_path / "c.yaml", _spec(plain, carry_reset_every=1)))]).code == 0
    assert losses(plain)[0] == losses(straight)[0] and losses(plain)[1:] != losses(straight)[1:]


def _task_spec(run_dir: Path, **trainer) -> dict:
    return toy_spec(
        run_dir,
        model={"name": "toy", "vocab_size": 16},
        data={"source": {"name": "mqar", "num_kv_pairs": 2, "vocab_size": 16, "num_train": 64}, "seq_len": 16},
        trainer={**CARRY, **trainer},
        mesh={"num_devices": 1},
        sample={"max_new_tokens": 0, "top_k": 8},
    )


def test_task_examples_carry_the_state_and_resume_bit_for_bit(tmp_path: Path, capsys) -> None:
    """carry_memory on a task (MQAR): a run split at step 3 resumes to the same losses, with the carried state in
    the checkpoint; restarting every stream at every example (carry_reset_every 1) is training without carry, so
    only the first step agrees with the carried run."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert run_cli(capsys, [str(write_spec(tmp_path / "a.yaml", _task_spec(straight)))]).code == 0
    spec = write_spec(tmp_path / "b.yaml", _task_spec(split))
    assert run_cli(capsys, [str(spec), "--set", "trainer.steps=3"]).code == 0
    result = run_cli(capsys, [str(spec)])
    assert result.code == 0 and "resumed" in result.out, result.err
    assert losses(split) == losses(straight) and len(losses(straight)) == 6
    args = ocp.args.Composite(state=ocp.args.StandardRestore())
    restored = Checkpoints(split, read_only=True).manager.restore(3, args=args)
    assert any(np.abs(np.asarray(x)).max() > 0 for x in restored["state"]["carry"])
    plain, fresh = tmp_path / "plain", tmp_path / "fresh"
    assert run_cli(capsys, [str(write_spec(tmp_path / "c.yaml", _task_spec(plain, carry_reset_every=1)))]).code == 0
    no_carry = _task_spec(fresh, carry_memory=False)
    assert run_cli(capsys, [str(write_spec(tmp_path / "d.yaml", no_carry))]).code == 0
    np.testing.assert_allclose(losses(plain), losses(fresh), rtol=1e-6)
    assert losses(plain)[0] == losses(straight)[0] and losses(plain)[1:] != losses(straight)[1:]


@pytest.mark.parametrize(
    ("trainer", "data", "mesh", "message"),
    [
        (
            {"carry_reset_every": 2},
            {},
            {"num_devices": 1},
            "trainer.carry_reset_every: applies only with trainer.carry_memory",
        ),
        (
            {"carry_memory": True},
            {"shuffle": True},
            {"num_devices": 1},
            "data.shuffle: must be false with trainer.carry_memory",
        ),
        ({"carry_memory": True, "carry_reset_every": 0}, {}, {"num_devices": 1}, "trainer.carry_reset_every"),
        ({"carry_memory": True}, {}, {}, "trainer.carry_memory: needs a single device"),
        ({"carry_memory": True, "batch_size": 8000}, {}, {"num_devices": 1}, "every batch row reads its own region"),
    ],
)
def test_spec_errors(tmp_path: Path, capsys, trainer: dict, data: dict, mesh: dict, message: str) -> None:
    run_dir = tmp_path / "run"
    spec = toy_spec(run_dir, trainer={"steps": 2, "batch_size": 4, **trainer}, mesh=mesh)
    spec["data"].update(data)
    result = run_cli(capsys, [str(write_spec(tmp_path / "s.yaml", spec))])
    assert result.code == 2 and message in result.err and "Traceback" not in result.err, result.err
    assert result.err.startswith("error") and not run_dir.exists()
