"""Logit parity with transformers (PyTorch, float32), and HF round trips."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
import transformers
from conftest import HF_CASES, hf_logits, random_ids

from medjax.models import forward, load_hf, save_hf

TOL = 1e-4


@pytest.mark.parametrize("scan", [True, False], ids=["scan", "loop"])
@pytest.mark.parametrize("case", sorted(HF_CASES))
def test_logits_match_transformers(hf_case, case, scan):
    path, model, length = hf_case(case)
    config, params = load_hf(path, scan_layers=scan)
    ids = random_ids(2, length, config.vocab_size, seed=1)
    ref = hf_logits(model, ids)
    assert np.abs(ref).max() > 1.0, "logits too small for the comparison to mean much"
    out = np.asarray(forward(config, params, jnp.asarray(ids)))
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, atol=TOL, rtol=0)


@pytest.mark.parametrize("case", ["llama_gqa", "mistral_window"])
def test_blocked_attention_logits_match_transformers(hf_case, case, monkeypatch):
    """attention='blocked' with blocks of 8 (5 of them at length 40; the window of 8 then
    starts inside an earlier block) gives transformers' logits."""
    from medjax.models import decoder
    monkeypatch.setattr(decoder, "ATTENTION_BLOCK", 8)
    path, model, length = hf_case(case)
    config, params = load_hf(path, attention="blocked")
    assert length > 2 * 8
    ids = random_ids(2, length, config.vocab_size, seed=1)
    out = np.asarray(forward(config, params, jnp.asarray(ids)))
    np.testing.assert_allclose(out, hf_logits(model, ids), atol=TOL, rtol=0)


def test_case_features_are_exercised(hf_case):
    """The special features change the logits: a model without them would fail parity."""
    cfg, params = load_hf(hf_case("mistral_window")[0])
    assert cfg.sliding_window == 8 and cfg.family == "mistral"
    path, model, length = hf_case("mistral_window")
    ids = random_ids(1, length, cfg.vocab_size, seed=2)
    ref = hf_logits(model, ids)
    no_window = np.asarray(forward(cfg.replace(sliding_window=None), params, jnp.asarray(ids)))
    assert np.abs(no_window - ref).max() > 100 * TOL

    path, model, length = hf_case("llama31_scaling")
    cfg, params = load_hf(path)
    assert cfg.rope_scaling is not None and cfg.rope_scaling.original_max_position_embeddings == 16
    ids = random_ids(1, length, cfg.vocab_size, seed=3)
    ref = hf_logits(model, ids)
    unscaled = np.asarray(forward(cfg.replace(rope_scaling=None), params, jnp.asarray(ids)))
    assert np.abs(unscaled - ref).max() > 100 * TOL

    cfg, _ = load_hf(hf_case("llama_tied")[0])
    assert cfg.tie_embeddings
    cfg, params = load_hf(hf_case("llama_gqa")[0])
    assert cfg.num_kv_heads < cfg.num_heads and "lm_head" in params


@pytest.mark.parametrize("case", ["llama_gqa", "llama_tied", "llama31_scaling", "mistral_window"])
def test_round_trip_through_save_hf(hf_case, tmp_path, case):
    path, model, length = hf_case(case)
    config, params = load_hf(path)
    out_dir = tmp_path / "exported"
    save_hf(config, params, out_dir)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out_dir).eval()
    assert type(reloaded) is type(model)
    ids = random_ids(2, length, config.vocab_size, seed=4)
    np.testing.assert_allclose(hf_logits(reloaded, ids), hf_logits(model, ids), atol=1e-6, rtol=0)
    # The exported config carries the features (read back by transformers itself).
    assert reloaded.config.tie_word_embeddings == model.config.tie_word_embeddings
    assert getattr(reloaded.config, "sliding_window", None) == getattr(model.config,
                                                                        "sliding_window", None)


def test_sharded_export_and_bf16(hf_case, tmp_path):
    path, model, length = hf_case("llama_gqa")
    config, params = load_hf(path)
    out_dir = tmp_path / "sharded"
    save_hf(config, params, out_dir, max_shard_size=40_000, dtype="bfloat16")
    files = sorted(os.listdir(out_dir))
    shards = [f for f in files if f.endswith(".safetensors")]
    assert len(shards) > 2 and "model.safetensors.index.json" in files
    index = json.load(open(out_dir / "model.safetensors.index.json"))
    assert set(index["weight_map"].values()) == set(shards)

    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out_dir, dtype="float32").eval()
    cfg16, params16 = load_hf(out_dir, dtype="bfloat16")
    assert params16["layers"]["attn"]["q_proj"].dtype == jnp.bfloat16
    assert cfg16.dtype == "bfloat16"
    # bf16 weights read back from the sharded export equal what transformers reads.
    cfg32, params32 = load_hf(out_dir, dtype="float32")
    ids = random_ids(1, length, config.vocab_size, seed=5)
    np.testing.assert_allclose(np.asarray(forward(cfg32, params32, jnp.asarray(ids))),
                               hf_logits(reloaded, ids), atol=TOL, rtol=0)
    # bf16 compute stays close to the float32 model.
    out16 = np.asarray(forward(cfg16, params16, jnp.asarray(ids)))
    assert np.abs(out16 - hf_logits(model, ids)).max() < 0.25
