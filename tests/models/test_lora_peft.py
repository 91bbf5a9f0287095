"""LoRA parity with PEFT (PyTorch, float32): medjax adapters exported to PEFT, PEFT-made
adapters imported into medjax, round trips, and adapter configs medjax refuses."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import peft
import pytest
import torch
import transformers
from conftest import build_hf_model, hf_logits, random_ids

from medjax.models import forward, load_hf
from medjax.models.lora import (ADAPTER_CONFIG, ADAPTER_WEIGHTS, LoraConfig, LoraError, attach,
                                init_adapters, load_peft, merge, read_peft_config, save_peft)

TOL = 1e-4
MATERIAL = 100 * TOL  # the adapter must move the logits by far more than the tolerance
LENGTH = 24  # three times Mistral's sliding window below

BASE = dict(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
            rms_norm_eps=1e-5, initializer_range=0.15)
FAMILIES = {
    "llama": ("Llama", dict(BASE, rope_theta=500000.0)),
    "mistral": ("Mistral", dict(BASE, sliding_window=8, rope_theta=10000.0)),
}

# name -> medjax LoRA settings (alpha never equal to rank, so the scale is never 1)
LORA_CASES = {
    "attn": LoraConfig(rank=8, alpha=16.0, targets="q,k,v,o"),
    "mlp": LoraConfig(rank=8, alpha=4.0, targets="gate,up,down"),
    "rslora": LoraConfig(rank=4, alpha=12.0, rslora=True, targets="all"),
}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """base(family) -> (HF directory, medjax config, medjax params, base logits, ids)."""
    cache = {}

    def get(family):
        if family not in cache:
            cls, kwargs = FAMILIES[family]
            path = tmp_path_factory.mktemp(f"lora_{family}")
            model = build_hf_model(path, cls, seed=0, **kwargs)
            config, params = load_hf(path, dtype="float32")
            ids = random_ids(2, LENGTH, config.vocab_size, seed=7)
            cache[family] = (str(path), config, params, hf_logits(model, ids), ids)
        return cache[family]

    return get


def fresh_hf(path):
    """A new float32 transformers model from ``path`` (PEFT injects its layers in place)."""
    return transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def peft_logits(hf_dir, adapter_dir, ids):
    model = peft.PeftModel.from_pretrained(fresh_hf(hf_dir), adapter_dir).eval()
    return hf_logits(model, ids)


def randomize(adapters, seed):
    """Every A and B replaced by N(0, 0.05) values, so the adapter changes the outputs."""
    rs = np.random.RandomState(seed)
    return jax.tree.map(lambda x: jnp.asarray(rs.normal(0.0, 0.05, x.shape), x.dtype), adapters)


_forward = jax.jit(forward, static_argnums=0)  # one compilation per config


def logits(config, params, ids):
    return np.asarray(_forward(config, params, jnp.asarray(ids)))


@pytest.fixture(scope="module")
def exported(base, tmp_path_factory):
    """exported(family, case) -> (config with lora, adapters, adapter dir); saved once."""
    cache = {}

    def get(family, case):
        if (family, case) not in cache:
            hf_dir, config, _, _, _ = base(family)
            cfg = config.replace(lora=LORA_CASES[case])
            adapters = randomize(init_adapters(cfg, jax.random.PRNGKey(0)), seed=1)
            adir = str(tmp_path_factory.mktemp(f"adapter_{family}_{case}"))
            save_peft(cfg, adapters, adir, base_path=hf_dir)
            cache[family, case] = (cfg, adapters, adir)
        return cache[family, case]

    return get


@pytest.mark.parametrize("case", sorted(LORA_CASES))
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_exported_adapter_matches_peft(base, exported, family, case):
    hf_dir, config, params, base_ref, ids = base(family)
    cfg, adapters, adir = exported(family, case)
    assert sorted(os.listdir(adir)) == sorted([ADAPTER_CONFIG, ADAPTER_WEIGHTS])

    ours = logits(cfg, attach(params, adapters), ids)
    ref = peft_logits(hf_dir, adir, ids)
    assert ours.shape == ref.shape == base_ref.shape
    np.testing.assert_allclose(ours, ref, atol=TOL, rtol=0)
    # The adapter matters: without it (or in PEFT's base model) the logits are far off.
    assert np.abs(ref - base_ref).max() > MATERIAL
    assert np.abs(logits(config, params, ids) - ref).max() > MATERIAL
    # ... and so does its scale (rsLoRA's alpha / sqrt(r) against alpha / r, alpha != r).
    lora = cfg.lora
    other = LoraConfig(rank=lora.rank, alpha=lora.alpha, rslora=not lora.rslora,
                       targets=lora.targets)
    assert other.scale != lora.scale
    wrong = logits(cfg.replace(lora=other), attach(params, adapters), ids)
    assert np.abs(wrong - ref).max() > MATERIAL


@pytest.mark.parametrize("case", sorted(LORA_CASES))
def test_round_trip_through_peft_files(base, exported, case):
    hf_dir, config, _, _, _ = base("llama")
    cfg, adapters, adir = exported("llama", case)
    lora, base_path = read_peft_config(adir)
    assert lora == cfg.lora
    assert base_path == hf_dir
    loaded = load_peft(adir, config.replace(lora=lora))
    assert jax.tree.structure(loaded) == jax.tree.structure(adapters)
    for got, want in zip(jax.tree.leaves(loaded), jax.tree.leaves(adapters)):
        assert got.shape == want.shape and got.dtype == jnp.float32
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))

    # The files are PEFT's layout: A [r, in], B [out, r] per layer and projection.
    from safetensors.numpy import load_file
    tensors = load_file(os.path.join(adir, ADAPTER_WEIGHTS))
    assert len(tensors) == 2 * config.num_layers * len(lora.targets)
    for name in lora.targets:
        module = "self_attn" if name in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
        for part, key in (("a", "lora_A"), ("b", "lora_B")):
            t = tensors[f"base_model.model.model.layers.1.{module}.{name}.{key}.weight"]
            src = adapters["layers"]["attn" if module == "self_attn" else "mlp"]["lora"]
            np.testing.assert_array_equal(t, np.asarray(src[name][part][1]).T)


# name -> (family, PEFT LoraConfig keywords)
PEFT_CASES = {
    "llama_list": ("llama", dict(r=4, lora_alpha=8,
                                 target_modules=["q_proj", "v_proj", "o_proj", "down_proj"])),
    # PEFT's regex form (matched against whole module names) and rsLoRA
    "mistral_regex_rslora": ("mistral", dict(r=4, lora_alpha=6, use_rslora=True,
                                             target_modules=r".*\.(k_proj|gate_proj|up_proj)")),
}


@pytest.mark.parametrize("case", sorted(PEFT_CASES))
def test_peft_made_adapter_imported(base, tmp_path, case):
    family, kwargs = PEFT_CASES[case]
    hf_dir, config, params, base_ref, ids = base(family)
    torch.manual_seed(3)
    made = peft.get_peft_model(fresh_hf(hf_dir), peft.LoraConfig(
        task_type="CAUSAL_LM", init_lora_weights=False, **kwargs))  # B random, not zero
    adir = str(tmp_path / "peft_adapter")
    made.save_pretrained(adir)
    ref = peft_logits(hf_dir, adir, ids)
    np.testing.assert_allclose(hf_logits(made.eval(), ids), ref, atol=1e-6, rtol=0)
    assert np.abs(ref - base_ref).max() > MATERIAL

    lora, base_path = read_peft_config(adir)
    assert lora.rank == kwargs["r"] and lora.alpha == kwargs["lora_alpha"]
    assert lora.rslora == kwargs.get("use_rslora", False)
    want = kwargs["target_modules"]
    if isinstance(want, str):
        want = [p for p in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                            "down_proj") if p in want]
    assert set(lora.targets) == set(want)
    assert base_path == hf_dir
    cfg = config.replace(lora=lora)
    adapters = load_peft(adir, cfg)
    np.testing.assert_allclose(logits(cfg, attach(params, adapters), ids), ref, atol=TOL,
                               rtol=0)

    merged = merge(cfg, params, adapters)
    assert "lora" not in merged["layers"]["attn"] and "lora" not in merged["layers"]["mlp"]
    np.testing.assert_allclose(logits(config, merged, ids), ref, atol=TOL, rtol=0)
    # merge made new weights; the base parameters are untouched
    np.testing.assert_allclose(logits(config, params, ids), base_ref, atol=TOL, rtol=0)


# field -> value written into an otherwise valid adapter_config.json
DAMAGE = {
    "peft_type": "IA3",
    "use_dora": True,
    "bias": "all",
    "task_type": "SEQ_2_SEQ_LM",
    "fan_in_fan_out": True,
    "modules_to_save": ["lm_head"],
    "layers_to_transform": [0],
    "rank_pattern": {"q_proj": 2},
    "alpha_pattern": {"q_proj": 2},
    "target_modules": ["embed_tokens"],
    "r": None,  # removed
    # PEFT options that change its forward pass: plain LoRA would silently differ
    "lora_bias": True,
    "layer_replication": [[0, 2], [1, 2]],
    "trainable_token_indices": [1, 2],
    "alora_invocation_tokens": [5, 6],
    "target_parameters": ["mlp.experts.gate_up_proj"],
}


@pytest.mark.parametrize("field", sorted(DAMAGE))
def test_unsupported_adapter_config_is_named(exported, tmp_path, field):
    _, _, adir = exported("llama", "attn")
    bad_dir = tmp_path / "damaged"
    shutil.copytree(adir, bad_dir)
    file = bad_dir / ADAPTER_CONFIG
    cfg = json.loads(file.read_text())
    if DAMAGE[field] is None:
        del cfg[field]
    else:
        cfg[field] = DAMAGE[field]
    file.write_text(json.dumps(cfg))
    with pytest.raises(LoraError) as err:
        read_peft_config(str(bad_dir))
    msg = str(err.value)
    assert str(file) in msg and f"'{field}'" in msg, msg


@pytest.mark.filterwarnings("ignore:`lora_bias=True` was passed")
def test_peft_made_bias_adapter_refused(base, tmp_path):
    """A PEFT adapter with a bias on B (PEFT's ``lora_bias``) is not plain LoRA: medjax
    refuses its config rather than dropping the bias."""
    hf_dir, *_ = base("llama")
    made = peft.get_peft_model(fresh_hf(hf_dir), peft.LoraConfig(
        task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules=["q_proj"], lora_bias=True))
    adir = tmp_path / "bias_adapter"
    made.save_pretrained(adir)
    with pytest.raises(LoraError, match="lora_bias") as err:
        read_peft_config(str(adir))
    assert str(adir / ADAPTER_CONFIG) in str(err.value)
