"""Decoder behaviour independent of Hugging Face: packing, scan/remat, backends."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import random_ids

from medjax.models import forward, get_preset, init_params


@pytest.mark.parametrize("preset", ["llama3_tiny", "llama31_tiny", "mistral_tiny"])
def test_packed_documents_equal_separate_runs(preset):
    # Long enough that the llama31 scaling and mistral's window (16) both matter.
    config = get_preset(preset)
    params = init_params(config, jax.random.key(0))
    a = random_ids(1, 23, config.vocab_size, seed=1)
    b = random_ids(1, 30, config.vocab_size, seed=2)
    pad = 11
    row = np.concatenate([a, b, np.zeros((1, pad), np.int32)], axis=1)
    seg = np.array([[1] * 23 + [2] * 30 + [0] * pad], np.int32)
    pos = np.array([list(range(23)) + list(range(30)) + list(range(pad))], np.int32)
    packed = np.asarray(forward(config, params, row, segment_ids=seg, positions=pos))
    alone_a = np.asarray(forward(config, params, a))
    alone_b = np.asarray(forward(config, params, b))
    np.testing.assert_allclose(packed[:, :23], alone_a, atol=1e-5, rtol=0)
    np.testing.assert_allclose(packed[:, 23:53], alone_b, atol=1e-5, rtol=0)
    # Without segment ids, document b would see document a.
    leaky = np.asarray(forward(config, params, row, positions=pos))
    assert np.abs(leaky[:, 23:53] - alone_b).max() > 1e-3


def test_scan_loop_and_remat_agree():
    config = get_preset("mistral_tiny", num_layers=3)
    params = init_params(config, jax.random.key(1))
    ids = random_ids(2, 40, config.vocab_size, seed=3)

    def loss(cfg, p):
        return jnp.mean(jax.nn.log_softmax(forward(cfg, p, ids))[..., 0])

    ref_val, ref_grad = jax.value_and_grad(loss, argnums=1)(config, params)
    for scan in (True, False):
        for remat in ("none", "full", "dots", "dots_no_batch"):
            cfg = config.replace(scan_layers=scan, remat_policy=remat)
            val, grad = jax.jit(jax.value_and_grad(loss, argnums=1), static_argnums=0)(cfg, params)
            np.testing.assert_allclose(val, ref_val, rtol=1e-6)
            jax.tree.map(lambda g, r: np.testing.assert_allclose(g, r, atol=1e-6, rtol=1e-5),
                         grad, ref_grad)


def _hlo_ops(config, params_shape):
    ids = jax.ShapeDtypeStruct((1, 16), jnp.int32)
    text = jax.jit(forward, static_argnums=0).lower(config, params_shape, ids).as_text()
    return len(re.findall(r"stablehlo\.dot_general", text))


def test_scan_program_size_does_not_grow_with_depth():
    from medjax.models import abstract_params
    sizes = {}
    for layers in (2, 8):
        for scan in (True, False):
            cfg = get_preset("llama3_tiny", num_layers=layers, scan_layers=scan)
            sizes[layers, scan] = _hlo_ops(cfg, abstract_params(cfg))
    assert sizes[2, True] == sizes[8, True]  # one compiled layer whatever the depth
    assert sizes[8, False] > sizes[2, False]  # the unrolled loop grows


def test_cudnn_backend_on_cpu_is_an_error_not_a_fallback():
    config = get_preset("llama3_tiny", attention="cudnn", dtype="bfloat16")
    params = init_params(config, jax.random.key(0))
    with pytest.raises(ValueError, match="cudnn.*GPU"):
        forward(config, params, random_ids(1, 8, config.vocab_size))


def test_bad_inputs_are_clear_errors():
    config = get_preset("llama3_tiny")
    params = init_params(config, jax.random.key(0))
    with pytest.raises(ValueError, match=r"input_ids must be \[batch, length\]"):
        forward(config, params, np.zeros((8,), np.int32))
    with pytest.raises(ValueError, match="segment_ids must have the shape"):
        forward(config, params, np.zeros((1, 8), np.int32), segment_ids=np.zeros((1, 7), np.int32))


@pytest.mark.parametrize("window,block,t,dtype", [
    (None, 16, 100, "float32"), (24, 16, 100, "float32"), (24, 16, 100, "bfloat16"),
    (40, 32, 96, "float32"), (None, 64, 200, "bfloat16")])
def test_blocked_attention_equals_dense(window, block, t, dtype):
    """blocked_attention (masked key blocks skipped) gives jax.nn.dot_product_attention's
    outputs and gradients: packed segments, GQA (8 / 2 heads), a sliding window that starts
    inside earlier blocks, a length that is not a multiple of the block."""
    from medjax.models.decoder import blocked_attention
    rs = np.random.RandomState(0)
    dt = jnp.dtype(dtype)
    q = jnp.asarray(rs.randn(2, t, 8, 16), dt)
    k = jnp.asarray(rs.randn(2, t, 2, 16), dt)
    v = jnp.asarray(rs.randn(2, t, 2, 16), dt)
    seg = np.sort(rs.randint(1, 5, (2, t)), axis=1)
    seg[1, -7:] = 0  # padding
    seg = jnp.asarray(seg)
    cot = jnp.asarray(rs.randn(2, t, 8, 16), jnp.float32)

    def dense(q, k, v):
        mask = seg[:, None, :, None] == seg[:, None, None, :]
        return jax.nn.dot_product_attention(
            q, k, v, mask=mask, is_causal=True, scale=0.25, implementation="xla",
            local_window_size=None if window is None else (window - 1, 0))

    def blocked(q, k, v):
        return blocked_attention(q, k, v, seg, window=window, scale=0.25, block=block)

    def loss(fn):
        return lambda *a: (fn(*a).astype(jnp.float32) * cot).sum()

    tol = dict(rtol=1e-5, atol=1e-5) if dtype == "float32" else dict(rtol=2e-2, atol=2e-2)
    want, got = jax.jit(dense)(q, k, v), jax.jit(blocked)(q, k, v)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), **tol)
    grad = lambda fn: jax.jit(jax.grad(loss(fn), argnums=(0, 1, 2)))  # noqa: E731
    for a, b in zip(grad(blocked)(q, k, v), grad(dense)(q, k, v)):
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), **tol)


def test_auto_attention_is_blocked_on_cpu_and_equals_xla():
    config = get_preset("llama3_tiny", vocab_size=512)
    assert config.attention == "auto"
    params = init_params(config, jax.random.key(0))
    ids = jnp.asarray(random_ids(2, 300, 512, seed=4))  # > 2 blocks of 64
    seg = jnp.asarray(np.repeat([[1] * 120 + [2] * 150 + [0] * 30], 2, 0))
    from medjax.models import decoder
    calls = []
    real = decoder.blocked_attention
    try:
        decoder.blocked_attention = lambda *a, **kw: calls.append(1) or real(*a, **kw)
        auto = forward(config, params, ids, segment_ids=seg)
    finally:
        decoder.blocked_attention = real
    assert calls  # the blocked path ran
    xla = forward(config.replace(attention="xla"), params, ids, segment_ids=seg)
    np.testing.assert_allclose(np.asarray(auto), np.asarray(xla), rtol=1e-5, atol=1e-5)


def _dots(jaxpr):
    """Every dot_general of a jaxpr, nested jaxprs (scan, custom VJP, cond) included."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            yield eqn
        for v in eqn.params.values():
            for sub in (v if isinstance(v, (list, tuple)) else [v]):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _dots(inner)


@pytest.mark.parametrize("objective", ["sft", "dpo"])
def test_train_gradients_are_single_contraction_matmuls(objective):
    # Projections and the LM head are 2-D matmuls in the forward and the backward pass:
    # as "btd,df->btf" the weight gradients contracted over [batch, length] together,
    # which XLA's CPU backend ran after transposing the activations (the medium SFT step
    # 1.3x slower; RESULTS.md "2-D projections"). Attention's products keep their batch
    # axes (rows, KV heads) and are not projections.
    from medjax.models import forward_hidden, lm_head_kernel
    from medjax.objectives.lm import token_nll, weighted_nll_sums

    config = get_preset("llama3_tiny", num_layers=2)
    params = init_params(config, jax.random.key(0))
    ids = random_ids(2, 64, config.vocab_size, seed=1)
    w = jnp.ones(ids.shape, jnp.float32)

    def loss(p):
        h = forward_hidden(config, p, ids)
        if objective == "sft":
            return weighted_nll_sums(h, lm_head_kernel(config, p), ids, w, chunk_size=16)[0]
        return token_nll(h, lm_head_kernel(config, p), ids, chunk_size=16, weights_bt=w,
                         skip=False)[0].sum()

    dots = list(_dots(jax.make_jaxpr(jax.grad(loss))(params).jaxpr))
    projections = [e for e in dots if not e.params["dimension_numbers"][1][0]]  # no batch
    assert len(projections) >= 7 * 3  # the scanned layer: 7 weights, forward + 2 gradients
    many = [e for e in projections if len(e.params["dimension_numbers"][0][0]) > 1]
    assert not many, [str(e)[:120] for e in many]
