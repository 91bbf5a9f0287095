"""Iterative online preference learning (UltraMedical / RLHFlow Online-RLHF): each round
samples responses from the current policy, scores them with a reward model, pairs the
best against the worst and trains DPO against the initial policy.

  python -m medjax.train --config=configs/sft.py --workdir=/tmp/sft       # the policy
  python -m medjax.train --config=configs/reward.py --workdir=/tmp/rm     # the reward model
  python -m medjax.train --config=configs/online_dpo.py --workdir=/tmp/online \
      --config.model.init_from=/tmp/sft --config.online.reward_model=/tmp/rm

Variants: `:kto` trains unpaired KTO on the rounds' samples (the best response
desirable, the worst undesirable); `objective.loss_type` takes nca_pair or kto_pair
(TRL 0.7.8-0.9.4, as UltraMedical) besides sigmoid. The full-size recipe is
configs/recipes/ultramedical_8b_online.py. Every key is under `online.` (rounds,
prompts, samples_per_prompt, temperature, top_p, max_new_tokens, reward_model,
pair_rule, missing_eot_penalty, reference, steps_per_round, ...): `--help` lists them.

The default is the CPU demonstration (a few minutes after the SFT and reward runs
above): 3 rounds of 128 bundled prompts x 8 samples, held-out reward on the 60 bundled
held-out prompts before and after each round.
"""

import os

from medjax.configs import SAMPLES, base, parse_arg, tiny_preferences
from medjax.online import add_online_config


def get_config(arg=None):
    variant = parse_arg(arg, __file__, variants=("kto",)).variant
    c = tiny_preferences(base("kto" if variant == "kto" else "dpo"))
    add_online_config(c, rounds=3)
    o = c.online
    o.prompts = os.path.join(SAMPLES, "preference.jsonl")  # their prompts (600)
    o.eval_prompts = os.path.join(SAMPLES, "preference_eval.jsonl")  # held out (60)
    o.prompts_per_round = 128
    o.samples_per_prompt = 8
    o.temperature = 1.0
    o.max_new_tokens = 32
    o.sample_batch = 16
    o.eval_samples_per_prompt = 8  # 480 held-out samples: the mean moves less by chance
    c.data.eval_sources = ""
    c.seq_len = 96
    c.batch_size = 8
    c.optimizer.lr = 1e-4
    c.optimizer.min_lr = 1e-5
    c.optimizer.warmup_steps = 0.1
    c.optimizer.weight_decay = 0.0
    c.logging.every = 4
    c.checkpoint.every = 8
    if variant != "kto":
        c.objective.loss_type = "sigmoid"
        c.objective.beta = 0.1
        c.objective.reference = "precompute"  # the round's pairs: one pass, no resident copy
        c.objective.loss_chunk_size = 32
    return c
