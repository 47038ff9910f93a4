"""The ``attention`` kind: registered components, their contract, and the dispatch between the blocked reference and
``jax.nn.dot_product_attention`` (the GPU path; its ``xla`` implementation runs on CPU and must equal the reference)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from titans_attention.attention import SegmentAttention, SlidingWindowAttention
from titans_attention.attention_fast import choose
from titans_core import KINDS, ComponentConfig, Registry, get_registry
from titans_core.contracts import ContractError
from titans_core.spec import make_config

D, H = 16, 2


def build(name: str, *, num_persistent: int = 0, seed: int = 0, **options):
    return get_registry().build(
        make_config("attention", name, **options),
        d_model=D,
        num_heads=H,
        num_persistent=num_persistent,
        rope_base=10_000.0,
        rngs=nnx.Rngs(seed),
    )


def test_attention_is_a_core_kind_with_three_built_ins():
    assert "attention" in KINDS
    assert set(get_registry().names("attention")) >= {"sliding_window", "segment", "global"}
    assert {c.dist for c in get_registry().components("attention")} == {"titans-attention"}


def test_the_built_ins_are_the_modules_with_their_options():
    swa = build("sliding_window", window=3, num_persistent=2)
    seg = build("segment", segment=5)
    full = build("global", max_len=64)
    assert isinstance(swa, SlidingWindowAttention) and swa.window == 3 and swa.num_persistent == 2
    assert isinstance(seg, SegmentAttention) and seg.segment == 5
    assert isinstance(full, SlidingWindowAttention) and full.window == 64


def test_global_attention_is_full_causal_attention(oracle):
    T = 9
    x = jax.random.normal(jax.random.key(1), (2, T, D))
    full = build("global", max_len=T)
    # jitted (one program each, not op by op): the projections, the module's output, and the output projection
    (q, k, v), y = nnx.jit(lambda m, x: (m._qkv(x, jnp.broadcast_to(jnp.arange(T), (2, T))), m(x)))(full, x)
    want = oracle.dense_attention(q, k, v, np.tril(np.ones((T, T), bool)))
    got = nnx.jit(lambda m, o: m._out(o))(full, jnp.asarray(want, jnp.float32))
    np.testing.assert_allclose(np.asarray(y), np.asarray(got), rtol=1e-5, atol=1e-6)


def test_dispatch_picks_the_reference_on_cpu():
    assert jax.default_backend() == "cpu"
    for dtype in (jnp.float32, jnp.bfloat16):
        for extra in (False, True):
            assert choose("auto", dtype, extra_parts=extra) == "reference"
    assert choose("xla", jnp.float32, extra_parts=False) == "xla"


def test_forcing_dot_product_attention_where_the_mask_cannot_say_it_is_an_error():
    with pytest.raises(ValueError, match="cannot express persistent tokens"):
        build("sliding_window", window=4, num_persistent=2, implementation="xla")
    with pytest.raises(ValueError, match="implementation must be one of"):
        choose("flash", jnp.float32, extra_parts=False)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("sliding_window", {"window": 4}),  # window < T: local_window_size
        ("sliding_window", {"window": 32}),  # window ≥ T: plain causal
        ("segment", {"segment": 4}),  # 11 tokens: the last segment is padded
        ("global", {"max_len": 64}),
    ],
)
def test_dot_product_attention_path_equals_the_reference(name, options):
    x = jax.random.normal(jax.random.key(2), (2, 11, D))
    ref = build(name, implementation="reference", **options)
    fast = build(name, implementation="xla", **options)  # same seed: same parameters
    # the output and its gradient in one compiled program per path (the gradient was op by op)
    run = nnx.jit(lambda m, x: (m(x), jax.grad(lambda x: jnp.sum(m(x) ** 2))(x)))
    (y_ref, g_ref), (y_fast, g_fast) = run(ref, x), run(fast, x)
    np.testing.assert_allclose(np.asarray(y_fast), np.asarray(y_ref), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(g_fast), np.asarray(g_ref), rtol=1e-4, atol=1e-5)


class NoOptions(ComponentConfig):
    """No options."""


class NoDecode(nnx.Module):
    def __init__(self, **_):
        pass

    def __call__(self, x, *, prefix_BxTxD=None, positions=None):
        return x

    def init_cache(self, batch_size):
        return ()

    def prefill(self, x, *, prefix_BxTxD=None):
        return x, ()


class NoPrefixKeyword(NoDecode):
    def decode(self, x, cache):
        return x, cache


@pytest.mark.parametrize(
    ("cls", "message"),
    [
        (NoDecode, r"has no method decode\(x_BxTxD, cache, \*, prefix_BxTxD=None\)"),
        (NoPrefixKeyword, r"must accept the call decode\(x_BxTxD, cache, \*, prefix_BxTxD=None\)"),
    ],
)
def test_an_attention_that_does_not_fit_fails_when_built_in_one_line(cls, message):
    registry = Registry()
    registry.register("attention", "bad", NoOptions, lambda config, **kw: cls(**kw), dist="my-attn", version="0.1")
    config = registry.config_class("attention", "bad").model_validate({"name": "bad"})
    with pytest.raises(ContractError, match=message) as info:
        registry.build(config, d_model=D, num_heads=H, num_persistent=0, rope_base=1e4, rngs=nnx.Rngs(0))
    assert str(info.value).startswith("attention 'bad' (plugin my-attn 0.1) does not satisfy AttentionBlock")
    assert "\n" not in str(info.value)
