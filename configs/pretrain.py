"""Continued pretraining (next-token loss on packed plain text).

  python -m medjax.train --config=configs/pretrain.py --workdir=/tmp/pretrain
  python -m medjax.train --config=configs/pretrain.py:mistral_7b --workdir=... \
      --config.model.init_from=/path/to/Mistral-7B-v0.1 --config.data.sources='corpus/*.jsonl'

The default variant trains the tiny Llama-3-shaped model on the bundled
medical sample text on a laptop CPU in a couple of minutes.
"""

import os

from medjax.configs import SAMPLES, base, full_size, parse_arg


def get_config(arg=None):
    variant = parse_arg(arg, __file__, variants=("mistral_7b",)).variant
    c = base("pretrain")
    c.data.sources = os.path.join(SAMPLES, "pretrain.jsonl")  # held out: pretrain_eval.jsonl
    if variant == "mistral_7b":  # Internist.ai 7b (references section 1), 4 x 80 GB GPUs
        full_size(c, "mistral_7b", tokenizer="mistral")
        c.model.param_dtype = "float32"
        c.seq_len = 4096
        c.batch_size = 48  # 48 x 4096 = 196,608 tokens, Internist's ~192k tokens per step
        c.epochs = 4
        c.steps = 0  # from the data: epochs x the batches of one epoch
        c.objective.neftune_alpha = 5.0
        c.optimizer.update(lr=6e-6, min_lr=1e-8, warmup_steps=100.0, b2=0.95, eps=1e-5,
                           weight_decay=0.1, grad_accum=12)
        c.checkpoint.every = 500
        c.eval.every = 250
        c.logging.every = 10
    return c
