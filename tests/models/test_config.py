"""ModelConfig: presets, Hugging Face config.json in both layouts, unsupported fields."""

import dataclasses

import pytest
import transformers

from medjax.models import ConfigError, ModelConfig, RopeScaling, get_preset

# Parameter counts published for the public checkpoints.
PUBLISHED = {
    "llama3_8b": 8_030_261_248,
    "llama3_70b": 70_553_706_496,
    "llama31_8b": 8_030_261_248,
    "mistral_7b": 7_241_732_096,
    "mixtral_8x7b": 46_702_792_704,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_preset_sizes_match_published_models(name):
    assert get_preset(name).num_params == PUBLISHED[name]


def test_preset_family_features():
    assert get_preset("mistral_7b").sliding_window == 4096
    assert get_preset("llama31_70b").rope_scaling == RopeScaling(8.0, 1.0, 4.0, 8192)
    assert get_preset("llama3_8b").rope_scaling is None
    with pytest.raises(ValueError, match="model.preset=.*unknown; known presets"):
        get_preset("llama9_1t")


LLAMA31_LEGACY = {
    "model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 128256,
    "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0, "max_position_embeddings": 131072, "tie_word_embeddings": False,
    "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                     "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "hidden_act": "silu",
}


def test_from_hf_reads_both_rope_layouts():
    legacy = ModelConfig.from_hf(LLAMA31_LEGACY)
    v5 = dict(LLAMA31_LEGACY)
    rope = dict(v5.pop("rope_scaling"), rope_theta=v5.pop("rope_theta"))
    v5["rope_parameters"] = rope
    assert ModelConfig.from_hf(v5) == legacy
    expected = get_preset("llama31_8b", eos_token_id=(128001, 128008, 128009))
    assert legacy == expected


@pytest.mark.parametrize("family", ["llama", "mistral"])
def test_to_hf_is_read_by_transformers_and_back(family):
    cfg = get_preset("llama31_8b" if family == "llama" else "mistral_7b")
    hf_dict = cfg.to_hf()
    hf_cfg = transformers.AutoConfig.for_model(**hf_dict)
    assert hf_cfg.model_type == family
    assert hf_cfg.num_key_value_heads == cfg.num_kv_heads
    back = ModelConfig.from_hf(hf_cfg.to_dict())
    assert back == cfg
    # transformers 5 normalises rope settings into rope_parameters.
    if family == "llama":
        assert hf_cfg.rope_parameters["rope_type"] == "llama3"


@pytest.mark.parametrize("field,value,match", [
    ("model_type", "gpt2", "model_type.*unsupported architecture 'gpt2'"),
    ("architectures", ["LlamaForTokenClassification"], "architectures"),
    # A sequence classifier is read as a reward model, which has one label (HF's default: 2).
    ("architectures", ["LlamaForSequenceClassification"], "'id2label'.*with 2 labels"),
    ("hidden_act", "gelu", "hidden_act"),
    ("attention_bias", True, "attention_bias"),
    ("rope_scaling", {"rope_type": "yarn", "factor": 4.0}, "rope_scaling.rope_type.*'yarn'"),
    ("rope_scaling", {"rope_type": "llama3", "factor": 8.0}, "low_freq_factor"),
    ("num_hidden_layers", None, "num_hidden_layers"),
])
def test_unsupported_fields_are_clear_errors(tmp_path, field, value, match):
    import json
    bad = dict(LLAMA31_LEGACY, **{field: value})
    (tmp_path / "config.json").write_text(json.dumps(bad))
    with pytest.raises(ConfigError, match=match) as e:
        ModelConfig.from_hf(tmp_path / "config.json")
    assert "config.json" in str(e.value)


def test_config_validation():
    with pytest.raises(ConfigError, match="num_kv_heads"):
        get_preset("llama3_tiny", num_kv_heads=3)
    with pytest.raises(ConfigError, match="attention"):
        get_preset("llama3_tiny", attention="flash")
    with pytest.raises(ConfigError, match="remat_policy"):
        get_preset("llama3_tiny", remat_policy="some")
    cfg = get_preset("llama31_tiny")
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert hash(cfg) == hash(dataclasses.replace(cfg))
