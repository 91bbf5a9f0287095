"""configs/*.py: a shared base module, only the objective's own keys, one variant parser."""

import itertools
import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, config_module

from medjax.configs import _keys, base, parse_arg

NAMES = ["pretrain", "sft", "dpo", "kto", "reward"]


def _objective_keys(name):
    return set(config_module(name).get_config().objective.keys())


@pytest.mark.parametrize("a,b", [p for p in itertools.permutations(NAMES, 2)])
def test_a_key_of_another_objective_is_an_error(a, b):
    """Every pair: each objective key of ``b`` that ``a`` lacks is refused on ``a``."""
    foreign = _objective_keys(b) - _objective_keys(a)
    config = config_module(a).get_config()
    config.lock()
    for key in foreign:
        with pytest.raises((AttributeError, KeyError)):
            config.objective[key] = config_module(b).get_config().objective[key]


def test_the_issue_examples_are_foreign():
    assert "loss_type" in _objective_keys("dpo") - _objective_keys("kto")
    assert "margin" in _objective_keys("reward") - _objective_keys("dpo")
    assert "reference" not in _objective_keys("reward")
    assert "z_loss" not in _objective_keys("dpo")


def test_cli_refuses_a_foreign_key_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "medjax.train", "--config=configs/kto.py",
                        f"--workdir={tmp_path}/wd", "--config.objective.loss_type=ipo"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert r.returncode != 0 and "loss_type" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "wd").exists()


def test_configs_import_the_base_as_a_module():
    for name in NAMES:
        text = open(os.path.join(ROOT, "configs", f"{name}.py")).read()
        assert "sys.path" not in text and "from medjax.configs import" in text


def test_base_has_only_the_objectives_keys():
    assert set(base("reward").objective.keys()) == {"name", "margin", "centering"}
    assert set(base("pretrain").objective.keys()) == {"name", "z_loss", "neftune_alpha",
                                                      "loss_chunk_size", "lm_head_grad",
                                                      "skip_untrained", "router_aux_loss_coef"}
    assert not base("pretrain").objective.skip_untrained and base("sft").objective.skip_untrained


def test_parse_arg():
    a = parse_arg("llama3_8b", "configs/dpo.py", variants=("llama3_8b", "mistral_7b"))
    assert a.variant == "llama3_8b"
    assert parse_arg(None, "configs/dpo.py", variants=("llama3_8b",)).variant == ""
    b = parse_arg("mistral_7b,steps=20,fast", "x.py", variants=("mistral_7b",), steps=0,
                  fast=False)
    assert (b.variant, b.steps, b.fast) == ("mistral_7b", 20, True)
    with pytest.raises(ValueError, match=r"configs/dpo.py: unknown variant 'llama2' "
                                         r"\(known: llama3_8b\)"):
        parse_arg("llama2", "configs/dpo.py", variants=("llama3_8b",))
    with pytest.raises(ValueError, match="steps='x' is not a int"):
        parse_arg("steps=x", "x.py", steps=0)
    with pytest.raises(ValueError, match=r"configs/reward.py: unknown variant 'llama3_70b'"):
        config_module("reward").get_config("llama3_70b")


def test_every_variant_loads():
    variants = {"pretrain": ["mistral_7b"], "sft": ["llama3_8b", "llama31_8b", "llama3_70b"],
                "dpo": ["llama3_8b", "llama3_70b", "mistral_7b"],
                "kto": ["llama3_8b", "llama3_70b", "mistral_7b"], "reward": ["llama3_8b"]}
    for name, vs in variants.items():
        for v in vs:
            c = config_module(name).get_config(v)
            assert c.model.dtype == "bfloat16" and c.data.sources == ""


def _train(tmp_path, *flags, config="configs/sft.py"):
    return subprocess.run([sys.executable, "-m", "medjax.train", f"--config={config}",
                           f"--workdir={tmp_path}/wd", *flags], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))


def test_unknown_keys_get_the_closest_known_key(tmp_path):
    """--config.optimizer.learning_rate printed only 'error: learning_rate'."""
    for flag, hint in [("--config.optimizer.learning_rate=1e-5", "--config.optimizer.lr?"),
                       ("--config.num_train_epochs=3", "--config.epochs?"),
                       ("--config.data.lr=1", "--config.optimizer.lr?"),
                       ("--config.objective.margin=1", "belongs to the 'reward' objective")]:
        r = _train(tmp_path, flag)
        assert r.returncode != 0 and hint in r.stderr, (flag, r.stderr)
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_a_bad_choice_is_a_config_error_before_any_data_is_read(tmp_path):
    """data.format=jsn was reported as a bad record of the first data file, with advice to
    skip records."""
    r = _train(tmp_path, "--config.data.format=jsn")
    assert r.returncode != 0 and r.stderr.strip().splitlines()[-1] == (
        "medjax.train: error: data.format='jsn': expected one of auto, text, messages, "
        "sharegpt, alpaca, prompt_completion, preference, kto")
    assert not (tmp_path / "wd").exists()
    r = _train(tmp_path, "--config.data.template=chatml")
    assert r.returncode != 0 and "data.template='chatml': expected one of" in r.stderr
    for flag, want in [("--config.seq_len=0", "seq_len=0: must be at least 1"),
                       ("--config.data.max_prompt_length=0", "max_prompt_length=0: must be")]:
        r = _train(tmp_path, flag)  # seq_len=0 never exited (truncating to nothing forever)
        assert r.returncode != 0 and want in r.stderr.strip().splitlines()[-1], r.stderr
    assert not (tmp_path / "wd").exists()


def test_print_config_and_the_workdir_copy(tmp_path):
    r = _train(tmp_path, "--print_config", "--config.optimizer.lr=2e-5", config="configs/dpo.py")
    assert r.returncode == 0 and "lr: 2.0e-05" in r.stdout and "loss_type: sigmoid" in r.stdout
    assert not (tmp_path / "wd").exists()
    from medjax.training import run
    c = config_module("pretrain").get_config()
    c.steps, c.seq_len, c.logging.progress, c.eval.at_start = 1, 64, False, False
    c.optimizer.lr = 2e-5
    run(c, str(tmp_path / "run"))
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["optimizer"]["lr"] == 2e-5 and saved["objective"]["name"] == "pretrain"


def test_help_lists_the_configs_keys_with_defaults_and_meaning(tmp_path):
    """--help listed the absl flags only: no config key."""
    r = _train(tmp_path, "--help", config="configs/dpo.py")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "--workdir" in out  # absl's flag help first
    keys = [line.split("=", 1)[0].strip() for line in out.splitlines()
            if line.startswith("  --config.")]
    want = {f"--config.{k}" for k in _keys(config_module("dpo").get_config())}
    assert set(keys) == want
    line = next(x for x in out.splitlines() if x.startswith("  --config.objective.loss_type="))
    assert "'sigmoid'" in line and "# sigmoid | hinge" in line
    assert any(x.startswith("  --config.data.shards=0 ") and "gcd(batch_size, 8)" in x
               for x in out.splitlines())
    r = _train(tmp_path, "--help", config="configs/nope.py")  # no such file: flags only
    assert r.returncode == 0 and "--config=FILE" in r.stdout and "Traceback" not in r.stderr


def test_cli_errors_are_one_line_without_traceback(tmp_path):
    """A missing config file, an unknown preset and an unusable workdir raised OSError,
    KeyError or a multi-line message."""
    (tmp_path / "afile").write_text("")
    for flags, config, want in [
            ((), "configs/nope.py", "--config=configs/nope.py: no such file"),
            (("--config.model.preset=llama9",), "configs/sft.py", "model.preset='llama9': unknown"),
            ((f"--workdir={tmp_path}/afile/sub",), "configs/sft.py", "Not a directory"),
            ((f"--config.data.eval_sources={tmp_path}/gone.jsonl", "--config.eval.at_start=False"),
             "configs/sft.py", "gone.jsonl: no file matches")]:
        r = _train(tmp_path, *flags, "--config.steps=1", config=config)
        err = r.stderr.strip().splitlines()
        assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
        assert err and err[-1].startswith("medjax.train: error: ") and want in err[-1], err
        assert not (tmp_path / "wd" / "checkpoints").exists()  # refused before any step
