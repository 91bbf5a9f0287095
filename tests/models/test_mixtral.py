"""Mixtral (mixture of experts): logits and the loss with the load-balancing term equal
transformers' MixtralForCausalLM; grouped (ragged_dot) equals dense one-hot in values and
gradients; HF round trip exact; 8 fake devices (fsdp x tensor, and experts over fsdp)
equal one device; a training run with MoE."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import build_hf_model, load_config

from medjax import models
from medjax.models import moe
from medjax.objectives.lm import lm_loss
from medjax.parallel import make_mesh
from medjax.parallel.sharding import axis_rules, rules_for

TINY = dict(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, num_local_experts=4,
            num_experts_per_tok=2, max_position_embeddings=256, router_aux_loss_coef=0.02,
            tie_word_embeddings=False)


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    d = tmp_path_factory.mktemp("mixtral")
    model = build_hf_model(d, "Mixtral", **TINY)
    return str(d), model


def _ids(b=2, t=12, seed=0):
    return np.random.RandomState(seed).randint(0, TINY["vocab_size"], (b, t))


@pytest.mark.parametrize("impl", ["grouped", "dense"])
@pytest.mark.parametrize("scan", [True, False])
def test_logits_equal_transformers(hf, impl, scan):
    import torch
    path, model = hf
    config, params = models.load_hf(path)
    assert (config.family, config.num_experts, config.experts_per_token) == ("mixtral", 4, 2)
    ids = _ids()
    with torch.no_grad():
        ref = model(torch.tensor(ids)).logits.numpy()
    got = models.forward(config.replace(moe_impl=impl, scan_layers=scan), params,
                         jnp.asarray(ids))
    np.testing.assert_allclose(np.asarray(got), ref, atol=1e-4, rtol=0)


def test_loss_with_aux_equals_transformers_output_router_logits(hf):
    """transformers: CE + router_aux_loss_coef * load_balancing_loss(attention_mask) with
    output_router_logits=True; medjax's lm_loss on the same right-padded rows."""
    import torch
    path, model = hf
    config, params = models.load_hf(path)
    ids = _ids(3, 14, seed=1)
    lengths = np.array([14, 9, 11])
    mask = (np.arange(14)[None] < lengths[:, None]).astype(np.int64)
    labels = np.where(mask == 1, ids, -100)
    with torch.no_grad():
        out = model(torch.tensor(ids), attention_mask=torch.tensor(mask),
                    labels=torch.tensor(labels), output_router_logits=True)
    batch = {"input_ids": jnp.asarray(ids * mask), "segment_ids": jnp.asarray(mask),
             "positions": jnp.asarray(np.broadcast_to(np.arange(14), (3, 14)))}
    loss, metrics = lm_loss(config, params, batch)
    np.testing.assert_allclose(float(metrics["moe/aux_loss"]), float(out.aux_loss), rtol=1e-5)
    np.testing.assert_allclose(float(loss), float(out.loss), rtol=1e-5)
    assert float(out.aux_loss) > 1.0  # E * sum f * P: 1 when balanced, so the term is there
    load = [float(metrics[f"moe/load/{e}"]) for e in range(4)]
    np.testing.assert_allclose(sum(load), 1.0, rtol=1e-6)


def test_grouped_equals_dense_values_and_gradients():
    config = models.get_preset("mixtral_tiny", vocab_size=128)
    params = models.init_params(config, jax.random.key(0))
    batch = {"input_ids": jnp.asarray(np.random.RandomState(2).randint(0, 128, (2, 16))),
             "segment_ids": jnp.ones((2, 16), jnp.int32),
             "positions": jnp.broadcast_to(jnp.arange(16), (2, 16))}
    out = {}
    for impl in ("grouped", "dense"):
        c = config.replace(moe_impl=impl)
        out[impl] = jax.value_and_grad(lambda p: lm_loss(c, p, batch)[0])(params)
    np.testing.assert_allclose(float(out["grouped"][0]), float(out["dense"][0]), rtol=1e-6)
    grads = [jax.tree.leaves(out[i][1]) for i in ("grouped", "dense")]
    for g, d in zip(*grads):
        np.testing.assert_allclose(np.asarray(g), np.asarray(d), atol=1e-6, rtol=1e-4)
    router = np.asarray(out["grouped"][1]["layers"]["moe"]["router"])
    assert np.abs(router).max() > 0  # the router learns (through the weights and aux loss)


def test_hf_round_trip_is_exact_and_transformers_loads_it(hf, tmp_path):
    import torch
    import transformers
    path, model = hf
    config, params = models.load_hf(path)
    models.save_hf(config, params, tmp_path / "out")
    names = json.load(open(tmp_path / "out" / "config.json"))
    assert names["model_type"] == "mixtral" and names["num_local_experts"] == 4
    config2, params2 = models.load_hf(tmp_path / "out")
    assert config2.replace(eos_token_id=config.eos_token_id) == config
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                 params, params2)
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    ids = _ids()
    with torch.no_grad():
        np.testing.assert_array_equal(again(torch.tensor(ids)).logits.numpy(),
                                      model(torch.tensor(ids)).logits.numpy())


@pytest.mark.parametrize("expert_parallel", [False, True])
def test_eight_devices_equal_one(hf, expert_parallel):
    path, _ = hf
    config, params = models.load_hf(path)
    ids = jnp.asarray(_ids(8, 12, seed=3))
    one = np.asarray(models.forward(config, params, ids))
    mesh = make_mesh(1, 4, 2)
    with axis_rules(rules_for(expert_parallel)), jax.set_mesh(mesh):
        _, sharded = models.load_hf(path, mesh=mesh)
        spec = sharded["layers"]["moe"]["gate_proj"].sharding.spec
        assert (spec[1] == "fsdp") == expert_parallel, spec  # [L, E, d, f]
        batch = jax.device_put(ids, jax.sharding.NamedSharding(mesh, jax.P(("data", "fsdp"))))
        got = jax.jit(lambda p, x: models.forward(config, p, x))(sharded, batch)
    np.testing.assert_allclose(np.asarray(got), one, atol=1e-5, rtol=0)


def test_a_mixtral_training_run_logs_aux_and_load(tmp_path):
    from medjax.training import run
    c = load_config("pretrain", **{"model.preset": "mixtral_tiny", "model.vocab_size": 32000,
                                   "steps": 3, "batch_size": 8, "seq_len": 64,
                                   "logging.every": 1, "logging.progress": False,
                                   "eval.every": 0, "mesh.fsdp": 4, "mesh.tensor": 2,
                                   "mesh.expert_parallel": True})  # tokenizer: the family's (mistral)
    run(c, str(tmp_path / "w"))
    rows = [json.loads(x) for x in open(tmp_path / "w" / "metrics.jsonl")]
    last = [r for r in rows if "loss" in r][-1]
    assert last["step"] == 3 and "moe/aux_loss" in last
    np.testing.assert_allclose(sum(last[f"moe/load/{e}"] for e in range(4)), 1.0, rtol=1e-5)
    np.testing.assert_allclose(last["loss"], last["nll"] + 0.02 * last["moe/aux_loss"],
                               rtol=1e-5)
    m = models.load(tmp_path / "w")
    assert m.config.num_experts == 4 and "moe" in m.params["layers"]


def test_greedy_generation_equals_transformers(hf):
    import torch
    path, model = hf
    config, params = models.load_hf(path)
    from medjax.generate import generate
    prompts = [[5, 17, 99, 3], [42] * 9 + [7, 8]]
    got = generate(config, params, prompts, max_new_tokens=10)
    for prompt, g in zip(prompts, got):
        with torch.no_grad():
            out = model.generate(torch.tensor([prompt]), max_new_tokens=10, do_sample=False,
                                 pad_token_id=0, attention_mask=torch.ones(1, len(prompt),
                                                                           dtype=torch.long))
        assert g.ids == out[0, len(prompt):].tolist()


def test_moe_fields_are_checked():
    with pytest.raises(models.ConfigError, match="experts_per_token"):
        models.get_preset("mixtral_tiny", experts_per_token=5)
    with pytest.raises(models.ConfigError, match="num_experts"):
        models.get_preset("llama3_tiny", num_experts=4)
    with pytest.raises(models.ConfigError, match="moe_impl"):
        models.get_preset("mixtral_tiny", moe_impl="sparse")
    hf = {"model_type": "mixtral", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 8,
          "num_hidden_layers": 1, "num_attention_heads": 2, "num_local_experts": 2,
          "num_experts_per_tok": 3}
    with pytest.raises(models.ConfigError, match="num_experts_per_tok"):
        models.ModelConfig.from_hf(hf)
    hf = dict(hf, model_type="llama", num_experts_per_tok=1)
    with pytest.raises(models.ConfigError, match="num_local_experts"):
        models.ModelConfig.from_hf(hf)
    assert moe.MOE_IMPLS == ("grouped", "dense")


def test_flops_per_token_count_the_active_experts():
    """Mixtral-8x7B: 12.9B active parameters a token (2 of 8 experts), as published."""
    from medjax.training.metrics import train_flops_per_token
    c = models.get_preset("mixtral_8x7b")
    active = (train_flops_per_token(c, 1) - 6 * c.num_layers * c.num_heads * c.head_dim) / 6
    embedding = c.vocab_size * c.hidden_size
    assert abs((active + embedding) / 1e9 - 12.88) < 0.02, active  # 12.9B incl. embeddings
