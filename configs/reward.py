"""Bradley-Terry reward model: a scalar head on the last non-pad token of prompt+response.

  python -m medjax.train --config=configs/reward.py --workdir=/tmp/rm
  python -m medjax.train --config=configs/reward.py:llama3_8b --workdir=... \
      --config.model.init_from=/path/to/Meta-Llama-3-8B --config.data.sources='prefs/*.jsonl'

The default variant trains the tiny model on the bundled preference pairs and
reports held-out `eval/accuracy`. The variant carries the settings of
UltraMedical's reward model (references section 1).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dpo  # noqa: E402  (shared preference defaults)


def get_config(arg=None):
    c = dpo.get_config(None)
    c.objective.name = "reward"
    c.objective.margin = 0.0
    c.objective.centering = 0.0  # coefficient of mean((r_c + r_r)^2)
    c.objective.reference = "none"
    # The scalar head makes a step cheap (no 128k-vocabulary projection): more steps,
    # a gentler rate and weight decay, so that the tiny model generalises to held-out
    # pairs instead of memorising the training ones.
    c.steps = 600
    c.optimizer.lr = 3e-4
    c.optimizer.min_lr = 3e-5
    c.optimizer.weight_decay = 0.1
    c.eval.every = 100
    c.checkpoint.every = 200
    if arg == "llama3_8b":
        dpo.pretrain.full_size(c, arg)
        c.seq_len = 4096
        c.batch_size = 512
        c.epochs = 1
        c.steps = 200  # set from the dataset: pairs / 512
        c.optimizer.lr = 2e-6
        c.optimizer.min_lr = 0.0
        c.optimizer.warmup_steps = 0.03
        c.optimizer.weight_decay = 0.001
        c.optimizer.grad_accum = 32
    elif arg not in (None, ""):
        raise ValueError(f"configs/reward.py: unknown variant {arg!r} (known: llama3_8b)")
    return c
