"""python -m medjax.convert in both directions, and medjax model checkpoints."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
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
    assert r.returncode != 0 and "unknown model preset" in r.stderr
    assert jax.devices()  # the suite's own process is untouched
