"""LoRA runs: new adapters change nothing, only adapters train, the base is the preference
reference (shared, not copied), resume is exact, and a run on a Hugging Face base exports
an adapter that PEFT loads onto that base with medjax's logits."""

import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import ROOT, load_config, readme_block, run_readme_block, tiny_llama3_dir

from medjax import models
from medjax.models import lora as lora_lib
from medjax.objectives.preference import sequence_logps
from medjax.training import run
from medjax.training.state import setup

LORA = {"model.lora.rank": 4, "model.lora.alpha": 8.0}


def _sft(**kw):
    return load_config("sft", **{"steps": 4, "batch_size": 8, "seq_len": 64,
                                 "logging.every": 1, "logging.progress": False,
                                 "eval.every": 0, "eval.batches": 1, "eval.at_start": False,
                                 "checkpoint.every": 2, "optimizer.warmup_steps": 0.0,
                                 "optimizer.lr": 1e-2, **LORA, **kw})


def _host(tree):
    return jax.tree.map(lambda x: np.array(jax.device_get(x)), tree)


def _batch(s, config):
    from medjax.data.pipeline import pipeline_from_config
    from medjax.training.batches import to_global
    local = next(iter(pipeline_from_config(config, s.tokenizer, s.template)))
    local.pop("example_id", None)
    return to_global(local, s.batch_sharding)


def test_new_adapters_change_nothing_and_only_adapters_train():
    config = _sft(**{"model.lora.targets": "q,v,down"})
    s = setup(config)
    base = _host(s.frozen)
    trainable = s.state["params"]
    assert set(trainable) == {"layers"}
    assert {p for m in trainable["layers"].values() for p in m["lora"]} == {
        "q_proj", "v_proj", "down_proj"}
    ids = jnp.asarray(np.random.RandomState(0).randint(0, 1000, (2, 16)))
    plain = models.forward(s.model_config.replace(lora=None), s.frozen, ids)
    adapted = models.forward(s.model_config, s.model_params(trainable), ids)
    np.testing.assert_array_equal(np.asarray(adapted), np.asarray(plain))  # B = 0: exact

    before = _host(trainable)
    batch = _batch(s, config)
    state = s.state
    for _ in range(2):
        state, metrics = s.step_fn(state, batch)
        assert int(metrics["nonfinite"]) == 0
    after = _host(state["params"])
    jax.tree.map(np.testing.assert_array_equal, _host(s.frozen), base)  # the base is frozen
    for module in after["layers"].values():
        for name, ab in module["lora"].items():
            assert np.abs(ab["b"]).max() > 0, name  # B left zero: gradients reached it
    changed = [not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(after),
                                                         jax.tree.leaves(before))]
    assert all(changed)
    # the optimizer state holds the adapters' moments only: no base-sized array
    biggest = max(x.size for x in jax.tree.leaves(state["opt_state"]))
    assert biggest == max(x.size for x in jax.tree.leaves(after))


def test_lora_dpo_reference_is_the_base_shared_not_copied(tmp_path):
    hf = tiny_llama3_dir(tmp_path / "base")
    config = load_config("dpo", **{"steps": 2, "batch_size": 8, "seq_len": 64,
                                   "logging.progress": False, "eval.every": 0,
                                   "model.init_from": hf, "model.vocab_size": 0,
                                   "objective.reference": "frozen",
                                   "optimizer.warmup_steps": 0.0, "optimizer.lr": 1e-2,
                                   **LORA})
    from medjax.training.reference import build_reference
    s = setup(config)
    refs = build_reference(config, s.unit, s.mesh, s.model_config.replace(lora=None), s.frozen,
                           share=True)
    ref = refs["train"]
    assert all(a is b for a, b in zip(jax.tree.leaves(ref.params), jax.tree.leaves(s.frozen)))
    batch = _batch(s, config)
    batch = dict(batch, ref_logps=ref.ref_logps(None, batch))
    state = s.state
    for _ in range(2):
        state, _ = s.step_fn(state, batch)
    batch.pop("ref_logps")
    # The reference's log-probs are those of the base model loaded on its own...
    own = models.load(hf)
    expect, _ = sequence_logps(own.config, own.params, jax.device_get(batch),
                               chunk_size=config.objective.loss_chunk_size)
    got = ref.ref_logps(None, batch)
    np.testing.assert_allclose(np.asarray(got), np.asarray(expect), rtol=1e-5, atol=1e-4)
    # ... while the trained policy's are not.
    policy, _ = sequence_logps(s.model_config, s.model_params(state["params"]), batch,
                               chunk_size=config.objective.loss_chunk_size)
    assert np.abs(np.asarray(policy) - np.asarray(got)).max() > 1e-3


def test_lora_reward_model_trains_its_head_and_loads_merged(tmp_path):
    from medjax.objectives.reward import rewards
    config = load_config("reward", **{"steps": 2, "batch_size": 8, "seq_len": 64,
                                      "logging.progress": False, "eval.every": 0,
                                      "optimizer.warmup_steps": 0.0, **LORA})
    s = setup(config)
    assert set(s.state["params"]) == {"layers", "reward_head"} and "lm_head" not in s.frozen
    head0 = _host(s.state["params"]["reward_head"])
    run(config, str(tmp_path / "rm"))
    with ocp.StandardCheckpointer() as c:
        trained = c.restore(str(tmp_path / "rm" / "checkpoints" / "2" / "state"))["params"]
    assert not np.array_equal(np.asarray(trained["reward_head"]["kernel"]), head0["kernel"])
    merged = models.load(tmp_path / "rm")
    assert merged.head == "reward" and "lm_head" not in merged.params
    batch = jax.device_get(_batch(s, config))
    expect = rewards(s.model_config, s.model_params(jax.device_put(trained)), batch)
    got = rewards(merged.config, merged.params, batch)
    np.testing.assert_allclose(np.asarray(got), np.asarray(expect), rtol=1e-5, atol=1e-5)


def _metrics(workdir):
    return [json.loads(x) for x in open(os.path.join(workdir, "metrics.jsonl"))]


def test_lora_resume_after_losing_the_last_checkpoint_is_exact(tmp_path):
    """A run that lost everything after its step-2 checkpoint (as after kill -9) resumes
    from it: the adapters, their optimizer state and the metrics equal an uninterrupted
    run's (8 devices, fsdp=4 x tensor=2: adapters sharded like their projections)."""
    mesh = {"mesh.fsdp": 4, "mesh.tensor": 2, "model.lora.dropout": 0.1}
    straight, cut = tmp_path / "straight", tmp_path / "cut"
    run(_sft(**mesh), str(straight))
    run(_sft(**mesh), str(cut))
    shutil.rmtree(cut / "checkpoints" / "4")
    run(_sft(**mesh), str(cut))
    with ocp.StandardCheckpointer() as c:
        a = c.restore(str(straight / "checkpoints" / "4" / "state"))
        b = c.restore(str(cut / "checkpoints" / "4" / "state"))
    assert not any("embed" in str(p) for p, _ in jax.tree_util.tree_leaves_with_path(a))
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)
    la = {r["step"]: r["loss"] for r in _metrics(straight) if "loss" in r}
    lb = {r["step"]: r["loss"] for r in _metrics(cut) if "loss" in r}
    assert la == lb and sorted(la) == [1, 2, 3, 4]


@pytest.mark.slow  # the lost-checkpoint test above covers the restore; this adds the kill
def test_lora_kill_minus_nine_then_resume_is_exact(tmp_path):
    import signal
    import time
    flags = ["--config=configs/sft.py", "--config.steps=8", "--config.batch_size=8",
             "--config.seq_len=64", "--config.checkpoint.every=4", "--config.eval.every=0",
             "--config.eval.at_start=False", "--config.optimizer.warmup_steps=0",
             "--config.model.lora.rank=4", "--config.model.lora.dropout=0.1",
             "--config.logging.every=1"]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"

    def start(wd):
        return subprocess.Popen([sys.executable, "-m", "medjax.train", f"--workdir={wd}",
                                 *flags], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    straight, killed = tmp_path / "straight", tmp_path / "killed"
    out = start(straight).communicate(timeout=900)
    proc = start(killed)
    deadline = time.time() + 600
    while time.time() < deadline and not (killed / "checkpoints" / "4").exists():
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert not (killed / "checkpoints" / "8").exists(), out
    p = start(killed)
    _, err = p.communicate(timeout=900)
    assert p.returncode == 0, err[-3000:]
    with ocp.StandardCheckpointer() as c:
        a = c.restore(str(straight / "checkpoints" / "8" / "state"))
        b = c.restore(str(killed / "checkpoints" / "8" / "state"))
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)
    la = {r["step"]: r["loss"] for r in _metrics(straight) if "loss" in r}
    assert la == {r["step"]: r["loss"] for r in _metrics(killed) if "loss" in r}


def _cli(module, *args):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    r = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT,
                       env=dict(env, JAX_PLATFORMS="cpu"), capture_output=True, text=True,
                       timeout=900)
    return r


def test_readme_lora_block_runs_and_peft_gets_medjax_logits(tmp_path):
    """The README's LoRA block as written (steps cut to 3 and 2): a Hugging Face base, SFT
    with LoRA, --to=peft and --to=hf, PEFT loading the adapter onto the base, generation from
    the adapter directory, DPO with new adapters. Then PEFT's logits equal medjax's, medjax
    reads the adapter directory back (merged), and model.init_from=ADAPTER_DIR continues it."""
    import torch
    import transformers
    peft = pytest.importorskip("peft")
    block = readme_block("LoRA (low-rank adapters)")
    assert "--config.steps=20" in block and "--config.steps=10" in block
    block = block.replace("--config.steps=20", "--config.steps=3").replace(
        "--config.steps=10", "--config.steps=2")
    hf = tiny_llama3_dir(tmp_path / "Meta-Llama-3-8B-Instruct")
    work = tmp_path / "clone"
    run_readme_block(block, work, hf)
    runs = work / "runs"
    wd, adir = runs / "sft-lora", runs / "sft-lora-adapter"
    cfg = json.load(open(adir / "adapter_config.json"))
    assert cfg["base_model_name_or_path"] == os.path.abspath(hf) and cfg["r"] == 16
    assert {"config.json", "model.safetensors"} <= set(os.listdir(runs / "sft-lora-merged"))
    dpo = [json.loads(x) for x in open(runs / "dpo-lora" / "metrics.jsonl")]
    assert dpo[-1]["step"] == 2 and any("rewards/margins" in m for m in dpo)

    ids = np.random.RandomState(1).randint(0, 128000, (2, 12))
    ours = models.load(wd)
    assert ours.config.lora is None  # merged
    logits = np.asarray(models.forward(ours.config, ours.params, jnp.asarray(ids)))
    base = transformers.AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32)
    with torch.no_grad():
        plain = base(torch.tensor(ids)).logits.numpy()
        theirs = peft.PeftModel.from_pretrained(base, str(adir)).eval()(
            torch.tensor(ids)).logits.numpy()
    assert np.abs(theirs - plain).max() > 1e-3  # the adapter trained
    np.testing.assert_allclose(logits, theirs, atol=1e-4, rtol=0)
    back = models.load(adir)  # the adapter directory, merged into its base
    np.testing.assert_allclose(np.asarray(models.forward(back.config, back.params,
                                                         jnp.asarray(ids))), logits, atol=1e-5)

    # model.init_from=ADAPTER_DIR continues the adapters: at step 0 the model is the export
    again = load_config("sft", **{"model.init_from": str(adir), "model.vocab_size": 0,
                                  "steps": 1, "batch_size": 8, "seq_len": 64,
                                  "logging.progress": False, "eval.every": 0})
    s = setup(again)
    assert s.model_config.lora.rank == 16 and s.frozen is not None
    cont = np.asarray(models.forward(s.model_config, s.model_params(s.state["params"]),
                                     jnp.asarray(ids)))
    np.testing.assert_allclose(cont, logits, atol=1e-5)


@pytest.mark.parametrize("key,value,expect", [
    ("model.lora.rank", -2, "model.lora.rank=-2"),
    ("model.lora.targets", "q,embed", "model.lora.targets: 'embed'"),
    ("model.lora.dropout", 1.5, "model.lora.dropout=1.5"),
])
def test_bad_lora_settings_are_one_line(tmp_path, key, value, expect):
    r = _cli("medjax.train", "--config=configs/sft.py", f"--workdir={tmp_path / 'w'}",
             "--config.model.lora.rank=4", f"--config.{key}={value}")
    assert r.returncode != 0
    assert expect in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert not os.path.exists(tmp_path / "w" / "checkpoints")
