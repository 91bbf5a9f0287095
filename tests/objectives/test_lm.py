"""Next-token loss: chunked NLL against float64 NumPy, targets and masks by hand."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax.models import get_preset, init_params
from medjax.objectives import lm_loss, next_token_targets, token_nll
from medjax.objectives.lm import weighted_nll_sums


@pytest.mark.parametrize("chunk", [1, 7, 16, 64])
def test_token_nll_matches_float64_reference(chunk):
    rs = np.random.RandomState(0)
    h = rs.randn(2, 37, 16).astype(np.float32)
    w = rs.randn(16, 50).astype(np.float32)
    y = rs.randint(0, 50, (2, 37))
    nll, lse = token_nll(jnp.asarray(h), jnp.asarray(w), jnp.asarray(y), chunk_size=chunk)
    logits = h.astype(np.float64) @ w.astype(np.float64)
    m = logits.max(-1, keepdims=True)
    ref_lse = (m + np.log(np.exp(logits - m).sum(-1, keepdims=True)))[..., 0]
    ref = ref_lse - np.take_along_axis(logits, y[..., None], -1)[..., 0]
    np.testing.assert_allclose(nll, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(lse, ref_lse, rtol=1e-5, atol=1e-5)
    # Gradient through the rematerialised chunks equals the float64 analytic one.
    g = jax.grad(lambda hh: token_nll(hh, jnp.asarray(w), jnp.asarray(y), chunk_size=chunk)[0]
                 .sum())(jnp.asarray(h))
    p = np.exp(logits - ref_lse[..., None])
    p[np.arange(2)[:, None], np.arange(37)[None], y] -= 1
    np.testing.assert_allclose(g, p @ w.T.astype(np.float64), rtol=1e-4, atol=1e-4)
    # The kernel's gradient, with the log-partition in the objective too (z-loss).
    gn, gl = rs.randn(2, 37), rs.randn(2, 37)

    def objective(ww):
        nll_, lse_ = token_nll(jnp.asarray(h), ww, jnp.asarray(y), chunk_size=chunk)
        return (nll_ * gn).sum() + (lse_ * gl).sum()

    gw = jax.grad(objective)(jnp.asarray(w))
    soft = np.exp(logits - ref_lse[..., None])
    dlogits = soft * (gn + gl)[..., None]
    dlogits[np.arange(2)[:, None], np.arange(37)[None], y] -= gn
    ref_gw = np.einsum("btd,btv->dv", h.astype(np.float64), dlogits)
    np.testing.assert_allclose(gw, ref_gw, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("chunk", [1, 4, 16])
def test_token_nll_skips_unweighted_positions_exactly(chunk):
    """With weights, only weighted positions get logits: their values and
    gradients equal the float64 reference, the rest are 0 (chunks that hold no
    weighted position are skipped, here the second row's and the padding)."""
    rs = np.random.RandomState(1)
    h = rs.randn(3, 19, 8).astype(np.float32)
    w = rs.randn(8, 30).astype(np.float32)
    y = rs.randint(0, 30, (3, 19))
    weights = np.zeros((3, 19), np.float32)
    weights[0, 12:17] = 1.0  # a response at the end, as in preference rows
    weights[2, [1, 5, 6]] = 1.0  # scattered
    logits = h.astype(np.float64) @ w.astype(np.float64)
    m = logits.max(-1, keepdims=True)
    lse = (m + np.log(np.exp(logits - m).sum(-1, keepdims=True)))[..., 0]
    ref = lse - np.take_along_axis(logits, y[..., None], -1)[..., 0]

    def total(hh):
        nll, _ = token_nll(hh, jnp.asarray(w), jnp.asarray(y), chunk_size=chunk,
                           weights_bt=jnp.asarray(weights), skip=True)
        return (nll * weights).sum(), nll

    (_, nll), g = jax.value_and_grad(total, has_aux=True)(jnp.asarray(h))
    on = weights > 0
    np.testing.assert_allclose(np.asarray(nll)[on], ref[on], rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(nll)[~on] == 0)
    p = np.exp(logits - lse[..., None])
    p[np.arange(3)[:, None], np.arange(19)[None], y] -= 1
    ref_g = (p @ w.T.astype(np.float64)) * weights[..., None]
    np.testing.assert_allclose(g, ref_g, rtol=1e-4, atol=1e-4)


def test_token_nll_skips_per_device_on_eight_devices():
    """On a mesh that splits only rows (data x fsdp), each device skips the chunks its own
    rows do not need (a conditional in the compiled step, no collective inside it): the
    values and both gradients equal the unskipped computation and the float64 reference.
    Before, skipping was off on any mesh (the branches held collectives and deadlocked)."""
    from jax.sharding import NamedSharding, PartitionSpec as P

    from medjax.parallel import make_mesh
    rs = np.random.RandomState(2)
    h = rs.randn(8, 24, 8).astype(np.float32)
    w = rs.randn(8, 40).astype(np.float32)
    y = rs.randint(0, 40, (8, 24))
    weights = np.zeros((8, 24), np.float32)
    weights[0, 20:] = 1.0  # device 0: a 4-token response
    weights[3, 2:22] = 1.0  # device 3: 20 tokens, more chunks
    weights[5, [1, 7]] = 2.0  # scattered; devices 1, 2, 4, 6, 7: none at all

    def total(hh, ww, skip):
        nll, lse = token_nll(hh, ww, jnp.asarray(y), chunk_size=4,
                             weights_bt=jnp.asarray(weights), skip=skip)
        return (nll * weights).sum() + 0.1 * (lse * weights).sum(), nll

    grad = jax.value_and_grad(total, argnums=(0, 1), has_aux=True)
    (_, want_nll), (want_h, want_w) = jax.jit(grad, static_argnums=2)(h, w, False)
    mesh = make_mesh(data=2, fsdp=4, tensor=1)
    rows = NamedSharding(mesh, P(("data", "fsdp")))
    with jax.set_mesh(mesh):
        f = jax.jit(grad, static_argnums=2)
        hs = jax.device_put(h, rows)
        assert "conditional" in f.lower(hs, w, None).compile().as_text()
        (_, nll), (gh, gw) = f(hs, w, None)
    np.testing.assert_allclose(nll, want_nll, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(gh, want_h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gw, want_w, rtol=1e-5, atol=1e-6)
    logits = h.astype(np.float64) @ w.astype(np.float64)
    m = logits.max(-1, keepdims=True)
    lse = (m + np.log(np.exp(logits - m).sum(-1, keepdims=True)))[..., 0]
    ref = lse - np.take_along_axis(logits, y[..., None], -1)[..., 0]
    on = weights > 0
    np.testing.assert_allclose(np.asarray(nll)[on], ref[on], rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(nll)[~on] == 0)


@pytest.mark.parametrize("skip", [False, True])
def test_token_nll_keeps_the_softmax_when_it_fits(skip):
    """``keep_gb``: the forward pass keeps each chunk's softmax and the backward pass uses
    it instead of recomputing the logits: one vocabulary-sized matmul fewer in the
    program, the same values and gradients (a sequence-level loss, as DPO's), and a budget
    too small for the softmax recomputes."""
    rs = np.random.RandomState(8)
    h = jnp.asarray(rs.randn(4, 24, 16), jnp.float32)
    k = jnp.asarray(rs.randn(16, 1000) * 0.3, jnp.float32)
    y = jnp.asarray(rs.randint(0, 1000, (4, 24)))
    w = np.zeros((4, 24), np.float32)
    w[:, 6:] = 1.0
    w[2, 10:] = 0.0
    w = jnp.asarray(w)

    def loss(hh, kk, keep):
        nll, lse = token_nll(hh, kk, y, chunk_size=4, weights_bt=w, skip=skip, keep_gb=keep)
        seq = -(nll * w).sum(-1).reshape(2, 2)
        return -jax.nn.log_sigmoid(seq[:, 0] - seq[:, 1]).sum() + 0.01 * (lse * w).sum()

    def vocab_dots(keep):
        text = jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=2).lower(
            h, k, keep).as_text()
        return sum(1 for line in text.splitlines() if "dot_general" in line and "1000" in line)

    softmax = 4 * 24 * 1000 * 4 / 2 ** 30  # GiB of every chunk's float32 softmax
    assert vocab_dots(0.0) == 4 and vocab_dots(softmax) == 3 and vocab_dots(softmax / 2) == 4
    grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), static_argnums=2)
    (want, (wh, wk)), (got, (gh, gk)) = grad(h, k, 0.0), grad(h, k, softmax)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(gh, wh, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(gk, wk, rtol=1e-5, atol=1e-7)


def test_targets_respect_segments_padding_and_loss_mask():
    batch = {
        "input_ids": jnp.array([[5, 6, 7, 8, 9, 0]]),
        "segment_ids": jnp.array([[1, 1, 1, 2, 2, 0]]),
        "loss_mask": jnp.array([[1, 1, 0, 1, 1, 0]]),
    }
    targets, weights = next_token_targets(batch)
    np.testing.assert_array_equal(targets, [[6, 7, 8, 9, 0, 0]])
    # pos 0 -> 6 (trainable), pos 1 -> 7 (masked), pos 2 -> 8 (other document),
    # pos 3 -> 9 (trainable), pos 4 -> padding, pos 5 -> nothing.
    np.testing.assert_array_equal(weights, [[1, 0, 0, 1, 0, 0]])


def test_lm_loss_equals_mean_of_log_softmax():
    config = get_preset("llama3_tiny")
    params = init_params(config, jax.random.key(0))
    ids = np.random.RandomState(1).randint(0, config.vocab_size, (2, 12))
    loss, metrics = lm_loss(config, params, {"input_ids": jnp.asarray(ids)}, chunk_size=5,
                            z_loss=1e-3)
    from medjax.models import forward
    logp = np.asarray(jax.nn.log_softmax(forward(config, params, ids)), np.float64)
    nll = -np.take_along_axis(logp[:, :-1], ids[:, 1:, None], -1).mean()
    np.testing.assert_allclose(metrics["nll"], nll, rtol=1e-5)
    assert metrics["weight"] == 2 * 11
    assert loss > metrics["nll"]  # z-loss adds a positive term


@pytest.mark.parametrize("chunk,skip", [(1, False), (7, False), (64, False), (1, True),
                                        (7, True), (64, True)])
def test_fused_weighted_sums_match_float64_reference(chunk, skip):
    """``weighted_nll_sums`` (gradients computed in the forward pass): the total, the two
    sums and the gradients of the hidden states and the kernel, scaled by a cotangent,
    equal float64 NumPy; with ``skip`` (each row's weighted positions moved to the front,
    chunks without one not computed) as well, on rows whose weighted positions differ."""
    rs = np.random.RandomState(2)
    h = rs.randn(2, 37, 16).astype(np.float32)
    w = (rs.randn(16, 50) * 0.5).astype(np.float32)
    y = rs.randint(0, 50, (2, 37))
    wt = (rs.rand(2, 37) > 0.3) * rs.uniform(0.5, 2, (2, 37))
    if skip:  # a 12-token prompt, then a response; the other row: 5 scattered targets
        wt[0, :12] = 0.0
        wt[1] = 0.0
        wt[1, [3, 9, 10, 30, 36]] = 1.5
    z, g = 0.02, 0.37  # z-loss coefficient; the cotangent of the total

    def total(hh, ww):
        t, sums = weighted_nll_sums(hh, ww, jnp.asarray(y), jnp.asarray(wt, jnp.float32),
                                    z_coef=z, chunk_size=chunk, skip=skip)
        return g * t, sums

    (value, (nll_sum, z_sum)), (gh, gw) = jax.value_and_grad(total, argnums=(0, 1),
                                                             has_aux=True)(jnp.asarray(h),
                                                                           jnp.asarray(w))
    logits = h.astype(np.float64) @ w.astype(np.float64)
    m = logits.max(-1, keepdims=True)
    lse = (m + np.log(np.exp(logits - m).sum(-1, keepdims=True)))[..., 0]
    nll = lse - np.take_along_axis(logits, y[..., None], -1)[..., 0]
    np.testing.assert_allclose(nll_sum, (wt * nll).sum(), rtol=1e-5)
    np.testing.assert_allclose(z_sum, (wt * lse ** 2).sum(), rtol=1e-5)
    np.testing.assert_allclose(value, g * ((wt * nll).sum() + z * (wt * lse ** 2).sum()),
                               rtol=1e-5)
    d = np.exp(logits - lse[..., None]) * (wt * (1 + 2 * z * lse))[..., None]
    d[np.arange(2)[:, None], np.arange(37)[None], y] -= wt
    np.testing.assert_allclose(gh, g * d @ w.T.astype(np.float64), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gw, g * np.einsum("btd,btv->dv", h.astype(np.float64), d),
                               rtol=1e-4, atol=1e-4)


def test_sft_loss_skips_the_prompt_and_equals_pretrain_loss():
    """The SFT objective (on one device the prompt positions get no logits: the program
    holds the skip) and the unskipped loss give the same loss, metrics and gradients, with
    both vocabulary projections, also on 8 devices splitting rows."""
    from jax.sharding import NamedSharding, PartitionSpec as P
    from ml_collections import ConfigDict

    from medjax import objectives
    from medjax.parallel import make_mesh
    config = get_preset("llama3_tiny", vocab_size=512)
    params = init_params(config, jax.random.key(6))
    rs = np.random.RandomState(7)
    mask = np.zeros((8, 32), np.int32)
    mask[:, 20:] = 1  # a 20-token prompt: 2 of 4 chunks of 8 need no logits
    mask[3, 5:] = 1  # a longer response
    batch = {"input_ids": jnp.asarray(rs.randint(0, 512, (8, 32))),
             "segment_ids": jnp.ones((8, 32), jnp.int32), "loss_mask": jnp.asarray(mask)}
    c = ConfigDict({"objective": {}})
    objectives.get("sft").add_config(c)
    o = c.objective
    assert o.skip_untrained  # SFT's default
    o.z_loss, o.loss_chunk_size = 1e-3, 8
    mesh = make_mesh(data=2, fsdp=4, tensor=1)
    rows = NamedSharding(mesh, P(("data", "fsdp")))
    for impl in ("fused", "recompute"):
        o.lm_head_grad = impl
        sft = jax.jit(jax.value_and_grad(objectives.get("sft").make_loss(o, config),
                                         has_aux=True))
        plain = jax.jit(jax.value_and_grad(functools.partial(
            lm_loss, config, z_loss=1e-3, chunk_size=8, lm_head_grad=impl), has_aux=True))
        (b, bm), bg = plain(params, batch)
        with jax.set_mesh(make_mesh(data=1, fsdp=1, tensor=1, devices=jax.devices()[:1])):
            assert "conditional(" in sft.lower(params, batch).compile().as_text()
            one = sft(params, batch)
        with jax.set_mesh(mesh):
            eight = sft(params, jax.device_put(batch, rows))
        for (a, am), ag in (one, eight):
            np.testing.assert_allclose(a, b, rtol=1e-6)
            np.testing.assert_allclose(am["nll"], bm["nll"], rtol=1e-6)
            for x, z in zip(jax.tree.leaves(ag), jax.tree.leaves(bg)):
                np.testing.assert_allclose(x, z, rtol=1e-4, atol=1e-7)


def test_lm_loss_fused_equals_recompute_on_one_and_eight_devices():
    """objective.lm_head_grad: the fused and the recomputing vocabulary projection give the
    same loss, metrics and parameter gradients, also sharded over 8 devices."""
    from jax.sharding import NamedSharding, PartitionSpec as P

    from medjax.parallel import make_mesh
    config = get_preset("llama3_tiny", vocab_size=512)
    params = init_params(config, jax.random.key(4))
    rs = np.random.RandomState(5)
    batch = {"input_ids": jnp.asarray(rs.randint(0, 512, (8, 24))),
             "segment_ids": jnp.asarray(np.repeat([[1] * 10 + [2] * 11 + [0] * 3], 8, 0)),
             "loss_mask": jnp.asarray(rs.rand(8, 24) > 0.4, jnp.int32)}

    def grads(impl):
        return jax.jit(jax.value_and_grad(
            lambda p, b: lm_loss(config, p, b, z_loss=1e-3, chunk_size=8, lm_head_grad=impl),
            has_aux=True))

    (want, wm), wg = grads("recompute")(params, batch)
    mesh = make_mesh(data=2, fsdp=4, tensor=1)
    sharded = {k: jax.device_put(v, NamedSharding(mesh, P(("data", "fsdp")))) for k, v in
               batch.items()}
    with jax.set_mesh(mesh):
        eight = grads("fused")(jax.device_put(params, NamedSharding(mesh, P())), sharded)
    for (got, gm), gg in (grads("fused")(params, batch), eight):
        np.testing.assert_allclose(got, want, rtol=1e-6)
        for k in wm:
            np.testing.assert_allclose(gm[k], wm[k], rtol=1e-6, err_msg=k)
        for a, b in zip(jax.tree.leaves(gg), jax.tree.leaves(wg)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="lm_head_grad='bogus'"):
        lm_loss(config, params, batch, lm_head_grad="bogus")


def test_neftune_noise_uses_each_documents_length():
    from medjax.models import forward_hidden
    config = get_preset("llama3_tiny", num_layers=1)
    params = init_params(config, jax.random.key(0))
    ids = jnp.zeros((1, 8), jnp.int32)
    seg = jnp.array([[1, 1, 2, 2, 2, 2, 2, 2]])
    rng = jax.random.key(3)
    # NEFTune changes only training forward passes that ask for it.
    base = forward_hidden(config, params, ids, segment_ids=seg)
    noisy = forward_hidden(config, params, ids, segment_ids=seg, neftune=(5.0, rng))
    assert not np.allclose(base, noisy)
    # Noise bound: alpha / sqrt(L * d) with L = 2 for doc 1 and 6 for doc 2.
    from medjax.models.decoder import _neftune
    x = jnp.zeros((1, 8, config.hidden_size))
    n = np.abs(np.asarray(_neftune(x, seg, 5.0, rng)))
    d = config.hidden_size
    assert n[0, :2].max() <= 5 / np.sqrt(2 * d) and n[0, :2].max() > 0.8 * 5 / np.sqrt(2 * d)
    assert n[0, 2:].max() <= 5 / np.sqrt(6 * d) and n[0, 2:].max() > 0.8 * 5 / np.sqrt(6 * d)
