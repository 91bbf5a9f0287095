"""Bradley-Terry reward model: a scalar head on the last non-pad token of prompt+response.

  python -m medjax.train --config=configs/reward.py --workdir=/tmp/rm
  python -m medjax.train --config=configs/reward.py:llama3_8b --workdir=... \
      --config.model.init_from=/path/to/Meta-Llama-3-8B --config.data.sources='prefs/*.jsonl'

The default variant trains the tiny model on the bundled preference pairs and
reports held-out `eval/accuracy`. The variant carries the settings of
UltraMedical's reward model (references section 1).
"""

from medjax.configs import base, full_size, parse_arg, tiny_preferences


def get_config(arg=None):
    variant = parse_arg(arg, __file__, variants=("llama3_8b",)).variant
    c = tiny_preferences(base("reward"))
    # The scalar head makes a step cheap (no 128k-vocabulary projection): more steps,
    # a gentler rate and weight decay, so that the tiny model generalises to held-out
    # pairs instead of memorising the training ones.
    c.steps = 600
    c.optimizer.lr = 3e-4
    c.optimizer.min_lr = 3e-5
    c.eval.every = 100
    c.checkpoint.every = 200
    if variant == "llama3_8b":
        full_size(c, variant, tokenizer="llama3")
        c.seq_len = 4096
        c.batch_size = 512
        c.epochs = 1
        c.steps = 0  # from the data: epochs x the batches of one epoch
        c.optimizer.lr = 2e-6
        c.optimizer.min_lr = 0.0
        c.optimizer.warmup_steps = 0.03
        c.optimizer.weight_decay = 0.001
        c.optimizer.grad_accum = 32
    return c
