"""Padding-free KTO batches (data.pack_pairs with objective kto): the same examples give the
same losses, KL estimate, metrics and gradients packed as padded, on one device and
sharded over eight; the pipeline packs every example with its own KL sequence and label;
a packed KTO run trains."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import pair_config
from jax.sharding import NamedSharding, PartitionSpec as P

from medjax import models
from medjax.data.pipeline import pipeline_from_config
from medjax.objectives.kto import kto_loss
from medjax.objectives.preference import sequence_logps
from medjax.parallel import make_mesh
from medjax.training import run
from medjax.training.state import data_tools

SEQ = 96  # conftest.pair_config's seq_len


def _config(**kw):
    return pair_config("kto", **kw)


@pytest.fixture(scope="module")
def tools():
    return data_tools(_config())[1:]


def _padded(tools, n=8):
    tok, tpl = tools
    return next(iter(pipeline_from_config(_config(batch_size=n), tok, tpl, one_pass=True)))


def pack(padded: dict, rows: int, length: int):
    """An independent packing of a padded KTO batch, in order, next-fit into ``rows`` rows of
    ``length``: example k of a row at segment 2k + 1, its KL sequence at 2k + 2, its label
    (and reference log-probs) in slot k."""
    out = {k: np.zeros((rows, length), np.int32) for k in
           ("input_ids", "segment_ids", "positions", "loss_mask")}
    out["label"] = np.zeros((rows, length // 2), bool)
    slots = []
    r, used, k = 0, 0, 0
    for e in range(len(padded["label"])):
        n = (padded["segment_ids"][e] != 0).sum(-1)  # [example, KL] lengths
        if used + n.sum() > length:
            r, used, k = r + 1, 0, 0
        for side in (0, 1):
            sl = slice(used, used + n[side])
            for key in ("input_ids", "positions", "loss_mask"):
                out[key][r, sl] = padded[key][e, side, :n[side]]
            out["segment_ids"][r, sl] = 2 * k + 1 + side
            used += n[side]
        out["label"][r, k] = padded["label"][e]
        slots.append((r, k))
        k += 1
    return out, slots, r + 1


def _batches(tools, seed, config, params):
    """The padded and the packed batch, with reference log-probs a little below the
    policy's (mean log-ratio > 0, so the KL estimate is active)."""
    padded = _padded(tools)
    packed, slots, used = pack(padded, 8, 2 * SEQ)
    assert used < 8  # the examples really share rows
    policy = np.asarray(sequence_logps(config, params, {k: jnp.asarray(v) for k, v in
                                                        padded.items() if k != "label"},
                                       chunk_size=64)[0])
    ref = (policy - np.random.RandomState(seed).normal(1.0, 2.0, (8, 2))).astype(np.float32)
    ref_packed = np.zeros((8, SEQ, 2), np.float32)
    for e, (r, k) in enumerate(slots):
        ref_packed[r, k] = ref[e]
    dev = lambda b, rl: dict({k: jnp.asarray(v) for k, v in b.items()  # noqa: E731
                              if k != "example_id"}, ref_logps=jnp.asarray(rl))
    return dev(padded, ref), dev(packed, ref_packed)


def _model(seed):
    config = models.get_preset("llama3_tiny", vocab_size=128256)
    return config, models.init_params(config, jax.random.key(seed))


def _assert_same(a, b):
    (la, ma), ga = a
    (lb, mb), gb = b
    np.testing.assert_allclose(float(lb), float(la), rtol=1e-5)
    assert set(ma) == set(mb)
    for key in ma:
        np.testing.assert_allclose(float(mb[key]), float(ma[key]), rtol=1e-5, atol=1e-4,
                                   err_msg=key)
    for x, y in zip(jax.tree.leaves(gb), jax.tree.leaves(ga)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-6)


def test_packed_kto_loss_kl_metrics_and_gradients_equal_padded(tools):
    config, params = _model(1)
    padded, packed = _batches(tools, 0, config, params)
    assert not bool(padded["label"].all()) and bool(padded["label"].any())

    def loss(p, batch):
        return kto_loss(config, p, batch, beta=0.1, desirable_weight=1.3,
                        undesirable_weight=0.7, chunk_size=64)

    grad = jax.value_and_grad(loss, has_aux=True)
    a, b = grad(params, padded), grad(params, packed)
    assert float(a[0][1]["kl"]) > 0  # the KL term is active: the reference was drawn low
    _assert_same(a, b)


def test_packed_kto_equals_padded_sharded_over_eight_devices(tools):
    """The KL estimate is a mean over the global batch: sharding the packed rows over 8
    devices gives the single-device padded result."""
    config, params = _model(2)
    padded, packed = _batches(tools, 1, config, params)

    def loss(p, batch):
        return kto_loss(config, p, batch, beta=0.1, chunk_size=64)

    grad = jax.jit(jax.value_and_grad(loss, has_aux=True))
    one = grad(params, padded)
    mesh = make_mesh(data=2, fsdp=4, tensor=1)
    rows = NamedSharding(mesh, P(("data", "fsdp")))
    sharded = {k: jax.device_put(v, rows) for k, v in packed.items()}
    assert len(sharded["input_ids"].addressable_shards) == 8
    with jax.set_mesh(mesh):
        eight = grad(jax.device_put(params, NamedSharding(mesh, P())), sharded)
    _assert_same(one, eight)


def test_the_pipeline_packs_each_example_with_its_kl_sequence(tools):
    tok, tpl = tools
    packed = next(iter(pipeline_from_config(_config(**{"data.pack_pairs": True}), tok, tpl,
                                            one_pass=True)))
    assert packed["input_ids"].shape == (8, 2 * SEQ) and packed["label"].shape == (8, SEQ)
    assert "example_id" not in packed
    examples = {}  # every padded example, by its token sequence
    for b in pipeline_from_config(_config(), tok, tpl, one_pass=True):
        for e in range(len(b["label"])):
            n = (b["segment_ids"][e] != 0).sum(-1)
            if n[0]:
                key = tuple(b["input_ids"][e, 0, :n[0]])
                examples[key] = (b, e, n)
    seg = packed["segment_ids"]
    found = 0
    for r in range(seg.shape[0]):
        for k in range(SEQ):
            at = seg[r] == 2 * k + 1
            if not at.any():
                assert not packed["label"][r, k]
                continue
            b, e, n = examples[tuple(packed["input_ids"][r, at])]
            found += 1
            assert packed["label"][r, k] == b["label"][e]
            np.testing.assert_array_equal(packed["loss_mask"][r, at], b["loss_mask"][e, 0, :n[0]])
            np.testing.assert_array_equal(packed["positions"][r, at], np.arange(n[0]))
            kl = seg[r] == 2 * k + 2
            # the KL sequence: this example's prompt with another example's completion
            np.testing.assert_array_equal(packed["input_ids"][r, kl], b["input_ids"][e, 1, :n[1]])
            np.testing.assert_array_equal(packed["loss_mask"][r, kl], b["loss_mask"][e, 1, :n[1]])
    assert found > 8  # more examples than padded rows in the same memory
    assert (seg != 0).mean() > 0.8


def test_packed_kto_run_trains_on_eight_devices(tmp_path):
    run(_config(**{"data.pack_pairs": True, "optimizer.warmup_steps": 0.0}), str(tmp_path))
    rows = [json.loads(x) for x in open(tmp_path / "metrics.jsonl")]
    first = next(r for r in rows if r.get("step") == 1)
    second = next(r for r in rows if r.get("step") == 2)
    # step 1: the policy is the reference, r = 0 and KL = 0, so each example's loss is
    # 1 - sigmoid(0) = 0.5 whatever its label
    np.testing.assert_allclose(first["loss"], 0.5, rtol=1e-5)
    assert first["packing_efficiency"] > 0.8
    assert second["loss"] != first["loss"] and np.isfinite(second["kl"])


def test_packed_kto_iterator_resumes_with_the_next_batch(tools):
    tok, tpl = tools
    config = _config(**{"data.pack_pairs": True, "batch_size": 2})
    it = iter(pipeline_from_config(config, tok, tpl))
    for _ in range(3):
        next(it)
    state = it.get_state()
    expected = [next(it) for _ in range(3)]
    again = iter(pipeline_from_config(config, tok, tpl))
    again.set_state(state)
    for want in expected:
        got = next(again)
        assert set(got) == set(want)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)
