"""python -m medjax.convert in both directions, and medjax model checkpoints."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from conftest import hf_logits, random_ids

from medjax.models import forward, load_hf
from medjax.models.checkpoint import load_model, save_model
from medjax.parallel import make_mesh

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args):
    env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def test_convert_cli_round_trip(hf_case, tmp_path):
    path, model, length = hf_case("mistral_window")
    ckpt, back = tmp_path / "ckpt", tmp_path / "back"
    r = _run("-m", "medjax.convert", "--to=medjax", f"--src={path}", f"--dst={ckpt}")
    assert r.returncode == 0, r.stderr
    r = _run("-m", "medjax.convert", "--to=hf", f"--src={ckpt}", f"--dst={back}")
    assert r.returncode == 0, r.stderr
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(back).eval()
    ids = random_ids(2, length, model.config.vocab_size, seed=11)
    np.testing.assert_allclose(hf_logits(reloaded, ids), hf_logits(model, ids), atol=1e-6, rtol=0)

    # An existing destination is refused with a one-line error, and left intact.
    before = sorted(os.listdir(back))
    r = _run("-m", "medjax.convert", "--to=hf", f"--src={ckpt}", f"--dst={back}")
    assert r.returncode != 0
    assert "already holds a checkpoint" in r.stderr and "Traceback" not in r.stderr
    assert sorted(os.listdir(back)) == before
    r = _run("-m", "medjax.convert", "--to=medjax", f"--src={tmp_path / 'missing'}",
             f"--dst={tmp_path / 'x'}")
    assert r.returncode != 0 and "no such directory" in r.stderr and "Traceback" not in r.stderr


def test_model_checkpoint_restores_on_another_mesh(hf_case, tmp_path):
    path, model, length = hf_case("llama_gqa")
    config, params = load_hf(path, mesh=make_mesh(data=1, fsdp=4, tensor=2))
    save_model(config, params, tmp_path / "ckpt")
    cfg2, params2 = load_model(tmp_path / "ckpt", mesh=make_mesh(data=2, fsdp=2, tensor=2))
    assert cfg2 == config
    assert params2["layers"]["mlp"]["up_proj"].addressable_shards[0].data.shape == (3, 32, 48)
    ids = random_ids(1, length, config.vocab_size, seed=12)
    np.testing.assert_allclose(np.asarray(forward(cfg2, params2, jnp.asarray(ids))),
                               hf_logits(model, ids), atol=1e-4, rtol=0)
    cfg16, params16 = load_model(tmp_path / "ckpt", param_dtype="bfloat16")
    assert params16["embed"]["embedding"].dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(params16["embed"]["embedding"], np.float32),
                               np.asarray(params["embed"]["embedding"]), rtol=1e-2)


def test_forward_demo_runs():
    r = _run("-m", "medjax.models", "--preset=mistral_tiny", "--length=24")
    assert r.returncode == 0, r.stderr
    assert "logits shape: (2, 24, 512)" in r.stdout
    r = _run("-m", "medjax.models", "--preset=nope")
    assert r.returncode != 0 and "model.preset='nope': unknown; known presets" in r.stderr
    assert jax.devices()  # the suite's own process is untouched


# ------------------------------------------------- training workdirs and reward models
def _short_run(name, workdir, **kw):
    from conftest import load_config

    from medjax.training import run
    c = load_config(name, **{"steps": 2, "batch_size": 8, "logging.every": 1,
                             "logging.progress": False, "eval.every": 0, "eval.at_start": False,
                             "checkpoint.every": 2, **kw})
    run(c, str(workdir))
    return c


@pytest.fixture(scope="module")
def reward_workdir(tmp_path_factory):
    """configs/reward.py for 2 steps: a reward run's workdir (and its config)."""
    workdir = tmp_path_factory.mktemp("reward_run")
    return workdir, _short_run("reward", workdir)


def _eval_rows(config):
    """One batch of the run's held-out preference rows, as its pipeline pads them."""
    from medjax.data.pipeline import pipeline_from_config
    from medjax.training.state import data_tools
    _, tokenizer, template = data_tools(config)
    batch = next(iter(pipeline_from_config(config, tokenizer, template, eval=True)))
    return {k: v for k, v in batch.items() if k != "example_id"}, tokenizer


def test_convert_cli_exports_a_reward_workdir(reward_workdir, tmp_path):
    from medjax.objectives.reward import rewards
    from medjax.models import load

    workdir, config = reward_workdir
    out = tmp_path / "rm"
    r = _run("-m", "medjax.convert", "--to=hf", f"--src={workdir}", f"--dst={out}")
    assert r.returncode == 0, r.stderr
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        out, dtype=torch.float32).eval()
    assert type(model).__name__ == "LlamaForSequenceClassification"
    batch, tokenizer = _eval_rows(config)
    # The pad id is the run's tokenizer's (<|finetune_right_pad_id|>), not EOS: no row ends
    # with it (rows end with <|eot_id|>), so transformers scores medjax's last token.
    assert model.config.pad_token_id == tokenizer.pad_id == 128004
    assert model.config.num_labels == 1

    loaded = load(str(workdir))
    model_config, params = loaded.config, loaded.params
    want = np.asarray(rewards(model_config, params, batch)).reshape(-1)
    seg = batch["segment_ids"].reshape(-1, config.seq_len)
    ids = np.where(seg != 0, batch["input_ids"].reshape(seg.shape), tokenizer.pad_id)
    with torch.no_grad():
        got = model(input_ids=torch.tensor(ids, dtype=torch.long),
                    attention_mask=torch.tensor(seg != 0, dtype=torch.long)).logits[:, 0]
    np.testing.assert_allclose(got.numpy(), want, atol=1e-4, rtol=0)
    assert np.ptp(want) > 1e-2  # distinct rewards, not one constant

    # A pad id that ends every response of the run's template is refused.
    eot = tokenizer.encode_special("<|eot_id|>")
    r = _run("-m", "medjax.convert", "--to=hf", f"--src={workdir}", f"--dst={tmp_path / 'x'}",
             f"--pad_token_id={eot}")
    assert r.returncode != 0 and "ends every response" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "x").exists()
    r = _run("-m", "medjax.convert", "--to=hf", f"--src={tmp_path}", f"--dst={tmp_path / 'x'}")
    assert r.returncode != 0 and "neither a medjax model checkpoint" in r.stderr, r.stderr


def test_init_from_a_reward_workdir_keeps_its_head(reward_workdir):
    from medjax.models import load
    from medjax.training.state import setup

    workdir, config = reward_workdir
    trained = load(str(workdir)).params
    c = config.copy_and_resolve_references()
    c.model.init_from = str(workdir)
    state = setup(c, 128256).state
    assert "lm_head" not in state["params"]
    np.testing.assert_array_equal(np.asarray(state["params"]["reward_head"]["kernel"]),
                                  np.asarray(trained["reward_head"]["kernel"]))
    c.objective.name = "dpo"
    with pytest.raises(ValueError, match="is a reward model.*cannot start a 'dpo' run"):
        setup(c, 128256)


def test_convert_exports_a_language_model_workdir(tmp_path):
    from medjax.convert import convert
    from medjax.models import load

    workdir = tmp_path / "sft"
    _short_run("sft", workdir, seq_len=64)
    convert("hf", str(workdir), str(tmp_path / "lm"))
    hf = json.loads((tmp_path / "lm" / "config.json").read_text())
    assert hf["architectures"] == ["LlamaForCausalLM"] and "pad_token_id" not in hf
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "lm",
                                                              dtype=torch.float32).eval()
    loaded = load(str(workdir))
    config, params = loaded.config, loaded.params
    ids = random_ids(2, 24, config.vocab_size, seed=13)
    np.testing.assert_allclose(np.asarray(forward(config, params, jnp.asarray(ids))),
                               hf_logits(model, ids), atol=1e-4, rtol=0)


def test_reward_model_through_a_medjax_checkpoint(hf_case, tmp_path, capsys):
    """HF classifier -> medjax model checkpoint (keeps the reward head) -> HF classifier."""
    from medjax.convert import convert
    from medjax.models import save_hf

    config, params = load_hf(hf_case("mistral_window")[0])
    del params["lm_head"]
    params["reward_head"] = {"kernel": jax.random.normal(jax.random.key(0),
                                                         (config.hidden_size,))}
    save_hf(config, params, tmp_path / "hf")
    convert("medjax", str(tmp_path / "hf"), str(tmp_path / "ckpt"))
    meta = json.loads((tmp_path / "ckpt" / "medjax_model.json").read_text())
    assert meta["head"] == "reward"
    cfg2, params2 = load_model(tmp_path / "ckpt")
    assert cfg2 == config and "lm_head" not in params2
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                 params2, params)
    convert("hf", str(tmp_path / "ckpt"), str(tmp_path / "back"))
    assert "defaults to the model's EOS id 2" in capsys.readouterr().err
    a = json.loads((tmp_path / "hf" / "config.json").read_text())
    b = json.loads((tmp_path / "back" / "config.json").read_text())
    assert a == b and a["architectures"] == ["MistralForSequenceClassification"]
    assert ((tmp_path / "hf" / "model.safetensors").read_bytes()
            == (tmp_path / "back" / "model.safetensors").read_bytes())
