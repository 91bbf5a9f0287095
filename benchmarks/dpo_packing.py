"""Padding-free DPO (``data.pack_pairs``) vs padded DPO on the same data, in one process.

    python benchmarks/dpo_packing.py                       # medium shape, lengths / 4
    python benchmarks/dpo_packing.py --seq_len=384 --max_prompt_length=192   # tight rows
    python benchmarks/dpo_packing.py --scale=1 --shape=tiny

The data: synthetic preference records (``benchmarks/synthetic.py``) whose lengths
follow a spread like UltraMedical's (prompt 50-600 tokens, responses 50-900, uniform;
``--scale`` divides them so that a CPU can run the medium shape), written as JSONL and
read through the real pipeline (tokeniser, chat template, validation, packing). The
sequence and prompt limits default to UltraMedical's DPO recipe (max length 2048, max
prompt 512, shared/references.md) divided by ``--scale`` too: 512 and 128 at the default
scale 4. ``--seq_len=384`` is the tightest limit every pair fits untruncated, the padded
path's best case. Both runs use the same
config, model (a random model of the medium shape: hidden 512, MLP 1536, 8 layers, 8/4
heads, vocabulary 32,000 with Mistral's tokenizer and template; or llama3_tiny with
Llama-3's), a frozen reference
(its forward timed with each step, as a run does it) and the same memory per batch:
padded, ``batch_size`` pairs of 2 x ``seq_len``; packed, ``batch_size`` rows of
2 x ``seq_len`` holding as many whole pairs as fit. Timed steps run interleaved
(padded, packed, padded, ...) after a warm-up; the figures are the medians.

Printed per mode: pairs per step, the fraction of real (non-padding) tokens, step time,
tokens/s over all positions, real tokens/s, pairs/s, and the packed / padded ratios.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import jax
import numpy as np
from absl import app, flags
from synthetic import write_data  # benchmarks/, the script directory

FLAGS = flags.FLAGS
flags.DEFINE_enum("shape", "medium", ["medium", "tiny"], "Model shape.")
flags.DEFINE_float("scale", 4.0, "Divide the UltraMedical-like lengths by this.")
flags.DEFINE_integer("seq_len", 0, "Per-sequence max length (packed rows: 2 x this); "
                     "0: UltraMedical's 2048 / --scale.")
flags.DEFINE_integer("max_prompt_length", 0, "Prompt tokens kept; 0: UltraMedical's "
                     "512 / --scale.")
flags.DEFINE_integer("batch_size", 8, "Pairs (padded) / rows (packed) per step.")
flags.DEFINE_integer("steps", 4, "Timed steps per mode.")
flags.DEFINE_integer("records", 600, "Synthetic preference records.")

def medium_dir(tmp: str) -> str:
    import torch
    import transformers
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=32000, hidden_size=512, intermediate_size=1536,
                                   num_hidden_layers=8, num_attention_heads=8,
                                   num_key_value_heads=4, head_dim=64,
                                   max_position_embeddings=4096)
    transformers.LlamaForCausalLM(cfg).save_pretrained(tmp)
    return tmp


def mode(config, packed: bool):
    from medjax.data.pipeline import pair_real, pipeline_from_config
    from medjax.training.batches import device_batch
    from medjax.training.reference import build_reference
    from medjax.training.state import setup
    c = config.copy_and_resolve_references()
    c.data.pack_pairs = packed
    s = setup(c)
    with jax.set_mesh(s.mesh):
        ref = build_reference(c, s.unit, s.mesh, s.model_config, s.state["params"])["train"]
    it = iter(pipeline_from_config(c, s.tokenizer, s.template))
    state = {"s": s, "state": s.state, "it": it, "ref": ref, "rows": []}

    def step():
        local = next(state["it"])
        real = int(pair_real(local).sum())
        tokens = int(np.asarray(local["segment_ids"]).size)
        real_tokens = int((np.asarray(local["segment_ids"]) != 0).sum())
        t0 = time.perf_counter()
        with jax.set_mesh(s.mesh):
            batch = device_batch(local, s.batch_sharding, state["ref"])
            state["state"], metrics = s.step_fn(state["state"], batch)
            jax.block_until_ready(metrics["loss"])
        dt = time.perf_counter() - t0
        state["rows"].append((dt, tokens, real_tokens, real))

    return step, state


def seq_len() -> int:
    return FLAGS.seq_len or int(2048 / FLAGS.scale)


def _config(data: str, model_dir: str | None):
    from medjax.configs import base
    c = base("dpo")
    c.data.sources = data
    c.data.eval_sources = ""
    c.seq_len = seq_len()
    c.batch_size = FLAGS.batch_size
    c.data.max_prompt_length = FLAGS.max_prompt_length or int(512 / FLAGS.scale)
    c.objective.reference = "frozen"
    c.logging.progress = False
    if model_dir:  # the medium shape's 32,000 vocabulary: Mistral's tokenizer and template
        c.model.init_from = model_dir
        c.model.vocab_size = 0
        c.data.tokenizer = "mistral"
        c.data.template = "mistral"
    c.mesh.fsdp = 1
    return c


def run(argv):
    del argv
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "prefs.jsonl")
        write_data(data, FLAGS.records, FLAGS.scale)
        model_dir = medium_dir(os.path.join(tmp, "medium")) if FLAGS.shape == "medium" else None
        config = _config(data, model_dir)
        modes = {name: mode(config, packed) for name, packed in (("padded", False),
                                                                   ("packed", True))}
        for name, (step, _) in modes.items():  # compile + warm up
            step()
            step()
            modes[name][1]["rows"].clear()
        for _ in range(FLAGS.steps):
            for step, _ in modes.values():
                step()
    out = {}
    print(f"DPO, {FLAGS.shape} shape, frozen reference, seq_len {seq_len()}, max prompt "
          f"{config.data.max_prompt_length}, batch "
          f"{FLAGS.batch_size}, lengths / {FLAGS.scale:g}, {jax.device_count()} device(s)")
    print(f"{'mode':8} {'pairs/step':>10} {'real':>6} {'step s':>8} {'tok/s':>8} "
          f"{'real tok/s':>10} {'pairs/s':>8}")
    for name, (_, st) in modes.items():
        dt = statistics.median(r[0] for r in st["rows"])
        tokens = statistics.mean(r[1] for r in st["rows"])
        real = statistics.mean(r[2] for r in st["rows"])
        pairs = statistics.mean(r[3] for r in st["rows"])
        out[name] = dict(step=dt, tok=tokens / dt, real_tok=real / dt, pairs=pairs / dt)
        print(f"{name:8} {pairs:10.1f} {real / tokens:6.0%} {dt:8.2f} {tokens / dt:8.0f} "
              f"{real / dt:10.0f} {pairs / dt:8.2f}")
    p, q = out["packed"], out["padded"]
    print(f"packed / padded: real tokens/s {p['real_tok'] / q['real_tok']:.2f}x, pairs/s "
          f"{p['pairs'] / q['pairs']:.2f}x, step time {p['step'] / q['step']:.2f}x")


if __name__ == "__main__":
    app.run(run)
