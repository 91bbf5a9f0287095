"""KTO: unpaired desirable / undesirable completions against a frozen reference.

  python -m medjax.train --config=configs/kto.py --workdir=/tmp/kto
  python -m medjax.train --config=configs/kto.py:llama3_8b --workdir=... \
      --config.model.init_from=/path/to/sft_model --config.data.sources='kto/*.jsonl'
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dpo  # noqa: E402  (shared preference defaults)


def get_config(arg=None):
    c = dpo.get_config(arg)
    c.objective.name = "kto"
    c.objective.desirable_weight = 1.0
    c.objective.undesirable_weight = 1.0
    c.objective.reference = "frozen"  # or a model directory (KTO's KL rows need the model)
    if not arg:
        c.steps = 150
        c.data.sources = os.path.join(dpo.pretrain.SAMPLES, "kto.jsonl")
        c.data.eval_sources = os.path.join(dpo.pretrain.SAMPLES, "kto_eval.jsonl")
    return c
