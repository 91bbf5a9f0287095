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

from medjax.configs import SAMPLES, base, full_size, parse_arg


def get_config(arg=None):
    variant = parse_arg(arg, __file__, variants=("llama3_8b", "llama31_8b", "llama3_70b")).variant
    c = base("sft")
    c.data.sources = os.path.join(SAMPLES, "sft_sharegpt.jsonl")  # held out: *_eval.jsonl
    # Chunks of 64 positions: the prompt's chunks are skipped (one device); 1.23x the
    # steps/s of one 1024 chunk on the CPU (benchmarks/RESULTS.md)
    c.objective.loss_chunk_size = 64
    if variant:
        full_size(c, variant, tokenizer="llama3")
        c.objective.loss_chunk_size = 1024
        c.seq_len = 8192 if variant != "llama3_70b" else 4096
        c.batch_size = 128  # UltraMedical: global batch 128, packing
        c.epochs = 3
        c.steps = 0  # from the data: epochs x the batches of one epoch
        c.optimizer.lr = 2e-5 if variant != "llama3_70b" else 1e-5
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
        c.optimizer.grad_accum = 16 if variant != "llama3_70b" else 2
        c.mesh.data = 1
        c.mesh.fsdp = -1
        c.checkpoint.every = 500
        c.eval.every = 500
    return c
