"""UltraMedical 8B iterative preference learning (references section 9): three rounds of
8 responses per prompt at temperature 1.0 from the current policy, scored by a
Bradley-Terry reward model, best vs worst with ties dropped, sigmoid DPO (beta 0.1,
lr 5e-7, cosine, one epoch of the round's pairs) against the initial policy, on 8 GPUs.

  python -m medjax.train --config=configs/recipes/ultramedical_8b_online.py --workdir=DIR \\
      --config.model.init_from=/path/to/Llama-3-8B-UltraMedical-SFT \\
      --config.online.reward_model=/path/to/reward_model \\
      --config.online.prompts='ultramedical_prompts/*.jsonl'
  .venv/bin/python benchmarks/memory_plan.py \\
      --config=configs/recipes/ultramedical_8b_online.py --devices=8   # fits 8 x 80 GB

The reward model may be a medjax reward workdir (configs/reward.py:llama3_8b) or an HF
*ForSequenceClassification directory; it keeps its own tokenizer and chat template.
The recipe's own figures that the sources do not give (prompts per round, generation
length) are marked below; UltraMedical's reported results (MedQA: SFT 73.3, iterative
DPO 74.2, iterative KTO 74.8) were not reproduced here.
"""

from medjax.configs import base, ultramedical_preferences
from medjax.online import add_online_config


def get_config(arg=None):
    del arg
    c = base("dpo")
    ultramedical_preferences(c, "llama3_8b")  # seq 2048, prompt 512, beta 0.1, 8 GPUs
    add_online_config(c, rounds=3)  # Online-RLHF: 3 iterations
    o = c.online
    o.samples_per_prompt = 8
    o.temperature = 1.0
    o.top_p = 1.0
    o.max_new_tokens = 1536  # seq_len - max prompt (not stated by the sources)
    o.sample_batch = 16  # 128 rows per generation call
    o.reward_batch = 64
    o.reward_max_length = 2048
    o.pair_rule = "best_vs_worst"
    o.reference = "initial"
    o.prompts_per_round = 20000  # Online-RLHF's iterations: 20k prompts each (unverified)
    o.eval_prompts = ""  # held-out prompts: set to see the held-out reward per round
    c.objective.loss_type = "sigmoid"
    c.objective.beta = 0.1
    # Round 0 precomputes from the SFT policy, later rounds from model.init_from too
    # (precompute:DIR): no reference weights resident while training.
    c.objective.reference = "precompute"
    c.optimizer.lr = 5e-7  # Online-RLHF DPO
    c.optimizer.min_lr = 0.0
    c.optimizer.warmup_steps = 0.03
    return c
