"""Direct preference optimisation (and its variants) against a frozen reference.

  python -m medjax.train --config=configs/dpo.py --workdir=/tmp/dpo
  python -m medjax.train --config=configs/dpo.py:llama3_8b --workdir=... \
      --config.model.init_from=/path/to/sft_model --config.data.sources='prefs/*.jsonl'

The default variant trains the random tiny model on the bundled preference
pairs, whose chosen and rejected answers differ only in a medical fact (the
reference log-probs are precomputed once), and reports held-out
`eval/rewards/accuracies`. Variants carry UltraMedical's DPO settings
(references section 1) with a frozen reference model.
"""

from medjax.configs import base, parse_arg, tiny_preferences, ultramedical_preferences


def get_config(arg=None):
    variant = parse_arg(arg, __file__, variants=("llama3_8b", "llama3_70b", "mistral_7b")).variant
    c = tiny_preferences(base("dpo"))
    # The CPU default computes the reference log-probs once before training (a third
    # less work per step than a frozen model).
    c.objective.reference = "precompute"
    c.objective.loss_chunk_size = 8  # responses are ~1/4 of a row: chunks of prompt are skipped
    # A random tiny model learns to prefer the true fact of held-out pairs
    # (eval/rewards/accuracies about 0.8 at step 250); weight decay keeps it from
    # memorising the 600 training pairs.
    c.steps = 250
    c.checkpoint.every = 125
    if variant:
        ultramedical_preferences(c, variant)
    return c
