"""KTO: unpaired desirable / undesirable completions against a frozen reference.

  python -m medjax.train --config=configs/kto.py --workdir=/tmp/kto
  python -m medjax.train --config=configs/kto.py:llama3_8b --workdir=... \
      --config.model.init_from=/path/to/sft_model --config.data.sources='kto/*.jsonl'
"""

from medjax.configs import base, parse_arg, tiny_preferences, ultramedical_preferences


def get_config(arg=None):
    variant = parse_arg(arg, __file__, variants=("llama3_8b", "llama3_70b", "mistral_7b")).variant
    c = tiny_preferences(base("kto"), "kto")
    c.objective.loss_chunk_size = 8
    c.steps = 150
    c.checkpoint.every = 125
    if variant:
        ultramedical_preferences(c, variant)
    return c
