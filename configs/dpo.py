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

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pretrain  # noqa: E402  (shared defaults)


def get_config(arg=None):
    c = pretrain.get_config()
    c.objective.name = "dpo"
    # sigmoid | hinge | ipo | robust | nca_pair | bco_pair | sppo_hard | apo_zero | simpo | orpo
    c.objective.loss_type = "sigmoid"
    c.objective.beta = 0.1  # for orpo: its lambda
    c.objective.label_smoothing = 0.0
    c.objective.gamma = 0.0  # simpo's margin
    c.objective.sft_weight = 0.0  # adds the chosen response's NLL
    # frozen | precompute | a model directory. The CPU default computes the reference
    # log-probs once before training (a third less work per step than a frozen model).
    c.objective.reference = "precompute"
    c.data.sources = os.path.join(pretrain.SAMPLES, "preference.jsonl")
    c.data.eval_sources = os.path.join(pretrain.SAMPLES, "preference_eval.jsonl")
    c.seq_len = 64
    c.objective.loss_chunk_size = 8  # responses are ~1/4 of a row: chunks of prompt are skipped
    c.batch_size = 16  # pairs
    # The CPU default: a random tiny model learns to prefer the true fact of held-out pairs
    # (eval/rewards/accuracies about 0.8 at step 250); weight decay keeps it from
    # memorising the 600 training pairs.
    c.steps = 250
    c.optimizer.lr = 1e-3
    c.optimizer.min_lr = 1e-4
    c.optimizer.warmup_steps = 10.0
    c.optimizer.weight_decay = 0.1
    c.eval.every = 50
    c.checkpoint.every = 125
    if arg in ("llama3_8b", "llama3_70b", "mistral_7b"):
        pretrain.full_size(c, arg, tokenizer="mistral" if arg == "mistral_7b" else "llama3")
        c.objective.reference = "frozen"
        c.objective.loss_chunk_size = 512
        c.seq_len = 2048  # UltraMedical: max length 2048, max prompt 512
        c.data.max_prompt_length = 512
        c.batch_size = 32
        c.epochs = 1
        c.steps = 3000  # set from the dataset: pairs / 32
        c.objective.beta = 0.1
        c.optimizer.lr = 3e-7
        c.optimizer.min_lr = 0.0
        c.optimizer.warmup_steps = 0.1
        c.optimizer.b2 = 0.999
        c.optimizer.grad_accum = 4
        if arg == "llama3_70b":  # 64 GPUs (benchmarks/memory_plan.py, RESULTS.md)
            # 32 pairs do not split over 64 fsdp shards: tensor 2 within each host, fsdp
            # the rest; 2 micro-batches of 16 pairs = one row per fsdp shard each.
            c.mesh.tensor = 2
            c.optimizer.grad_accum = 2
        c.checkpoint.every = 500
        c.eval.every = 500
    elif arg not in (None, ""):
        raise ValueError(f"configs/dpo.py: unknown variant {arg!r} "
                         "(known: llama3_8b, llama3_70b, mistral_7b)")
    return c
