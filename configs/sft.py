"""Supervised fine-tuning: next-token loss on assistant tokens only, packed conversations.

  python -m medjax.train --config=configs/sft.py --workdir=/tmp/sft
  python -m medjax.train --config=configs/sft.py:llama3_8b --workdir=... \
      --config.model.init_from=/path/to/Meta-Llama-3-8B --config.data.sources='ultramedical/*.jsonl'

The default variant fine-tunes the tiny model on the bundled ShareGPT-style
medical conversations (CPU, a few minutes); the eval loss is on held-out
conversations. Named variants carry UltraMedical's SFT hyperparameters
(references section 1) and a mesh for 8 GPUs per host.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pretrain  # noqa: E402  (shared defaults)


def get_config(arg=None):
    c = pretrain.get_config()
    c.objective.name = "sft"
    c.data.sources = os.path.join(pretrain.SAMPLES, "sft_sharegpt.jsonl")
    c.data.eval_sources = os.path.join(pretrain.SAMPLES, "sft_sharegpt_eval.jsonl")
    c.data.format = "auto"
    c.steps = 100
    c.seq_len = 256
    c.batch_size = 8
    if arg in ("llama3_8b", "llama31_8b", "llama3_70b"):
        pretrain.full_size(c, arg)
        c.seq_len = 8192 if arg != "llama3_70b" else 4096
        c.batch_size = 128  # UltraMedical: global batch 128, packing
        c.epochs = 3
        c.steps = 10000  # set from the dataset: packed rows * epochs / batch_size
        c.optimizer.lr = 2e-5 if arg != "llama3_70b" else 1e-5
        c.optimizer.min_lr = 0.0
        c.optimizer.warmup_steps = 0.05
        c.optimizer.b2 = 0.999
        c.optimizer.weight_decay = 0.0
        # benchmarks/memory_plan.py: with dots_no_batch remat, 8B at seq 8192 (attention
        # 'xla' keeps [heads, seq, seq] scores) and 70B at 4096 need more than 80 GB a
        # GPU; full remat fits both (RESULTS.md, memory plan). One row per GPU per
        # micro-batch: 128 / 16 on 8 GPUs, 128 / 2 on 64 GPUs (more micro-batches
        # than that would leave GPUs padding, not save memory).
        c.model.remat_policy = "full"
        c.optimizer.grad_accum = 16 if arg != "llama3_70b" else 2
        c.mesh.data = 1
        c.mesh.fsdp = -1
        c.checkpoint.every = 500
        c.eval.every = 500
    elif arg not in (None, ""):
        raise ValueError(f"configs/sft.py: unknown variant {arg!r} "
                         "(known: llama3_8b, llama31_8b, llama3_70b)")
    return c
