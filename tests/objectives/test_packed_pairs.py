"""Padding-free preference batches (data.pack_pairs): the same pairs give the same
sequence log-probs, DPO losses, metrics and gradients packed as padded; the pipeline packs
whole pairs with their example ids; the precomputed reference table is looked up per
packed pair; a packed DPO run on 8 devices trains."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_config, pair_config

from medjax import models
from medjax.data.pipeline import PairToDocument, pair_real, pipeline_from_config
from medjax.objectives.preference import LOSS_TYPES, dpo_loss, sequence_logps
from medjax.training import run
from medjax.training.state import data_tools


def _config(**kw):
    return pair_config("dpo", **kw)


@pytest.fixture(scope="module")
def tools():
    return data_tools(_config())[1:]


def _padded(tools, n=8):
    tok, tpl = tools
    return next(iter(pipeline_from_config(_config(**{"batch_size": n}), tok, tpl,
                                          one_pass=True)))


def pack(padded: dict, rows: int, length: int) -> dict:
    """An independent packing of a padded batch's pairs, in order, next-fit into ``rows``
    rows of ``length``: pair k of a row at segments 2k+1 (chosen), 2k+2 (rejected)."""
    out = {k: np.zeros((rows, length), np.int32) for k in
           ("input_ids", "segment_ids", "positions", "loss_mask")}
    out["example_id"] = np.full((rows, length // 2), -1, np.int64)
    r, used, k = 0, 0, 0
    for p in range(len(padded["input_ids"])):
        doc = PairToDocument().map({key: padded[key][p] for key in padded})
        n = len(doc["input_ids"])
        if used + n > length:
            r, used, k = r + 1, 0, 0
        sl = slice(used, used + n)
        out["input_ids"][r, sl] = doc["input_ids"]
        out["loss_mask"][r, sl] = doc["loss_mask"]
        out["positions"][r, sl] = doc["pos"]
        out["segment_ids"][r, sl] = 2 * k + doc["side"]
        out["example_id"][r, k] = padded["example_id"][p]
        used, k = used + n, k + 1
    return out, r + 1


def _device(batch):
    return {k: jnp.asarray(v) for k, v in batch.items() if k != "example_id"}


def assert_same_loss(loss, params, padded, packed, *, metric_atol):
    """``loss(params, batch) -> (value, metrics)``: equal value, metrics and gradients on the
    padded and the packed form of the same pairs."""
    (la, ma), ga = jax.value_and_grad(loss, has_aux=True)(params, padded)
    (lb, mb), gb = jax.value_and_grad(loss, has_aux=True)(params, packed)
    np.testing.assert_allclose(float(lb), float(la), rtol=1e-5)
    for key in ma:
        np.testing.assert_allclose(float(mb[key]), float(ma[key]), rtol=1e-5,
                                   atol=metric_atol, err_msg=key)
    for x, y in zip(jax.tree.leaves(gb), jax.tree.leaves(ga)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-6)


def _slots(packed):
    """(row, slot) of each pair, in packing order."""
    ids = packed["example_id"]
    return [(r, k) for r in range(ids.shape[0]) for k in range(ids.shape[1]) if ids[r, k] >= 0]


def test_packed_sequence_logps_equal_padded(tools):
    padded = _padded(tools)
    packed, used = pack(padded, 8, 2 * 96)
    assert used < 8  # the pairs really share rows
    assert np.array_equal(pair_real(packed).nonzero()[0].size, 8)
    config = models.get_preset("llama3_tiny", vocab_size=128256)
    params = models.init_params(config, jax.random.key(0))
    want, wlen = sequence_logps(config, params, _device(padded), chunk_size=64)
    got, glen = sequence_logps(config, params, _device(packed), chunk_size=64)
    slots = _slots(packed)
    got = np.stack([np.asarray(got)[r, k] for r, k in slots])
    glen = np.stack([np.asarray(glen)[r, k] for r, k in slots])
    np.testing.assert_array_equal(glen, np.asarray(wlen))
    np.testing.assert_allclose(got, np.asarray(want), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("loss_type", ["sigmoid", "kto_pair", "orpo"])
def test_packed_dpo_loss_metrics_and_gradients_equal_padded(tools, loss_type):
    assert loss_type in LOSS_TYPES
    padded = _padded(tools)
    packed, _ = pack(padded, 8, 2 * 96)
    config = models.get_preset("llama3_tiny", vocab_size=128256)
    params = models.init_params(config, jax.random.key(1))
    ref = np.random.RandomState(0).uniform(-300, -100, (8, 2)).astype(np.float32)
    ref_packed = np.zeros(packed["example_id"].shape + (2,), np.float32)
    for p, (r, k) in enumerate(_slots(packed)):
        ref_packed[r, k] = ref[p]

    def loss(p, batch):
        return dpo_loss(config, p, batch, loss_type=loss_type, beta=0.1, sft_weight=0.3,
                        chunk_size=64)

    assert_same_loss(loss, params, dict(_device(padded), ref_logps=ref),
                     dict(_device(packed), ref_logps=ref_packed), metric_atol=1e-4)


def test_packed_reward_loss_metrics_and_gradients_equal_padded(tools):
    from medjax.objectives.reward import reward_loss
    padded = _padded(tools)
    packed, _ = pack(padded, 8, 2 * 96)
    config = models.get_preset("llama3_tiny", vocab_size=128256)
    params = models.init_params(config, jax.random.key(2))
    params = {k: v for k, v in params.items() if k != "lm_head"}
    params["reward_head"] = {"kernel": jax.random.normal(jax.random.key(3), (64,)) * 0.1}

    def loss(p, batch):
        return reward_loss(config, p, batch, margin=0.1, centering=0.01)

    assert_same_loss(loss, params, _device(padded), _device(packed), metric_atol=1e-5)


def test_the_pipeline_packs_whole_pairs_with_their_ids(tools):
    tok, tpl = tools
    config = _config(**{"data.pack_pairs": True})
    packed = next(iter(pipeline_from_config(config, tok, tpl, one_pass=True)))
    assert packed["input_ids"].shape == (8, 192) and packed["example_id"].shape == (8, 96)
    padded = {}  # every pair of the data, by example id
    for b in pipeline_from_config(_config(), tok, tpl, one_pass=True):
        for p, i in enumerate(b["example_id"]):
            if b["loss_mask"][p, 0].any():
                padded[int(i)] = {k: v[p] for k, v in b.items()}
    real = pair_real(packed)
    assert real.sum() > 8  # more pairs than padded rows in the same memory
    seg = packed["segment_ids"]
    for r, k in zip(*np.nonzero(real)):
        want = padded[int(packed["example_id"][r, k])]
        for side in (0, 1):
            at = seg[r] == 2 * k + 1 + side
            n = int((want["segment_ids"][side] != 0).sum())
            np.testing.assert_array_equal(packed["input_ids"][r, at], want["input_ids"][side, :n])
            np.testing.assert_array_equal(packed["loss_mask"][r, at], want["loss_mask"][side, :n])
            np.testing.assert_array_equal(packed["positions"][r, at], np.arange(n))
    fill = (seg != 0).mean()
    assert fill > 0.8, fill


def test_packed_run_precomputed_equals_frozen_on_eight_devices(tmp_path):
    """Step 1 from the same policy and reference: loss log 2 and equal metrics whether the
    reference is frozen or its log-probs are looked up per packed pair."""
    rows = {}
    for ref in ("frozen", "precompute"):
        run(_config(**{"data.pack_pairs": True, "objective.reference": ref,
                       "optimizer.warmup_steps": 0.0}), str(tmp_path / ref))
        rows[ref] = [json.loads(x) for x in open(tmp_path / ref / "metrics.jsonl")]
    first = {n: next(r for r in rows[n] if r.get("step") == 1) for n in rows}
    np.testing.assert_allclose(first["frozen"]["loss"], np.log(2), rtol=1e-5)
    for key in ("loss", "grad_norm", "logps/chosen", "rewards/margins"):
        np.testing.assert_allclose(first["precompute"][key], first["frozen"][key], rtol=1e-5,
                                   atol=1e-6)
    second = {n: next(r for r in rows[n] if r.get("step") == 2) for n in rows}
    np.testing.assert_allclose(second["precompute"]["loss"], second["frozen"]["loss"],
                               rtol=1e-4)
    assert abs(second["frozen"]["rewards/margins"]) > 0


def test_pack_pairs_is_refused_for_other_objectives():
    from medjax.configs import check
    c = load_config("sft", **{"data.pack_pairs": True})
    with pytest.raises(ValueError, match="data.pack_pairs=True: .*'sft'"):
        check(c)
