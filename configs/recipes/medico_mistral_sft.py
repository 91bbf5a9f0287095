"""Medico-Mistral, stage 2: instruction tuning (references section 1; seed 003, the
SNOWTEAM/sft_medico-mistral card): supervised fine-tuning of the stage-1 model
(configs/recipes/medico_mistral_knowledge.py) on medical QA with rationales, UMLS
knowledge-graph QA and single-turn doctor-patient dialogues, loss on the assistant
tokens, 5 epochs, global batch 896 rows, AdamW lr 2e-5, bf16, FSDP, full activation
recomputation.

  python -m medjax.train --config=configs/recipes/medico_mistral_sft.py --workdir=DIR \\
      --config.model.init_from=STAGE1_WORKDIR \\
      --config.data.sources='medico_sft/*.jsonl'      # messages / ShareGPT / Alpaca records
  .venv/bin/python benchmarks/memory_plan.py \\
      --config=configs/recipes/medico_mistral_sft.py --devices=8             # fits 8 x 80 GB

``model.init_from`` is stage 1's workdir: a LoRA run's adapters are merged into its base
when it is loaded, and this stage trains new adapters over that merged bf16 model (an HF
Mixtral directory works too). The chat template is Mistral's ([INST] ... [/INST]), as
Mixtral-8x7B-Instruct's. The card ran this stage on 7 GPUs (896 = 7 x 128); 7 devices do
not divide Mixtral's 4096-wide weights for FSDP, and a whole bf16 copy (93 GB) does not
fit on one 80 GB GPU, so the recipe is sized for 8 (112 rows per device per step). Full
fine-tuning does not fit on 8 x 80 GB (see the stage-1 recipe); the ``full`` variant is
sized for 32 devices (``--config.optimizer.grad_accum=896/N`` on N devices, N dividing
896).

Not stated by the card, so chosen here: rows of 4096 tokens (stage 1's context), LoRA
rank 16 / alpha 32 on q, k, v, o, 3% warmup and cosine to 0, AdamW b2 0.999 and no
weight decay, clipping at 1.0, and ``model.moe_impl=dense`` (why: the stage-1 recipe).
"""

from medjax.configs import base, full_size, parse_arg

GLOBAL_BATCH = 896


def get_config(arg=None):
    variant = parse_arg(arg, __file__, variants=("full",)).variant
    c = base("sft")
    full_size(c, "mixtral_8x7b", tokenizer="mistral")
    c.data.template = "mistral"
    c.model.moe_impl = "dense"
    c.model.remat_policy = "full"
    c.seq_len = 4096
    c.batch_size = GLOBAL_BATCH
    c.epochs = 5
    c.steps = 0  # from the data: epochs x the batches of one epoch
    c.optimizer.update(lr=2e-5, min_lr=0.0, warmup_steps=0.03, b1=0.9, b2=0.999, eps=1e-8,
                       weight_decay=0.0, clip_norm=1.0)
    c.mesh.data = 1
    c.mesh.fsdp = -1
    if variant == "full":
        c.model.param_dtype = "float32"
        c.optimizer.grad_accum = GLOBAL_BATCH // 32
    else:
        c.model.param_dtype = "bfloat16"
        c.model.lora.rank = 16
        c.model.lora.alpha = 32.0
        c.model.lora.targets = "q,k,v,o"
        c.optimizer.grad_accum = GLOBAL_BATCH // 8
    c.checkpoint.every = 200
    c.eval.every = 200
    return c
