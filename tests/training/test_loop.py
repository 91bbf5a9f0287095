"""End-to-end training runs: learning, determinism, resume, sharding, eval vs transformers."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import ROOT, build_hf_model, config_module, load_config

from medjax.training import run

DRUGS = ["metformin", "lisinopril", "atorvastatin", "amoxicillin", "warfarin", "omeprazole",
         "levothyroxine", "amlodipine"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rs = np.random.RandomState(0)
    d = tmp_path_factory.mktemp("data")
    for name, n in (("train.jsonl", 200), ("eval.jsonl", 12)):
        with open(d / name, "w") as f:
            for _ in range(n):
                drug = DRUGS[rs.randint(len(DRUGS))]
                text = " ".join(f"{drug.capitalize()} is prescribed daily. Patients on {drug} "
                                "are monitored." for _ in range(rs.randint(1, 3)))
                f.write(json.dumps({"text": text}) + "\n")
    return d


def small(data, **kw):
    base = {"data.sources": str(data / "train.jsonl"), "data.eval_sources": str(data / "eval.jsonl"),
            "steps": 10, "batch_size": 8, "seq_len": 64, "logging.every": 1,
            "logging.progress": False, "checkpoint.every": 5, "eval.every": 0,
            "eval.at_start": False, "optimizer.warmup_steps": 2}
    return load_config(**{**base, **kw})


def losses(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def final_state(workdir, step):
    with ocp.StandardCheckpointer() as c:
        return c.restore(os.path.join(workdir, "checkpoints", str(step), "state"))


MESH_8 = {"mesh.fsdp": 4, "mesh.tensor": 2}


@pytest.fixture(scope="module")
def straight(data, tmp_path_factory):
    """The reference: 10 uninterrupted steps on 8 devices (fsdp=4, tensor=2)."""
    workdir = tmp_path_factory.mktemp("straight")
    run(small(data, **MESH_8), str(workdir))
    return workdir


def test_learns_and_is_deterministic(data, straight, tmp_path):
    run(small(data, **MESH_8), str(tmp_path / "again"))
    la, lb = losses(straight), losses(tmp_path / "again")
    assert sorted(la) == list(range(1, 11))
    assert la == lb
    assert la[10] < la[1] - 1.0
    rows = [json.loads(x) for x in open(straight / "metrics.jsonl")]
    for key in ("grad_norm", "lr", "tokens_per_second", "step_time", "packing_efficiency"):
        assert key in rows[-1]
    assert os.listdir(straight / "tensorboard")


def _cli(workdir, *flags, env_extra=None):
    env = dict(os.environ, JAX_PLATFORMS="cpu", **(env_extra or {}))
    cmd = [sys.executable, "-m", "medjax.train", "--config=configs/pretrain.py",
           f"--workdir={workdir}", *flags]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _flags(data, **kw):
    base = {"data.sources": data / "train.jsonl", "data.eval_sources": data / "eval.jsonl",
            "steps": 10, "batch_size": 8, "seq_len": 64, "logging.every": 1,
            "checkpoint.every": 5, "eval.every": 0, "eval.at_start": False,
            "optimizer.warmup_steps": 2, **MESH_8, **kw}
    return [f"--config.{k}={v}" for k, v in base.items()]


def _finish(proc):
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return out


def _assert_same_run(workdir, straight):
    assert losses(workdir) == losses(straight)
    a, b = final_state(straight, 10), final_state(workdir, 10)
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)),
                 a["params"], b["params"])


def _wait_for(predicate, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline and not predicate():
        time.sleep(0.1)
    assert predicate(), "timed out"


# SIGINT (Ctrl-C) takes the same path after the hook (tests/training/test_hooks.py tests the
# hook's handling of both): end to end in `make test-all`.
@pytest.mark.parametrize("sig", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)])
def test_sigterm_saves_and_restart_resumes_exactly(data, straight, tmp_path, sig):
    wd = tmp_path / "preempted"
    proc = _cli(wd, *_flags(data))
    _wait_for(lambda: (wd / "metrics.jsonl").exists() and len(losses(wd)) >= 3)
    proc.send_signal(sig)
    _finish(proc)
    saved = [int(d) for d in os.listdir(wd / "checkpoints") if d.isdigit()]
    assert max(saved) < 10  # stopped early, with a checkpoint at the step it reached
    assert sorted(losses(wd)) == list(range(1, max(saved) + 1))
    _finish(_cli(wd, *_flags(data)))
    _assert_same_run(wd, straight)


def test_kill_minus_nine_then_resume(data, straight, tmp_path):
    wd = tmp_path / "killed"
    proc = _cli(wd, *_flags(data))
    _wait_for(lambda: (wd / "checkpoints").exists() and any(
        d.startswith("5") for d in os.listdir(wd / "checkpoints")))
    time.sleep(0.5)  # somewhere in step 6-7 or still writing checkpoint 5
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    _finish(_cli(wd, *_flags(data)))
    _assert_same_run(wd, straight)


def test_sharded_run_matches_one_device(data, straight, tmp_path):
    """fsdp=4, tensor=2 on 8 devices vs one device (a fresh process without fake devices)."""
    _finish(_cli(tmp_path / "one", *_flags(data, **{"mesh.fsdp": 1, "mesh.tensor": 1}),
                 env_extra={"XLA_FLAGS": ""}))
    l8, l1 = losses(straight), losses(tmp_path / "one")
    assert sorted(l1) == list(range(1, 11))
    for s in l1:
        assert abs(l1[s] - l8[s]) < 1e-4 * max(1.0, abs(l1[s])), (s, l1[s], l8[s])


def test_eval_at_start_equals_transformers_cross_entropy(data, tmp_path):
    import torch
    from medjax.data.tokenizer import get_tokenizer
    hf_dir = tmp_path / "hf"
    model = build_hf_model(hf_dir, "Llama", vocab_size=128256, hidden_size=32,
                           intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, initializer_range=0.05)
    cfg = small(data, steps=0, **{"eval.at_start": True, "model.init_from": str(hf_dir),
                                  "batch_size": 8})
    got = run(cfg, str(tmp_path / "wd"))["eval/nll"]
    tok = get_tokenizer("llama3")
    total, count = 0.0, 0
    for line in open(data / "eval.jsonl"):
        ids = [tok.bos_id] + tok.encode(json.loads(line)["text"]) + [tok.eos_id]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, :-1].double()
        nll = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="sum")
        total, count = total + float(nll), count + len(ids) - 1
    np.testing.assert_allclose(got, total / count, rtol=1e-5)


def test_config_variants_and_cli_errors(tmp_path):
    c = load_config()
    assert c.objective.name == "pretrain" and c.model.preset == "llama3_tiny"
    m = config_module("pretrain").get_config("mistral_7b")  # Internist.ai 7b's hyperparameters
    assert (m.model.preset, m.optimizer.lr, m.optimizer.min_lr, m.seq_len) == (
        "mistral_7b", 6e-6, 1e-8, 4096)
    assert m.objective.neftune_alpha == 5 and m.optimizer.b2 == 0.95
    for flag, expected in [("--config.optimizer.lrr=1", 'Did you mean "lr"'),
                           ("--config.steps=abc", "config.steps"),
                           (f"--config.data.sources={tmp_path}/none*.jsonl",
                            "no file matches")]:
        p = _cli(tmp_path / "wd", flag)
        out, err = p.communicate(timeout=300)
        assert p.returncode != 0 and expected in err, err[-2000:]
        assert "Traceback" not in err


@pytest.mark.parametrize("config_file", ["pretrain.py", "sft.py"])
def test_every_config_runs_end_to_end_and_learns(tmp_path, config_file):
    """Each configs/*.py default variant on its bundled data, shortened."""
    c = load_config(config_file[:-3])
    c.steps, c.seq_len, c.logging.every, c.eval.every, c.eval.batches = 12, 128, 4, 12, 2
    c.logging.progress = False
    last = run(c, str(tmp_path / "wd"))
    rows = [json.loads(x) for x in open(tmp_path / "wd" / "metrics.jsonl")]
    evals = [r["eval/loss"] for r in rows if "eval/loss" in r]
    assert len(evals) == 2 and evals[1] < evals[0] - 1.0
    assert 0.5 < last["packing_efficiency"] <= 1.0


def _dpo_config(**kw):
    return load_config("dpo", **{"steps": 2, "batch_size": 8, "seq_len": 64, "logging.every": 1,
                                 "logging.progress": False, "eval.every": 0, "eval.batches": 1,
                                 "checkpoint.every": 100, **kw})


@pytest.mark.slow
def test_dpo_config_default_learns_held_out_preferences(tmp_path):
    """configs/dpo.py as shipped (`make run`, a few minutes): from a random tiny model,
    held-out pairs go from untrained (loss log 2) to clearly preferring the true fact.
    Run as `make run` runs it: its own process on one CPU device (on the tests' 8 fake
    devices it took 11 minutes of a 2-core CI machine instead of about 3)."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    r = subprocess.run([sys.executable, "-m", "medjax.train", "--config=configs/dpo.py",
                        f"--workdir={tmp_path / 'dpo'}", "--config.logging.progress=False",
                        "--config.eval.every=125"], cwd=ROOT, env=dict(env, JAX_PLATFORMS="cpu"),
                       capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(x) for x in open(tmp_path / "dpo" / "metrics.jsonl")]
    evals = [r for r in rows if "eval/rewards/accuracies" in r]
    assert [r["step"] for r in evals] == [0, 125, 250]
    np.testing.assert_allclose(evals[0]["eval/loss"], np.log(2), rtol=1e-5)
    assert evals[-1]["eval/rewards/accuracies"] >= 0.7, evals
    assert evals[-1]["eval/rewards/margins"] > evals[1]["eval/rewards/margins"] > 0
    assert evals[-1]["eval/loss"] < np.log(2) - 0.05


def test_dpo_precomputed_reference_equals_frozen(tmp_path):
    # No warmup: step 1 changes the policy (with warmup its lr is 0), so that step 2 shows
    # whether the reference stayed put.
    no_warmup = {"optimizer.warmup_steps": 0.0}
    run(_dpo_config(**{"objective.reference": "frozen", **no_warmup}), str(tmp_path / "frozen"))
    run(_dpo_config(**{"objective.reference": "precompute", **no_warmup}),
        str(tmp_path / "pre"))
    assert (tmp_path / "pre" / "reference_logps_train.npz").exists()
    rows = {}
    for name in ("frozen", "pre"):
        rows[name] = [json.loads(x) for x in open(tmp_path / name / "metrics.jsonl")]
    first = {n: next(r for r in rows[n] if r.get("step") == 1) for n in rows}
    np.testing.assert_allclose(first["frozen"]["loss"], np.log(2), rtol=1e-5)
    for key in ("loss", "grad_norm", "rewards/accuracies", "logps/chosen"):
        np.testing.assert_allclose(first["pre"][key], first["frozen"][key], rtol=1e-5, atol=1e-6)
    second = {n: next(r for r in rows[n] if r.get("step") == 2) for n in rows}
    np.testing.assert_allclose(second["pre"]["loss"], second["frozen"]["loss"], rtol=1e-4)
    assert abs(second["frozen"]["rewards/margins"]) > 0  # the reference stayed put


def test_init_from_a_training_workdir(data, straight, tmp_path):
    """A finished run's workdir starts another run (e.g. DPO from SFT) with its parameters."""
    c = small(data, steps=1, **{"model.init_from": str(straight), "eval.at_start": True,
                                "eval.batches": 1, **MESH_8})
    got = run(c, str(tmp_path / "next"))["eval/loss"]
    fresh = run(small(data, steps=1, **{"eval.at_start": True, "eval.batches": 1, **MESH_8}),
                str(tmp_path / "scratch"))["eval/loss"]
    assert got < fresh - 1.0  # trained parameters, not a fresh init


def test_kto_config_runs(tmp_path):
    c = load_config("kto")
    c.steps, c.batch_size, c.logging.every, c.logging.progress = 2, 8, 1, False
    c.eval.every, c.eval.batches, c.eval.at_start = 0, 1, True
    last = run(c, str(tmp_path / "kto"))
    rows = [json.loads(x) for x in open(tmp_path / "kto" / "metrics.jsonl")]
    np.testing.assert_allclose(rows[0]["eval/loss"], 0.5, rtol=1e-6)  # 1 - sigmoid(0)
    assert rows[0]["eval/kl"] == 0.0 and "kl" in last and np.isfinite(last["loss"])
    with pytest.raises(ValueError, match="precompute.*not available for KTO"):
        with c.unlocked():
            c.objective.reference = "precompute"
        run(c, str(tmp_path / "kto2"))


@pytest.mark.slow
def test_reward_config_default_generalises_to_held_out_pairs(tmp_path):
    """configs/reward.py as shipped (from a random tiny model, about a minute): train
    accuracy rises, and held-out pairs are ranked clearly better than chance."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one device, as shipped
    r = subprocess.run([sys.executable, "-m", "medjax.train", "--config=configs/reward.py",
                        f"--workdir={tmp_path / 'rm'}", "--config.logging.progress=False",
                        "--config.eval.every=300"], cwd=ROOT, env=dict(env, JAX_PLATFORMS="cpu"),
                       capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(x) for x in open(tmp_path / "rm" / "metrics.jsonl")]
    train = [r["accuracy"] for r in rows if "accuracy" in r]
    assert np.mean(train[-5:]) > 0.9 and np.mean(train[:3]) < 0.7, train
    held_out = [r["eval/accuracy"] for r in rows if "eval/accuracy" in r]
    assert len(held_out) == 3  # steps 0, 300, 600
    assert held_out[-1] >= 0.7 and held_out[-1] > held_out[0] + 0.15, held_out


def test_a_workdir_of_another_run_is_refused(data, straight):
    c = load_config("reward", **{"steps": 1, "logging.progress": False, "eval.at_start": False})
    before = {p: os.path.getmtime(p) for p in (straight / "checkpoints").rglob("*")}
    with pytest.raises(ValueError, match="holds a run of another model or objective.*objective"):
        run(c, str(straight))
    after = {p: os.path.getmtime(p) for p in (straight / "checkpoints").rglob("*")}
    assert after == before  # nothing of the earlier run was touched


def test_an_overflowing_learning_rate_stops_at_that_step_without_saving_it(data, tmp_path):
    """lr 1e30 after a zero-lr first step: step 2's update overflows; the run stops there
    with one line and a non-zero exit, step 1's checkpoint stays the newest."""
    wd = tmp_path / "nan"
    p = _cli(wd, *_flags(data, **{"optimizer.lr": 1e30, "optimizer.warmup_steps": 3,
                                  "checkpoint.every": 1, "mesh.fsdp": 1, "mesh.tensor": 1}),
             env_extra={"XLA_FLAGS": ""})
    out, err = p.communicate(timeout=600)
    assert p.returncode == 1, err[-2000:]
    line = err.strip().splitlines()[-1]
    assert line.startswith("medjax.train: error: step 2: ")
    assert "is inf" in line or "is nan" in line
    assert "newest checkpoint is step 1" in line and "Traceback" not in err
    steps = sorted(int(d) for d in os.listdir(wd / "checkpoints") if d.isdigit())
    assert steps == [1]
    state = final_state(wd, 1)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state["params"]))
    assert sorted(losses(wd)) == [1]

    # optimizer.skip_nonfinite=2 skips two such steps (counted), then stops at the third.
    wd = tmp_path / "skip"
    p = _cli(wd, *_flags(data, **{"optimizer.lr": 1e30, "optimizer.warmup_steps": 3,
                                  "checkpoint.every": 100, "optimizer.skip_nonfinite": 2,
                                  "mesh.fsdp": 1, "mesh.tensor": 1}), env_extra={"XLA_FLAGS": ""})
    out, err = p.communicate(timeout=600)
    assert p.returncode == 1 and "step 4: " in err.strip().splitlines()[-1], err[-2000:]
    rows = [json.loads(x) for x in open(wd / "metrics.jsonl")]
    assert [r["nonfinite_skipped"] for r in rows] == [0, 1, 2]
    assert not (wd / "checkpoints").exists() or not any(
        d.isdigit() for d in os.listdir(wd / "checkpoints"))


def test_your_own_data_is_not_evaluated_on_the_bundled_samples(tmp_path, caplog):
    """Overriding data.sources alone used to evaluate on the bundled held-out file
    silently; now there is no eval set and the run says so. The eval of a bundled
    source runs at the last step too, and `final:` says which step each value is from."""
    from medjax.data.samples import path as sample_path
    own = tmp_path / "mine.jsonl"
    own.write_text("".join(open(sample_path("sft_sharegpt.jsonl")).readlines()[:40]))
    c = load_config("sft", **{"data.sources": str(own), "steps": 2, "seq_len": 64,
                              "logging.progress": False, "checkpoint.every": 100})
    with caplog.at_level("WARNING"):
        last = run(c, str(tmp_path / "own"))
    assert not any(k.startswith("eval/") for k in last)
    assert "no held-out evaluation: data.eval_sources is empty" in caplog.text
    # The bundled source keeps its held-out file; eval.every=25 > steps: evaluated at 0
    # and at the last step (3).
    c = load_config("sft", **{"steps": 3, "seq_len": 64, "logging.progress": False,
                              "logging.every": 2, "checkpoint.every": 100, "eval.batches": 1})
    last = run(c, str(tmp_path / "bundled"))
    rows = [json.loads(x) for x in open(tmp_path / "bundled" / "metrics.jsonl")]
    assert [r["step"] for r in rows if "eval/loss" in r] == [0, 3]
    assert last.steps["eval/loss"] == 3 and last.steps["loss"] == 3
    assert "step 3: " in last.summary() and "lr 0.00" in last.summary()
    with c.unlocked():
        c.optimizer.lr = 3e-5
    assert "lr 3e-05" in run(c, str(tmp_path / "small_lr")).summary()


def test_eval_split_holds_out_part_of_your_own_data(tmp_path, caplog):
    """data.eval_split: a fixed fraction of the training records is evaluated, never
    trained on; the same records on every run and any process count."""
    from medjax.data.samples import path as sample_path
    from medjax.data.validate import SourceSpec, ValidatedSource
    own = tmp_path / "mine.jsonl"
    own.write_text("".join(open(sample_path("sft_sharegpt.jsonl")).readlines()[:60]))
    c = load_config("sft", **{"data.sources": str(own), "data.eval_split": 0.25, "steps": 2,
                              "seq_len": 64, "logging.progress": False,
                              "checkpoint.every": 100})

    def records(split, processes=1):
        return sorted(i for p in range(processes) for i in ValidatedSource(
            SourceSpec(str(own)), c.data, "chat", p, processes, split=split).good)

    train, held = records("train"), records("eval")
    assert not set(train) & set(held) and sorted(train + held) == list(range(60))
    assert 5 <= len(held) <= 25  # about a quarter
    assert records("eval", 2) == held and records("train", 4) == train
    with caplog.at_level("INFO"):
        last = run(c, str(tmp_path / "run"))
    assert "eval/loss" in last and "a held-out 0.25 of data.sources" in caplog.text
    with c.unlocked():
        c.data.eval_sources = str(own)
    with pytest.raises(ValueError, match="set one of them"):
        run(c, str(tmp_path / "both"))


def test_epochs_set_the_steps_and_the_schedule(tmp_path):
    """--config.epochs=2 on a 30-conversation file trained one step at lr 0 and exited 0:
    the steps and the cosine schedule ignored the data. Now 2 epochs = 2 x the batches
    of one epoch (counted here through the same pipeline), warmup as a fraction of them,
    and the schedule ends at min_lr on the last step."""
    from medjax.data.pipeline import pipeline_from_config
    from medjax.data.samples import path as sample_path
    from medjax.training.state import data_tools

    own = tmp_path / "mine.jsonl"
    own.write_text("".join(open(sample_path("sft_sharegpt.jsonl")).readlines()[:30]))
    kw = {"data.sources": str(own), "epochs": 2, "steps": 0, "seq_len": 128, "batch_size": 4,
          "mesh.fsdp": 4, "mesh.tensor": 2,
          "logging.every": 1, "logging.progress": False, "checkpoint.every": 100,
          "optimizer.warmup_steps": 0.25, "optimizer.min_lr": 1e-4}
    c = load_config("sft", **kw)
    _, tok, tpl = data_tools(c)
    one = c.copy_and_resolve_references()
    one.epochs = 1
    per_epoch = sum(1 for _ in pipeline_from_config(one, tok, tpl))
    assert per_epoch >= 3
    run(c, str(tmp_path / "wd"))
    rows = [json.loads(x) for x in open(tmp_path / "wd" / "metrics.jsonl") if "lr" in x]
    assert c.steps == 2 * per_epoch
    assert [r["step"] for r in rows][-1] >= 2 * per_epoch - 1  # a re-shuffled epoch may pack
    lrs = [r["lr"] for r in rows]                               # one row fewer
    assert lrs[0] == 0.0 and max(lrs) == pytest.approx(c.optimizer.lr, rel=1e-6)
    assert lrs.index(max(lrs)) == int(0.25 * 2 * per_epoch)  # warmup: a quarter of the steps
    if rows[-1]["step"] == 2 * per_epoch:
        assert lrs[-1] < c.optimizer.lr / 2  # the cosine is near its end, not at step 1
    with pytest.raises(ValueError, match=r"steps=5 and epochs=2 disagree: 2 epochs of the data "
                                         rf"are {2 * per_epoch} steps"):
        run(load_config("sft", **{**kw, "steps": 5}), str(tmp_path / "wd2"))


def test_eval_samples_are_written_at_each_evaluation(tmp_path):
    """eval.samples: greedy completions of the prompts with the current parameters at
    step 0 and at each evaluation, through the run's chat template, stopping at its end
    of turn (the same tokens medjax.generate gives for the saved model)."""
    from medjax.generate import generate
    from medjax.models import load
    kw = {"seq_len": 64, "logging.progress": False, "checkpoint.every": 100,
          "eval.batches": 1, "eval.every": 2, "eval.sample_tokens": 6,
          "eval.samples": "What is anemia?; How is asthma treated?"}
    run(load_config("sft", steps=2, **kw), str(tmp_path / "wd"))
    rows = [json.loads(x) for x in open(tmp_path / "wd" / "samples.jsonl")]
    assert [(r["step"], r["prompt"]) for r in rows] == [
        (0, "What is anemia?"), (0, "How is asthma treated?"),
        (2, "What is anemia?"), (2, "How is asthma treated?")]
    assert all(r["finish_reason"] in ("stop", "length") for r in rows)
    model = load(str(tmp_path / "wd"))
    from medjax.data.templates import get_template
    from medjax.data.tokenizer import get_tokenizer
    tok = get_tokenizer(model.tokenizer)
    tpl = get_template(model.template, tok)
    again = generate(model.config, model.params,
                     [tpl.encode_prompt([{"role": "user", "content": "What is anemia?"}])],
                     max_new_tokens=6, stop_ids=(tok.eos_id, 128009))[0]
    assert tok.decode([i for i in again.ids if i not in (tok.eos_id, 128009)]) == \
        rows[2]["completion"]
    # A resumed run (from the step-2 checkpoint) drops samples written past it (as a
    # killed run leaves them) and appends its own: each step's samples once.
    with open(tmp_path / "wd" / "samples.jsonl", "a") as f:
        f.write(json.dumps({"step": 3, "prompt": "What is anemia?", "completion": "x"}) + "\n")
        f.write('{"step": 4, "prom')  # torn by the kill
    run(load_config("sft", steps=4, **kw), str(tmp_path / "wd"))
    rows = [json.loads(x) for x in open(tmp_path / "wd" / "samples.jsonl")]
    assert [r["step"] for r in rows] == [0, 0, 2, 2, 4, 4]
