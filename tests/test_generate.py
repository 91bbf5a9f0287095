"""Generation with a KV cache against transformers and against the full forward pass."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from medjax.generate import _generate, argmax, bucket, generate, sample_logits
from medjax.models import forward, load_hf
from medjax.models.decoder import (cache_shapes, empty_cache, forward_cached, split_layers,
                                   unstack_layers)

PROMPTS = [[5, 17, 99, 3], [42] * 9 + [7, 8], [200, 1]]


def hf_greedy(model, prompt, new, eos=None):
    """transformers' own greedy decoding (its KV cache), one prompt at a time (no padding)."""
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=new, do_sample=False,
                             eos_token_id=eos, pad_token_id=0, attention_mask=torch.ones(
                                 1, len(prompt), dtype=torch.long))
    ids = out[0, len(prompt):].tolist()
    if eos is not None and eos in ids:
        ids = ids[:ids.index(eos) + 1]
    return ids


@pytest.mark.parametrize("case", ["llama_gqa", "llama31_scaling", "mistral_window"])
def test_greedy_equals_transformers_on_a_batch_of_lengths(hf_case, case):
    """Llama-3.1 runs past its original context (16) and Mistral past its window (8)."""
    path, model, _ = hf_case(case)
    config, params = load_hf(path)
    new = 24
    got = generate(config, params, PROMPTS, max_new_tokens=new)
    for prompt, g in zip(PROMPTS, got):
        assert g.ids == hf_greedy(model, prompt, new), (case, prompt)
        assert g.finish_reason == "length" and len(g.logprobs) == new
    # an EOS hit mid-batch: row 0 stops at its 4th token, the others go on
    eos = got[0].ids[3]
    stopped = generate(config, params, PROMPTS, max_new_tokens=new, stop_ids=(eos,))
    for prompt, g in zip(PROMPTS, stopped):
        assert g.ids == hf_greedy(model, prompt, new, eos=eos), (case, prompt)
    assert stopped[0].ids == got[0].ids[:4] and stopped[0].finish_reason == "stop"


@pytest.mark.parametrize("scan,dtype,unstacked", [(True, "float32", False),
                                                   (False, "float32", False),
                                                   (False, "float32", True),
                                                   (True, "bfloat16", False)])
def test_cached_logits_equal_the_full_forward_at_every_step(hf_case, scan, dtype, unstacked):
    """Stacked cache in a layer scan, stacked by layer index, and the per-layer form the
    unrolled decode loop uses (``unstack_layers``)."""
    path, _, _ = hf_case("mistral_window")
    config, params = load_hf(path)
    config = config.replace(scan_layers=scan, dtype=dtype)
    tol = 1e-4 if dtype == "float32" else 6e-2  # bf16: the two paths round differently
    seq = np.random.RandomState(0).randint(0, 256, (2, 20)).astype(np.int32)
    full = np.asarray(forward(config, params, seq))
    cache = empty_cache(config, 2, 32)
    if unstacked:
        params, cache = unstack_layers(params, cache)
    logits, cache = forward_cached(config, params, jnp.asarray(seq[:, :6]),
                                   jnp.zeros(2, jnp.int32), cache)
    np.testing.assert_allclose(np.asarray(logits), full[:, :6], atol=tol, rtol=tol)
    for p in range(6, 20):  # one token a step
        logits, cache = forward_cached(config, params, jnp.asarray(seq[:, p:p + 1]),
                                       jnp.full(2, p, jnp.int32), cache)
        np.testing.assert_allclose(np.asarray(logits[:, 0]), full[:, p], atol=tol, rtol=tol)


def test_sampling_is_seeded_top_k_1_is_greedy_and_follows_the_softmax():
    logits = jnp.asarray(np.random.RandomState(1).normal(0, 1.5, (1, 6)), jnp.float32)
    draw = jax.jit(lambda k: sample_logits(jnp.repeat(logits, 4000, 0), k, temperature=0.7,
                                           top_k=0, top_p=1.0))
    a, b = draw(jax.random.key(3)), draw(jax.random.key(3))
    assert (np.asarray(a) == np.asarray(b)).all()
    counts = np.bincount(np.asarray(a), minlength=6)
    p = np.asarray(jax.nn.softmax(logits[0] / 0.7), np.float64)
    chi2 = float(((counts - 4000 * p) ** 2 / (4000 * p)).sum())
    assert chi2 < 20.5, (counts, 4000 * p)  # 5 degrees of freedom: p ~ 0.001
    greedy = sample_logits(logits, jax.random.key(0), temperature=0.0, top_k=0, top_p=1.0)
    top1 = sample_logits(logits, jax.random.key(0), temperature=1.3, top_k=1, top_p=1.0)
    assert int(greedy[0]) == int(top1[0]) == int(np.argmax(logits))
    # top_p: only the most likely tokens whose mass reaches p are drawn
    nucleus = jax.jit(lambda k: sample_logits(jnp.repeat(logits, 2000, 0), k, temperature=1.0,
                                              top_k=0, top_p=0.5))(jax.random.key(4))
    order = np.argsort(-np.asarray(logits[0]))
    probs = np.asarray(jax.nn.softmax(logits[0]))[order]
    keep = set(order[:int(np.searchsorted(np.cumsum(probs), 0.5)) + 1].tolist())
    assert set(np.asarray(nucleus).tolist()) <= keep


def test_buckets_and_bad_arguments(hf_case):
    assert [bucket(n) for n in (1, 16, 17, 100)] == [16, 16, 32, 128]
    config, params = load_hf(hf_case("llama_gqa")[0])
    with pytest.raises(ValueError, match="at least one token"):
        generate(config, params, [[]])
    with pytest.raises(ValueError, match="top_p"):
        generate(config, params, [[1]], top_p=0.0)
    seeded = [generate(config, params, [[1, 2]], temperature=1.0, seed=s, n=2,
                       max_new_tokens=8) for s in (0, 0, 1)]
    assert seeded[0] == seeded[1] and seeded[0] != seeded[2]
    assert len(seeded[0]) == 2 and seeded[0][0].ids != seeded[0][1].ids  # n draws differ


def test_sharded_parameters_give_the_same_tokens(hf_case):
    """Parameters sharded over 8 devices (fsdp 4 x tensor 2) generate what one device does."""
    from medjax.parallel import make_mesh
    from medjax.parallel.sharding import batch_divisor
    path, _, _ = hf_case("llama_gqa")
    config, params = load_hf(path)
    want = generate(config, params, PROMPTS + [[9, 9]], max_new_tokens=12, temperature=0.9,
                    seed=5)
    mesh = make_mesh(data=1, fsdp=4, tensor=2)
    config, sharded = load_hf(path, mesh=mesh)
    assert len(sharded["layers"]["attn"]["q_proj"].sharding.device_set) == 8
    with jax.set_mesh(mesh):
        got = generate(config, sharded, PROMPTS + [[9, 9]], max_new_tokens=12,
                       temperature=0.9, seed=5)
        assert batch_divisor() == 4  # so the 5 rows above ran as 8 (3 filler rows)
        # The cache (keys [layers, rows, kv_heads, head_dim, slots], values [.., slots,
        # head_dim]) is split over rows (fsdp 4) and KV heads (tensor 2).
        ids = jnp.zeros((8, 16), jnp.int32)
        hlo = _generate.lower(config, sharded, ids, jnp.ones(8, jnp.int32), jax.random.key(0),
                              max_new_tokens=12, temperature=0.0, top_k=0, top_p=1.0,
                              stop_ids=()).compile().as_text()
    for full in cache_shapes(config, 8, 28):
        part = (full[0], 2, full[2] // 2) + full[3:]
        assert f"[{','.join(map(str, part))}]" in hlo
        assert f"[{','.join(map(str, full))}]" not in hlo
    assert [g.ids for g in got] == [w.ids for w in want]


def test_streaming_sees_each_step_in_order(hf_case):
    config, params = load_hf(hf_case("llama_gqa")[0])
    seen = []
    got = generate(config, params, PROMPTS[:2], max_new_tokens=10,
                   on_token=lambda t: seen.append(np.asarray(t).tolist()))
    assert len(seen) == 10
    assert [[s[r] for s in seen if s[r] >= 0] for r in range(2)] == [g.ids for g in got]


def test_prefill_logits_at_chosen_positions_equal_the_full_ones(hf_case):
    """forward_cached(logits_at=...) (the prefill's last-token logits) picks exactly the
    rows of the full logits."""
    path, _, _ = hf_case("llama_gqa")
    config, params = load_hf(path)
    seq = jnp.asarray(np.random.RandomState(2).randint(0, 256, (3, 12)).astype(np.int32))
    fresh = lambda: empty_cache(config, 3, 16)  # noqa: E731
    full, _ = forward_cached(config, params, seq, jnp.zeros(3, jnp.int32), fresh())
    at = jnp.asarray([[11, 0], [4, 4], [7, 2]])
    part, _ = forward_cached(config, params, seq, jnp.zeros(3, jnp.int32), fresh(),
                             logits_at=at)
    want = np.take_along_axis(np.asarray(full), np.asarray(at)[..., None], axis=1)
    np.testing.assert_allclose(np.asarray(part), want, atol=1e-5, rtol=1e-5)


def test_draw_across_vocabulary_blocks_follows_the_softmax():
    """The two-step sampler over a vocabulary of several blocks (and a padded last one):
    tokens in different blocks, including the first and last id, are drawn as often as
    softmax says; masked (-inf) ids never."""
    from medjax.generate import draw
    v = 1300  # blocks of 512: 512 + 512 + 276 (padded)
    logits = np.full(v, -np.inf, np.float32)
    ids = np.array([0, 7, 511, 512, 900, 1023, 1024, 1299])
    logits[ids] = np.random.RandomState(2).normal(0, 1.0, len(ids))
    n = 4000
    got = np.asarray(jax.jit(lambda k: draw(jnp.asarray(np.tile(logits, (n, 1))), k))(
        jax.random.key(5)))
    assert set(got.tolist()) <= set(ids.tolist())
    p = np.exp(logits[ids] - logits[ids].max())
    p /= p.sum()
    counts = np.array([(got == i).sum() for i in ids])
    chi2 = float(((counts - n * p) ** 2 / (n * p)).sum())
    assert chi2 < 24.3, (counts, n * p)  # 7 degrees of freedom: p ~ 0.001


def test_argmax_is_the_first_maximal_id_like_jnp_argmax():
    """The two-reduction greedy pick: ties go to the first id, a NaN counts as the maximum,
    an all--inf row gives id 0; equal to NumPy's argmax on random rows."""
    x = np.random.RandomState(4).normal(size=(64, 1000)).astype(np.float32)
    x[1, [3, 700]] = 9.0  # a tie
    x[2, [5, 9]] = np.nan
    x[3] = -np.inf
    x[4, 999] = np.inf
    got = np.asarray(jax.jit(argmax)(jnp.asarray(x)))
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, np.argmax(x, axis=-1))
    assert got[1] == 3 and got[2] == 5 and got[3] == 0 and got[4] == 999


def test_split_layers_frees_the_stacked_weights_and_generates_the_same(hf_case):
    """The command line's per-layer weights (split outside the jit, each stacked leaf
    deleted): the same tokens as the stacked weights with the layer scan, no stacked leaf
    left alive, and the layers' values unchanged."""
    config, params = load_hf(hf_case("llama_gqa")[0])
    want = generate(config.replace(scan_layers=True), params, PROMPTS, max_new_tokens=10)
    copy = jax.tree.map(lambda x: jnp.array(x, copy=True), params)
    stacked = jax.tree.leaves(copy["layers"])
    split = split_layers(copy)
    assert isinstance(split["layers"], list) and len(split["layers"]) == config.num_layers
    assert all(leaf.is_deleted() for leaf in stacked)
    for i, layer in enumerate(split["layers"]):
        jax.tree.map(lambda a, b, i=i: np.testing.assert_array_equal(a, b[i]), layer,
                     params["layers"])
    for scan in (True, False):
        got = generate(config.replace(scan_layers=scan), split, PROMPTS, max_new_tokens=10)
        assert [g.ids for g in got] == [w.ids for w in want]
