"""The synthetic tasks as data sources (``mqar``, ``niah``): labelled examples, their checks, their batches,
the masked loss of the training step, and a training run on MQAR end to end."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from titans_core import SpecError, get_registry, make_config
from titans_train.data import (
    BatchLayout,
    ExampleSet,
    LabelledTask,
    TaskSplits,
    TrainBatches,
    eval_batches,
    split_task,
)
from titans_train.data.examples import example_rng, shift_with_mask
from titans_train.data.pipeline import as_rows
from titans_train.errors import DataError
from titans_train.spec import TrainSpec
from titans_train.steps import inputs_targets, make_forward, make_loss
from titans_train.tasks.niah import MAX_SENTENCE_LENGTH, VALUE_LENGTHS, niah_min_context_length
from titans_train.tasks.scoring import IGNORE_INDEX
from train.conftest import metrics, run_cli, toy_spec, write_spec
from train.toy import ToyConfig, ToyLM

MQAR = {"num_kv_pairs": 2, "vocab_size": 16, "num_train": 64, "num_val": 16}
NIAH_MIN = niah_min_context_length("number")


def _task(name: str, **options) -> LabelledTask:
    task = get_registry().build(make_config("data_source", name, **options)).load()
    assert isinstance(task, LabelledTask)
    return task


def _text(tokens: np.ndarray) -> str:
    return np.asarray(tokens, dtype=np.uint8).tobytes().decode("ascii")


# -------------------------------------------------------------------------------------------- examples
def test_example_rng_depends_on_seed_split_and_index() -> None:
    draw = lambda *key: example_rng(*key).integers(0, 2**62, size=4).tolist()  # noqa: E731
    assert draw(0, "train", 3) == draw(0, "train", 3)
    others = [draw(1, "train", 3), draw(0, "val", 3), draw(0, "train", 4)]
    assert all(o != draw(0, "train", 3) for o in others)


def test_shift_with_mask() -> None:
    tokens = np.array([5, 6, 7, 8, 9])
    mask = np.array([False, False, True, True, False])
    out = shift_with_mask(tokens, mask)
    assert out.dtype == np.int32 and out.shape == (2, 4)
    np.testing.assert_array_equal(out[0], [5, 6, 7, 8])
    np.testing.assert_array_equal(out[1], [IGNORE_INDEX, 7, 8, IGNORE_INDEX])


# ------------------------------------------------------------------------------------------------ mqar
def test_task_sources_are_registered() -> None:
    assert {"mqar", "niah"} <= set(get_registry().names("data_source"))


@pytest.mark.parametrize("random_non_queries", [True, False])
def test_mqar_example_targets_are_the_values_of_the_queried_keys(random_non_queries: bool) -> None:
    k, V, T = 3, 20, 24
    task = _task("mqar", num_kv_pairs=k, vocab_size=V, random_non_queries=random_non_queries)
    assert task.vocab_size == V and not task.byte_level
    for index in range(10):
        ex = task.example("train", index, T)
        assert ex.shape == (2, T) and ex.dtype == np.int32
        inputs, targets = ex
        keys, values = inputs[0 : 2 * k : 2], inputs[1 : 2 * k : 2]
        assert len(set(keys.tolist())) == k and np.all((keys >= 1) & (keys < V // 2))
        assert len(set(values.tolist())) == k and np.all((values >= V // 2) & (values < V))
        scored = np.flatnonzero(targets != IGNORE_INDEX)
        assert scored.size == k  # one target per query, one query per key
        assert np.all(scored >= 2 * k)  # the queries come after the context
        assert sorted(inputs[scored].tolist()) == sorted(keys.tolist())  # each key queried once
        pairs = dict(zip(keys.tolist(), values.tolist(), strict=True))
        for t in scored:
            assert targets[t] == pairs[int(inputs[t])]
        if not random_non_queries:
            filler = np.ones(T, bool)
            filler[: 2 * k] = False
            filler[scored] = False
            assert np.all(inputs[filler] == 0)
        assert np.all((inputs >= 0) & (inputs < V))


def test_mqar_examples_are_deterministic_and_independent() -> None:
    a, b = _task("mqar", **MQAR), _task("mqar", **MQAR)
    for split in ("train", "val"):
        for index in (0, 5, 63):
            np.testing.assert_array_equal(a.example(split, index, 16), b.example(split, index, 16))
    first = a.example("train", 0, 16)
    assert not np.array_equal(first, a.example("val", 0, 16))
    assert not np.array_equal(first, a.example("train", 1, 16))
    assert not np.array_equal(first, _task("mqar", **{**MQAR, "seed": 1}).example("train", 0, 16))
    distinct = {a.example("train", i, 16).tobytes() for i in range(20)}
    assert len(distinct) == 20


def test_mqar_from_a_training_spec() -> None:
    spec = TrainSpec.model_validate(
        {
            "model": {"name": "toy", "vocab_size": 16},
            "data": {"source": {"name": "mqar", **MQAR}, "seq_len": 16},
        }
    )
    task = get_registry().build(spec.data.source).load()
    assert isinstance(task, LabelledTask)
    assert (task.num_train, task.num_val, task.vocab_size) == (64, 16, 16)
    assert "mqar: 2 key-value pairs, vocabulary 16" in task.description
    splits = split_task(task, seq_len=spec.data.seq_len, vocab_size=spec.vocab_size)
    assert isinstance(splits, TaskSplits) and not splits.byte_level
    assert len(splits.train) == 64 and len(splits.val) == 16 and splits.train.row_shape == (2, 16)
    np.testing.assert_array_equal(splits.val[3], task.example("val", 3, 16))
    np.testing.assert_array_equal(splits.train[7], task.example("train", 7, 16))


# ------------------------------------------------------------------------------------------------ niah
def _niah_parts(ex: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(the padded text of seq_len + 1 bytes, scored positions, text length L) of an S-NIAH example."""
    inputs, targets = ex
    scored = np.flatnonzero((targets != IGNORE_INDEX) & (targets != 0))  # 0: the end-of-answer target
    length = int(scored[-1]) + 2  # the last answer byte text[L - 1] is the target of position L - 2
    last = targets[-1] if targets[-1] != IGNORE_INDEX else 0  # text[seq_len]: only a target holds it
    return np.append(inputs, last), scored, length


@pytest.mark.parametrize("value_kind", ["number", "uuid"])
def test_niah_targets_are_the_answer_bytes(value_kind: str) -> None:
    T = niah_min_context_length(value_kind) + 60
    task = _task("niah", value_kind=value_kind, num_train=8, num_val=8)
    assert task.byte_level and task.vocab_size == 256
    for index in range(4):
        ex = task.example("train", index, T)
        assert ex.shape == (2, T) and ex.dtype == np.int32
        inputs, targets = ex
        padded, scored, length = _niah_parts(ex)
        n = VALUE_LENGTHS[value_kind]
        assert scored.size == n and np.array_equal(scored, np.arange(scored[0], scored[0] + n))
        assert T + 1 - MAX_SENTENCE_LENGTH <= length <= T + 1  # seq_len + 1 bytes, less one sentence at most
        # inputs: text[:-1] right-padded with 0; targets: text[t + 1] on the answer bytes only
        assert np.all(padded[length:] == 0) and np.all(padded[:length] > 0)
        np.testing.assert_array_equal(targets[scored], padded[scored + 1])
        # after the answer, the first padding byte is the end-of-answer target (when the text leaves room)
        ends = np.flatnonzero(targets == 0)
        if length < T + 1:
            assert ends.tolist() == [length - 1]
        else:
            assert ends.size == 0
        text = _text(padded[:length])
        prompt, answer = text[: scored[0] + 1], _text(targets[scored])
        assert text == prompt + answer and prompt.endswith(" mentioned in the provided text is: ")
        if value_kind == "number":
            assert re.fullmatch(r"[1-9]\d{6}", answer)
        else:
            assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", answer)
        key = re.search(rf"What is the special magic {value_kind} for (\S+) mentioned", prompt).group(1)
        needle = f"One of the special magic {value_kind}s for {key} is: {answer}."
        decoded_inputs = _text(inputs[: min(length, T)])
        assert decoded_inputs.count(needle) == 1 and text.count(answer) == 2  # in the needle, then the answer


def test_niah_examples_are_deterministic_and_split() -> None:
    a, b = _task("niah", num_train=8, num_val=8), _task("niah", num_train=8, num_val=8)
    T = NIAH_MIN + 40
    np.testing.assert_array_equal(a.example("val", 2, T), b.example("val", 2, T))
    assert not np.array_equal(a.example("train", 2, T), a.example("val", 2, T))
    assert not np.array_equal(a.example("train", 2, T), a.example("train", 3, T))


def test_niah_min_length_varies_the_length() -> None:
    T = 511
    task = _task("niah", min_length=NIAH_MIN, num_train=30, num_val=8)
    lengths = [_niah_parts(task.example("train", i, T))[2] for i in range(30)]
    assert all(NIAH_MIN - MAX_SENTENCE_LENGTH <= n <= T + 1 for n in lengths), lengths
    assert min(lengths) < NIAH_MIN + 80 and max(lengths) > T + 1 - 80  # uniform over [253, 512]
    assert len(set(lengths)) > 15
    fixed = _task("niah", num_train=30, num_val=8)
    assert all(_niah_parts(fixed.example("train", i, T))[2] >= T + 1 - MAX_SENTENCE_LENGTH for i in range(10))


def test_niah_config_errors() -> None:
    with pytest.raises(SpecError, match=f"shorter than an S-NIAH example \\({NIAH_MIN} bytes"):
        make_config("data_source", "niah", min_length=NIAH_MIN - 1)
    uuid_min = niah_min_context_length("uuid")
    with pytest.raises(SpecError, match=f"\\({uuid_min} bytes for value_kind uuid"):
        make_config("data_source", "niah", value_kind="uuid", min_length=uuid_min - 1)
    with pytest.raises(SpecError, match="value_kind must be one of number, uuid"):
        make_config("data_source", "niah", value_kind="word")
    assert make_config("data_source", "niah", min_length=NIAH_MIN).min_length == NIAH_MIN


# ------------------------------------------------------------------------------------------- checks
def test_split_task_errors() -> None:
    with pytest.raises(DataError, match=r"data.source \(mqar\): seq_len=7 is too short for num_kv_pairs=2"):
        split_task(_task("mqar", **MQAR), seq_len=7, vocab_size=256)
    split_task(_task("mqar", **MQAR), seq_len=8, vocab_size=16)  # the shortest possible, exact vocabulary
    with pytest.raises(DataError, match=r"vocab_size=6 is too small for num_kv_pairs=3"):
        split_task(_task("mqar", num_kv_pairs=3, vocab_size=6), seq_len=32, vocab_size=256)
    with pytest.raises(DataError, match=r"token ids up to 15, outside the model's vocabulary \(model.vocab_size = 8"):
        split_task(_task("mqar", **MQAR), seq_len=16, vocab_size=8)
    niah = _task("niah")
    with pytest.raises(DataError, match=f"data.seq_len {NIAH_MIN - 2} is too short for S-NIAH"):
        split_task(niah, seq_len=NIAH_MIN - 2, vocab_size=256)
    assert len(split_task(niah, seq_len=NIAH_MIN - 1, vocab_size=256).val) == niah.num_val
    with pytest.raises(DataError, match="outside the model's vocabulary"):
        split_task(niah, seq_len=NIAH_MIN, vocab_size=128)
    long = _task("niah", min_length=300)
    with pytest.raises(DataError, match="min_length 300 is longer than data.seq_len \\+ 1"):
        split_task(long, seq_len=298, vocab_size=256)


def test_task_too_short_is_one_clear_cli_error(tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "run"
    spec = toy_spec(run_dir, data={"source": {"name": "niah"}, "seq_len": 64})
    result = run_cli(capsys, [str(write_spec(tmp_path / "spec.yaml", spec))])
    assert result.code == 2 and "Traceback" not in result.err
    errors = [line for line in result.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "data.seq_len 64 is too short for S-NIAH" in errors[0], result.err
    assert not run_dir.exists()


# ------------------------------------------------------------------------------------------- batches
def _examples(split: str = "train") -> ExampleSet:
    return getattr(split_task(_task("mqar", **MQAR), seq_len=16, vocab_size=16), split)


def test_example_set_gather_and_as_rows() -> None:
    rows = _examples()
    assert as_rows(rows, 16) is rows and len(rows) == 64
    got = rows.gather(np.array([[3, 1], [0, 63]]))
    assert got.shape == (2, 2, 2, 16) and got.dtype == np.int32
    np.testing.assert_array_equal(got[1, 1], rows[63])
    np.testing.assert_array_equal(got[0, 0], rows.task.example("train", 3, 16))


def test_train_batches_of_examples() -> None:
    rows = _examples()
    lookup = {rows[i].tobytes(): i for i in range(len(rows))}
    assert len(lookup) == 64
    batches = TrainBatches(rows, 16, BatchLayout(8, 2, 0, 4), seed=0, shuffle=True)
    seen = []
    for _ in range(8):  # one epoch of 64 examples
        batch = next(batches)
        assert batch.shape == (2, 4, 2, 16) and batch.dtype == np.int32
        seen += [lookup[row.tobytes()] for row in batch.reshape(-1, 2, 16)]
    assert sorted(seen) == list(range(64)) and seen != sorted(seen)  # a permutation, shuffled

    whole = TrainBatches(rows, 16, BatchLayout(8, 2, 0, 4), seed=0, shuffle=True)
    halves = [TrainBatches(rows, 16, BatchLayout(8, 2, lo, lo + 2), seed=0, shuffle=True) for lo in (0, 2)]
    for _ in range(3):
        np.testing.assert_array_equal(np.concatenate([next(h) for h in halves], axis=1), next(whole))


def test_train_batches_of_examples_resume_exactly() -> None:
    layout = BatchLayout(4, 1, 0, 4)
    batches = TrainBatches(_examples(), 16, layout, seed=3, shuffle=True)
    for _ in range(3):
        next(batches)
    state = batches.get_state()
    expected = [next(batches) for _ in range(4)]
    fresh = TrainBatches(_examples(), 16, layout, seed=3, shuffle=True)
    fresh.set_state(state)
    assert state == {"next_index": 3}
    assert all(np.array_equal(a, next(fresh)) for a in expected)
    other = TrainBatches(_examples(), 16, layout, seed=4, shuffle=True)
    assert not all(np.array_equal(a, next(other)) for a in expected)


def test_eval_batches_of_examples() -> None:
    val = _examples("val")
    batches = eval_batches(val, 16, BatchLayout(8, 2, 0, 4), max_batches=5)
    assert len(batches) == 2  # 16 validation examples: 2 batches of 8
    assert all(b.shape == (2, 4, 2, 16) and b.dtype == np.int32 for b in batches)
    np.testing.assert_array_equal(np.concatenate(batches).reshape(16, 2, 16), val.gather(np.arange(16)))
    few = ExampleSet(val.task, "val", 16, 3)
    (wrapped,) = eval_batches(few, 16, BatchLayout(4, 1, 0, 4), max_batches=5)
    np.testing.assert_array_equal(wrapped[0], val.gather(np.array([0, 1, 2, 0])))


# ------------------------------------------------------------------------------------------------ loss
V = 16


@pytest.fixture(scope="module")
def toy_model():
    model = ToyLM(ToyConfig(vocab_size=V, d_model=16, hidden=32), rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return model, graphdef, params, rest


#: the model's logits as one compiled program per input shape (not op by op)
_apply = nnx.jit(lambda model, tokens: model(tokens))


def _manual_ce(model: ToyLM, inputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Cross-entropy of every position (float64, numpy); ignored targets give NaN."""
    logits = np.asarray(_apply(model, jnp.asarray(inputs)), dtype=np.float64)
    lse = np.log(np.sum(np.exp(logits - logits.max(-1, keepdims=True)), -1)) + logits.max(-1)
    safe = np.where(targets == IGNORE_INDEX, 0, targets)
    picked = np.take_along_axis(logits, safe[..., None], -1)[..., 0]
    return np.where(targets == IGNORE_INDEX, np.nan, lse - picked)


def _labelled_batch(B: int = 4, T: int = 12) -> np.ndarray:
    rng = np.random.default_rng(0)
    inputs = rng.integers(0, V, (B, T))
    targets = np.full((B, T), IGNORE_INDEX)
    scored = rng.random((B, T)) < 0.3
    scored[0, 0] = True
    targets[scored] = rng.integers(0, V, int(scored.sum()))
    return np.stack([inputs, targets], axis=1).astype(np.int32)  # B × 2 × T


def test_inputs_targets_by_rank() -> None:
    rows = _labelled_batch()
    inputs, targets = inputs_targets(jnp.asarray(rows))
    np.testing.assert_array_equal(inputs, rows[:, 0])
    np.testing.assert_array_equal(targets, rows[:, 1])
    windows = np.arange(30).reshape(3, 10)
    inputs, targets = inputs_targets(jnp.asarray(windows))
    np.testing.assert_array_equal(inputs, windows[:, :-1])
    np.testing.assert_array_equal(targets, windows[:, 1:])


def test_loss_is_the_mean_over_scored_targets(toy_model) -> None:
    model, graphdef, params, rest = toy_model
    loss_fn = jax.jit(make_loss(graphdef, jnp.float32))  # one compiled program for both batches (not op by op)
    rows = _labelled_batch()
    ce = _manual_ce(model, rows[:, 0], rows[:, 1])
    scored = rows[:, 1] != IGNORE_INDEX
    assert 1 < scored.sum() < scored.size
    expected = np.nanmean(ce)
    got = float(loss_fn(params, rest, jnp.asarray(rows)))
    assert got == pytest.approx(expected, rel=1e-5)
    assert got != pytest.approx(float(np.mean(_manual_ce(model, rows[:, 0], np.where(scored, rows[:, 1], 0)))))

    # scoring one more position: the mean over n + 1 targets
    b, t = map(int, np.argwhere(~scored)[0])
    more = rows.copy()
    more[b, 1, t] = 3
    extra = _manual_ce(model, more[:, 0], more[:, 1])[b, t]
    expected_more = (np.nansum(ce) + extra) / (scored.sum() + 1)
    got_more = float(loss_fn(params, rest, jnp.asarray(more)))
    assert got_more != got and got_more == pytest.approx(expected_more, rel=1e-5)


def test_forward_correct_and_scored(toy_model) -> None:
    model, graphdef, params, rest = toy_model
    rows = _labelled_batch()
    logits = np.asarray(_apply(model, jnp.asarray(rows[:, 0])))
    rows[1, 1, 2] = int(np.argmax(logits[1, 2]))  # one certainly correct target
    ce, correct, scored = make_forward(graphdef, jnp.float32)(params, rest, jnp.asarray(rows))
    assert ce.shape == correct.shape == scored.shape == (4, 12)
    np.testing.assert_array_equal(scored, rows[:, 1] != IGNORE_INDEX)
    mask = np.asarray(scored)
    np.testing.assert_array_equal(np.asarray(correct)[mask], (np.argmax(logits, -1) == rows[:, 1])[mask])
    assert bool(correct[1, 2])


def test_batch_without_targets_has_loss_zero_and_zero_gradients(toy_model) -> None:
    _, graphdef, params, rest = toy_model
    rows = _labelled_batch()
    rows[:, 1] = IGNORE_INDEX
    loss_and_grads = jax.jit(jax.value_and_grad(make_loss(graphdef, jnp.float32)))  # one program for both batches
    loss, grads = loss_and_grads(params, rest, jnp.asarray(rows))
    assert float(loss) == 0.0
    leaves = jax.tree.leaves(grads)
    assert leaves and all(bool(jnp.all(g == 0)) for g in leaves)
    _, some = loss_and_grads(params, rest, jnp.asarray(_labelled_batch()))
    assert any(bool(jnp.any(g != 0)) for g in jax.tree.leaves(some))


def test_window_loss_is_the_plain_mean_and_matches_fully_scored_examples(toy_model) -> None:
    model, graphdef, params, rest = toy_model
    loss_fn = jax.jit(make_loss(graphdef, jnp.float32))
    windows = np.random.default_rng(1).integers(0, V, (3, 11)).astype(np.int32)  # B × (T + 1)
    expected = np.mean(_manual_ce(model, windows[:, :-1], windows[:, 1:]))
    got = float(loss_fn(params, rest, jnp.asarray(windows)))
    assert got == pytest.approx(expected, rel=1e-5)
    labelled = np.stack([windows[:, :-1], windows[:, 1:]], axis=1)  # every target scored
    assert float(loss_fn(params, rest, jnp.asarray(labelled))) == pytest.approx(got, rel=1e-6)


# --------------------------------------------------------------------------------------------- training
def test_training_on_mqar_end_to_end(tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "run"
    spec = toy_spec(
        run_dir,
        model={"name": "toy", "vocab_size": 16},
        data={"source": {"name": "mqar", **MQAR}, "seq_len": 16},
        sample={"max_new_tokens": 0, "top_k": 8},  # top_k must fit the vocabulary of 16
    )
    result = run_cli(capsys, [str(write_spec(tmp_path / "spec.yaml", spec))])
    assert result.code == 0, result.err
    facts = json.loads((run_dir / "run.json").read_text())
    assert facts["train_examples"] == 64 and facts["val_examples"] == 16
    assert "train_tokens" not in facts and facts["byte_level"] is False
    assert facts["data"].startswith("mqar: 2 key-value pairs")
    train = metrics(run_dir)
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6]
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in train)
    evals = metrics(run_dir, "eval")
    assert [r["step"] for r in evals] == [3, 6]
    for record in evals:
        assert math.isfinite(record["loss"]) and record["loss"] > 0
        assert record["bpt"] == pytest.approx(record["loss"] / math.log(2))
        assert 0.0 <= record["accuracy"] <= 1.0
        # 2 batches × 8 examples × 2 scored targets: the accuracy counts the 16 targets of each batch only
        assert record["accuracy"] * 32 == pytest.approx(round(record["accuracy"] * 32), abs=1e-5)
    assert "accuracy" in result.out and "eval step 6: loss" in result.out
