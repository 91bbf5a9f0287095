"""configs/recipes/: every recipe builds and passes medjax.configs.check; Medico-Mistral's
two stages carry the seed's settings and run, chained, at toy size."""

import json
import os

from conftest import ROOT, config_module, set_keys

from medjax.configs import SAMPLES, check

RECIPES = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "configs", "recipes"))
                 if f.endswith(".py"))


def recipe(name: str, variant=None):
    return config_module(f"recipes/{name}").get_config(variant)


def test_every_recipe_loads_and_passes_check():
    assert {"ultramedical_8b_online", "medico_mistral_knowledge",
            "medico_mistral_sft"} <= set(RECIPES)
    for name in RECIPES:
        variants = [None, "full"] if name.startswith("medico_mistral") else [None]
        for v in variants:
            c = recipe(name, v)
            check(c)
            assert c.model.dtype == "bfloat16" and c.data.sources == ""
            shards = c.batch_size // c.optimizer.grad_accum  # one row per device
            assert c.batch_size % c.optimizer.grad_accum == 0 and shards in (8, 32)


def test_medico_mistral_settings():
    k, s = recipe("medico_mistral_knowledge"), recipe("medico_mistral_sft")
    for c in (k, s):  # the card's shared settings; LoRA on attention over a bf16 base
        assert (c.model.preset, c.optimizer.lr, c.seq_len, c.model.remat_policy,
                c.mesh.fsdp, c.model.moe_impl) == ("mixtral_8x7b", 2e-5, 4096, "full", -1,
                                                   "dense")
        assert (c.model.lora.rank, c.model.lora.targets, c.model.param_dtype) == (
            16, "q,k,v,o", "bfloat16")
        assert c.model.init_from == "" and c.steps == 0  # the user's; steps from epochs
    assert (k.objective.name, k.epochs, k.batch_size) == ("pretrain", 1, 1024)
    assert (s.objective.name, s.epochs, s.batch_size, s.data.template) == (
        "sft", 5, 896, "mistral")
    for name in ("medico_mistral_knowledge", "medico_mistral_sft"):
        full = recipe(name, "full")  # full fine-tuning: f32 weights and Adam, 32 devices
        assert (full.model.lora.rank, full.model.param_dtype) == (0, "float32")
        assert full.batch_size // full.optimizer.grad_accum == 32


def _toy(c, tmp_path, **keys):
    """The recipe at toy size: the tiny Mixtral, 64-token rows, 2 steps, no eval."""
    c.model.preset = "mixtral_tiny"
    c.model.vocab_size = 32000  # the mistral tokenizer's
    c.seq_len, c.batch_size, c.epochs, c.steps = 64, 8, 0, 2
    c.optimizer.grad_accum = 1
    c.optimizer.warmup_steps = 0.0
    c.eval.every, c.eval.at_start = 0, False
    c.data.eval_sources = ""
    c.logging.every, c.logging.progress = 1, False
    c.checkpoint.every = 2
    return set_keys(c, **keys)


def test_medico_mistral_stages_chain_at_toy_size(tmp_path):
    """Stage 1 (LoRA knowledge injection) then stage 2 (LoRA SFT) from stage 1's workdir,
    whose adapters are merged into its base when loaded."""
    from medjax import models
    from medjax.training import run
    one, two = tmp_path / "knowledge", tmp_path / "sft"
    run(_toy(recipe("medico_mistral_knowledge"), tmp_path,
             **{"data.sources": os.path.join(SAMPLES, "pretrain.jsonl")}), str(one))
    run(_toy(recipe("medico_mistral_sft"), tmp_path,
             **{"data.sources": os.path.join(SAMPLES, "sft_sharegpt.jsonl"),
                "model.init_from": str(one)}), str(two))
    for wd in (one, two):
        rows = [json.loads(x) for x in open(wd / "metrics.jsonl")]
        last = [r for r in rows if "loss" in r][-1]
        assert last["step"] == 2 and "moe/aux_loss" in last
    m = models.load(two)  # the second stage's adapters merged into the first's model
    assert m.config.num_experts == 4 and m.config.lora is None
    assert "moe" in m.params["layers"]
