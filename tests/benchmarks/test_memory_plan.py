"""benchmarks/memory_plan.py on the tiny model: XLA's per-device bytes match the shapes,
and the abstract path compiles what ``setup()`` (and the reference) compile."""

import importlib.util
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
from conftest import ROOT, load_config

from medjax.training.reference import frozen_copy
from medjax.training.state import abstract_train_state, setup


def _module(path, name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, path))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


mp = _module("benchmarks/memory_plan.py", "memory_plan")


def tiny(name="sft", **overrides):
    base = {"model.vocab_size": 512, "seq_len": 32, "batch_size": 8, "optimizer.grad_accum": 2}
    return load_config(name, **{**base, **overrides})


def test_argument_bytes_are_params_opt_state_and_batch_per_device():
    config = tiny()
    p = mp.plan(config, devices=jax.devices()[:4])
    h, s = p["hand"], p["step"]
    mc = mp.model_config_of(config)
    # By hand, from the architecture alone: f32 params split 4 ways on the embed axis
    # (all but nothing here is replicated), Adam's two moments likewise.
    assert h["params"] == mc.num_params * 4 // 4
    assert h["opt_state"] == 2 * h["params"] + 2 * 4  # mu, nu + two int32 counts
    assert h["batch"] == 4 * (8 // 4) * 32 * 4  # 4 int32 arrays, 2 rows each
    assert s["argument"] == h["params"] + h["opt_state"] + h["batch"] + 4  # + step
    assert s["alias"] == h["params"] + h["opt_state"] + 4  # the donated state
    assert s["temp"] > h["grads"]
    assert p["total"] >= mp.peak(s) > s["argument"]
    assert "WARNING" not in mp.report(p, "tiny", 80.0)
    p["hand"] = dict(h, micro_rows=2)  # a micro-batch smaller than the batch shards
    assert "WARNING" in mp.report(p, "tiny", 80.0)


def test_abstract_path_compiles_the_setup_step():
    config = tiny(**{"mesh.fsdp": 4, "mesh.tensor": 2})
    s = setup(config, 512)
    state, sharding = abstract_train_state(config, s.model_config, s.mesh)
    assert jax.tree.structure(sharding) == jax.tree.structure(s.state_sharding)
    assert jax.tree.leaves(sharding) == jax.tree.leaves(s.state_sharding)
    # Adam moments are sharded like their parameters, not replicated.
    mu = s.state["opt_state"][1][0].mu["layers"]["mlp"]["up_proj"]
    assert mu.sharding == s.state["params"]["layers"]["mlp"]["up_proj"].sharding
    assert not mu.sharding.is_fully_replicated
    batch = mp.with_sharding(mp.batch_shapes(config), s.batch_sharding)
    real_batch = {k: jax.device_put(jnp.zeros(v.shape, v.dtype), s.batch_sharding)
                  for k, v in batch.items()}
    with jax.set_mesh(s.mesh):
        from medjax.training.state import make_step_fn
        ours = make_step_fn(config, s.model_config, s.mesh, sharding).lower(state, batch)
        theirs = s.step_fn.lower(s.state, real_batch)
    assert ours.as_text() == theirs.as_text()


def test_reference_forward_and_reward_head():
    config = tiny("dpo", **{"model.dtype": "bfloat16", "optimizer.grad_accum": 1,
                            "objective.reference": "frozen"})
    p = mp.plan(config, devices=jax.devices()[:4])
    ref = p["reference"]
    assert ref["weights"] == p["hand"]["params"] // 2  # bf16 copy sharded like the policy
    assert ref["argument"] == ref["weights"] + 4 * (8 // 4) * 2 * 32 * 4
    assert p["phases"]["train step"] == mp.peak(p["step"]) + ref["weights"]
    # The same function training/reference.py jits, on the same inputs.
    s = setup(config, 512)
    batch = mp.with_sharding(mp.batch_shapes(config), s.batch_sharding)
    batch.pop("ref_logps")
    with jax.set_mesh(s.mesh):
        real = frozen_copy(s.model_config, s.state["params"], config.objective.loss_chunk_size)
        zeros = {k: jax.device_put(jnp.zeros(v.shape, v.dtype), s.batch_sharding)
                 for k, v in batch.items()}
        theirs = real.fn.lower(real.params, zeros).as_text()
        ref_params = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, jnp.bfloat16, sharding=x.sharding),
            s.state["params"])
        ours = mp.reference_forward(config, s.model_config).lower(ref_params, batch).as_text()
    assert ours == theirs

    # Reward: the scalar head replaces the LM head, laid out as setup() lays it out.
    config = tiny("reward")
    s = setup(config, 512)
    state, sharding = abstract_train_state(config, s.model_config, s.mesh)
    assert "lm_head" not in state["params"]
    assert jax.tree.structure(sharding) == jax.tree.structure(s.state_sharding)
    assert jax.tree.leaves(sharding) == jax.tree.leaves(s.state_sharding)
    assert jax.tree.map(lambda x: (x.shape, x.dtype), state) == jax.tree.map(
        lambda x: (x.shape, x.dtype), s.state)


def test_saved_activation_stacks_read_from_hlo():
    config = tiny(**{"model.dtype": "bfloat16", "model.remat_policy": "full",
                     "optimizer.grad_accum": 1})
    p = mp.plan(config, devices=jax.devices()[:4], keep_hlo=True)
    mc = mp.model_config_of(config)
    # Full remat keeps each layer's input: [layers, rows per device, seq, hidden] bf16.
    assert p["saved_stacks"] == {"bf16": mc.num_layers * 2 * 32 * mc.hidden_size * 2}
    assert np.isclose(p["gpu_estimate"], p["total"] - p["saved_stacks"]["bf16"])


def test_command_line():
    r = subprocess.run(
        [sys.executable, "benchmarks/memory_plan.py", "--config=configs/sft.py", "--devices=2",
         "--config.model.vocab_size=512", "--config.seq_len=32", "--config.batch_size=4"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={k: v for k, v in os.environ.items() if k != "XLA_FLAGS"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "devices 2, mesh {'data': 1, 'fsdp': 2, 'tensor': 1}" in r.stdout
    assert ": fits;" in r.stdout


LORA = {"model.lora.rank": 4}


def test_lora_plan_counts_the_frozen_base_and_trains_only_adapters():
    config = tiny()
    full = mp.plan(config, devices=jax.devices()[:4])
    p = mp.plan(tiny(**LORA), devices=jax.devices()[:4])
    h, s = p["hand"], p["step"]
    assert p["model"]["lora"]["rank"] == 4
    # The frozen base is the full run's params (f32, same shardings): an argument, resident,
    # not donated; the state is the adapters and their moments.
    assert h["frozen"] == full["hand"]["params"]
    assert s["argument"] == h["params"] + h["opt_state"] + h["batch"] + h["frozen"] + 4
    assert s["alias"] == h["params"] + h["opt_state"] + 4
    assert s["argument"] < full["step"]["argument"]
    assert p["total"] < full["total"]
    # No base-sized array in the train state (adapters are [L, in, r] / [L, r, out]).
    cfg = mp.model_config_of(tiny(**LORA))
    mesh = mp.make_mesh(1, 4, 1, devices=jax.devices()[:4])
    state, _ = abstract_train_state(tiny(**LORA), cfg, mesh)
    base_shapes = {x.shape for x in jax.tree.leaves(
        jax.eval_shape(lambda: mp.models.abstract_params(cfg.replace(lora=None))))}
    assert not base_shapes & {x.shape for x in jax.tree.leaves(state)}
    assert all(4 in x.shape for x in jax.tree.leaves(state["params"]))
    assert "frozen base" in mp.report(p, "tiny lora", 80.0)


def test_lora_abstract_path_compiles_the_setup_step():
    from medjax.training.state import abstract_frozen_base, make_step_fn
    # reward: a bf16 base, the new head trains in f32 with the adapters
    for name, dtype in (("reward", "bfloat16"), ("sft", "float32")):
        config = tiny(name, **LORA, **{"mesh.fsdp": 4, "mesh.tensor": 2,
                                       "model.param_dtype": dtype})
        s = setup(config, 512)
        state, sharding = abstract_train_state(config, s.model_config, s.mesh)
        frozen, frozen_sharding = abstract_frozen_base(config, s.model_config, s.mesh)
        assert jax.tree.map(lambda x: (x.shape, x.dtype, x.sharding), state) == jax.tree.map(
            lambda x: (x.shape, x.dtype, x.sharding), s.state)
        assert jax.tree.leaves(sharding) == jax.tree.leaves(s.state_sharding)
        assert jax.tree.map(lambda x: (x.shape, x.dtype, x.sharding), frozen) == jax.tree.map(
            lambda x: (x.shape, x.dtype, x.sharding), s.frozen)
        assert ("reward_head" in state["params"]) == (name == "reward")
        assert "reward_head" not in frozen
    # sft: the same program as setup()'s step (the base bound as its third argument)
    batch = mp.with_sharding(mp.batch_shapes(config), s.batch_sharding)
    real_batch = {k: jax.device_put(jnp.zeros(v.shape, v.dtype), s.batch_sharding)
                  for k, v in batch.items()}
    with jax.set_mesh(s.mesh):
        ours = make_step_fn(config, s.model_config, s.mesh, sharding,
                            frozen_sharding=frozen_sharding).lower(state, batch, frozen)
        theirs = s.step_fn.args[0].lower(s.state, real_batch, s.frozen)
    assert ours.as_text() == theirs.as_text()


def test_lora_dpo_reference_is_the_base_when_stored_in_the_compute_dtype():
    dpo = {"model.dtype": "bfloat16", "optimizer.grad_accum": 1,
           "objective.reference": "frozen", **LORA}
    p = mp.plan(tiny("dpo", **dpo, **{"model.param_dtype": "bfloat16"}),
                devices=jax.devices()[:4])
    ref = p["reference"]
    assert ref["shared"] and ref["weights"] == p["hand"]["frozen"]
    assert p["phases"]["train step"] == mp.peak(p["step"])  # no second copy resident
    assert p["phases"]["reference forward"] == (p["hand"]["params"] + p["hand"]["opt_state"]
                                                + mp.peak(ref))
    assert "shared, no copy" in mp.report(p, "tiny lora dpo", 80.0)
    # An f32 base with bf16 compute: the reference is a bf16 copy, resident beside it.
    p = mp.plan(tiny("dpo", **dpo), devices=jax.devices()[:4])
    ref = p["reference"]
    assert not ref["shared"] and ref["weights"] == p["hand"]["frozen"] // 2
    assert p["phases"]["train step"] == mp.peak(p["step"]) + ref["weights"]


def test_moe_plan_follows_setup_moe_impl_and_expert_parallel():
    """A Mixtral LoRA run: targets=all means q,k,v,o in the plan as in setup(); moe_impl is
    the config's; mesh.expert_parallel's rules are applied (whole experts over fsdp)."""
    from medjax.parallel.sharding import axis_rules, rules_for
    for ep in (False, True):
        config = tiny("pretrain", **LORA, **{"model.preset": "mixtral_tiny", "mesh.fsdp": 4,
                                             "mesh.tensor": 2, "model.moe_impl": "dense",
                                             "mesh.expert_parallel": ep})
        with axis_rules(rules_for(ep)):
            s = setup(config, 512)
            mc = mp.model_config_of(config)
            state, _ = abstract_train_state(config, mc, s.mesh)
        assert mc.moe_impl == s.model_config.moe_impl == "dense"
        assert mc.lora.targets == s.model_config.lora.targets == ("q_proj", "k_proj", "v_proj",
                                                                  "o_proj")
        assert jax.tree.map(lambda x: (x.shape, x.dtype, x.sharding), state) == jax.tree.map(
            lambda x: (x.shape, x.dtype, x.sharding), s.state)
        spec = s.frozen["layers"]["moe"]["gate_proj"].sharding.spec  # [L, E, d, f]
        p = mp.plan(config, devices=jax.devices()[:8])
        moe = p["model"]["moe"]
        assert (moe["impl"], moe["experts"], moe["experts_axis"]) == (
            "dense", 4, "fsdp" if ep else None)
        assert (spec[1] == "fsdp") == ep
        assert ("whole experts over fsdp" in mp.report(p, "moe", 80.0)) == ep
