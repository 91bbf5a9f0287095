"""Objectives as registered units: what each declares holds, nothing else compares names,
and a new objective is one module plus one config."""

import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, load_config

from medjax import objectives
from medjax.models import get_preset
from medjax.objectives import registry

CONFIGS = ["pretrain", "sft", "dpo", "kto", "reward"]


def _batch(kind, rows=2, length=16):
    shape = (rows, 2, length) if kind in ("preference", "kto") else (rows, length)
    ids = jnp.arange(int(np.prod(shape)), dtype=jnp.int32).reshape(shape) % 97
    batch = {"input_ids": ids,
             "segment_ids": jnp.ones(shape, jnp.int32),
             "positions": jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), shape),
             "loss_mask": jnp.ones(shape, jnp.int32)}
    if kind == "kto":
        batch["label"] = jnp.array([True, False])
    batch["ref_logps"] = jnp.zeros((rows, 2), jnp.float32)
    return batch


@pytest.mark.parametrize("name", CONFIGS)
def test_each_unit_is_what_it_declares(name):
    unit = objectives.get(name)
    config = load_config(name)
    assert config.objective.name == name and unit.name == name
    mc = get_preset("llama3_tiny", vocab_size=128)
    params = jax.eval_shape(lambda: _init(mc, unit))
    loss_fn = unit.make_loss(config.objective, mc)
    loss, metrics = jax.eval_shape(loss_fn, params, _batch(unit.kind), jax.random.key(0))
    assert loss.shape == () and "weight" in metrics
    assert set(metrics) - {"weight"} <= set(unit.metrics), (name, sorted(metrics))
    assert unit.head in ("lm", "reward") and ("reward_head" in params) == (unit.head == "reward")


def _init(mc, unit):
    from medjax.models import init_params
    params = init_params(mc, jax.random.key(0))
    if unit.init_head is not None:
        params = {k: v for k, v in params.items() if k != "lm_head"}
        params[f"{unit.head}_head"] = unit.init_head(mc, jax.random.key(1))
    return params


def test_unknown_objective_names_the_known_ones():
    with pytest.raises(ValueError, match="objective.name='ppo'.*dpo, kto, pretrain, reward, sft"):
        objectives.get("ppo")


def test_reference_needs_come_from_the_unit():
    dpo = load_config("dpo")
    assert objectives.get("dpo").needs_reference(dpo.objective)
    dpo.objective.loss_type = "simpo"
    assert not objectives.get("dpo").needs_reference(dpo.objective)
    assert objectives.get("kto").needs_reference(load_config("kto").objective)
    assert "precompute" not in objectives.get("kto").references
    for name in ("pretrain", "sft", "reward"):
        assert not objectives.get(name).needs_reference(load_config(name).objective)


def test_no_code_outside_objectives_compares_an_objective_name():
    from medjax.models import HEADS
    # "reward" is also a head's name and "kto" a record kind's: heads and kinds may be
    # compared, objective names may not.
    names = "|".join(sorted(set(objectives.names()) - set(HEADS) - set(registry.RECORD_KINDS)))
    pattern = re.compile(rf"""objective(\.name)?\s*(==|!=|\bin\b)|(==|!=)\s*["']({names})["']"""
                         rf"""|["']({names})["']\s*(==|!=)""")
    offenders = []
    for root, _, files in os.walk(os.path.join(ROOT, "medjax")):
        if os.path.basename(root) in ("objectives", "samples"):
            continue
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(root, f)
                for i, line in enumerate(open(path), 1):
                    if pattern.search(line):
                        offenders.append(f"{os.path.relpath(path, ROOT)}:{i}: {line.strip()}")
    assert not offenders, offenders


TOY = '''
import functools
from medjax.objectives.lm import lm_loss
from medjax.objectives.registry import Objective, register


def add_config(c):
    c.objective.label_weight = 1.0


def make_loss(o, model_config):
    loss = functools.partial(lm_loss, model_config, chunk_size=64)

    def scaled(params, batch, rng):
        value, metrics = loss(params, batch, rng)
        return o.label_weight * value, metrics
    return scaled


register(Objective(name="toy_sft", kind="chat", add_config=add_config, make_loss=make_loss,
                   metrics=("nll",)))
'''

CONFIG = '''
import os
from medjax.configs import SAMPLES, base


def get_config(arg=None):
    c = base("toy_sft")
    c.data.sources = os.path.join(SAMPLES, "sft_sharegpt.jsonl")
    c.data.eval_sources = os.path.join(SAMPLES, "sft_sharegpt_eval.jsonl")
    return c
'''


def test_a_new_objective_is_one_module_and_one_config(tmp_path, monkeypatch):
    """A module in objectives/ (here: a folder on the package's path) and a config file
    are all a new objective takes: the config has its key, the run trains with it."""
    from medjax.training import run
    pkg = tmp_path / "more"
    pkg.mkdir()
    (pkg / "toy_sft.py").write_text(TOY)
    (tmp_path / "toy.py").write_text(CONFIG)
    monkeypatch.setattr(objectives, "__path__", list(objectives.__path__) + [str(pkg)])
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    import importlib.util
    import sys
    spec = importlib.util.spec_from_file_location("toycfg", tmp_path / "toy.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config()
    assert c.objective.label_weight == 1.0 and "z_loss" not in c.objective
    c.steps, c.seq_len, c.logging.every, c.eval.batches = 2, 64, 1, 1
    c.logging.progress, c.checkpoint.every = False, 100
    last = run(c, str(tmp_path / "wd"))
    assert "eval/nll" in last and last["loss"] > 0
    meta = json.loads((tmp_path / "wd" / "model_config.json").read_text())
    assert meta["objective"] == "toy_sft" and meta["head"] == "lm"
    sys.modules.pop("medjax.objectives.toy_sft", None)
