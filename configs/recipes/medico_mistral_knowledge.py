"""Medico-Mistral, stage 1: knowledge injection (references section 1; seed 003, the
SNOWTEAM/sft_medico-mistral card): continued pretraining of Mixtral-8x7B on medical text
with the next-token loss (plus Mixtral's load-balancing loss at its config's 0.02), one
epoch, AdamW lr 2e-5, rows of 4096 tokens, global batch 1024 rows (4.2M tokens a step),
bf16 compute, FSDP, full activation recomputation, 8 x A100-80GB.

  python -m medjax.train --config=configs/recipes/medico_mistral_knowledge.py --workdir=DIR \\
      --config.model.init_from=/path/to/Mixtral-8x7B-v0.1 \\
      --config.data.sources='medical_text/*.jsonl'          # {"text": ...} records, packed
  .venv/bin/python benchmarks/memory_plan.py \\
      --config=configs/recipes/medico_mistral_knowledge.py --devices=8       # fits 8 x 80 GB
  python -m medjax.train --config=configs/recipes/medico_mistral_knowledge.py:full ...
      # full fine-tuning, on 32 x 80 GB

Full fine-tuning does not fit on 8 x 80 GB: Mixtral-8x7B has 46.7B parameters, and f32
weights, gradients and Adam's two moments are 16 bytes each, 747 GB, 93 GB a GPU on 8
before any activation. medjax has no optimizer offload; with 8-bit Adam moments, f32
weights and gradients (running sum + micro-batch) would still be 14 bytes a parameter,
82 GB a GPU; bf16 weights would lose updates of lr 2e-5, far below bf16's 2^-8
resolution. The default variant therefore trains LoRA adapters (rank 16, alpha 32) on
every layer's q, k, v and o projections over the frozen base stored in bf16 (93 GB,
11.7 GB a GPU); the experts and the router stay frozen (medjax puts no adapters on
experts). The memory plan (benchmarks/RESULTS.md, "Mixtral / MoE
(issue 17)"): LoRA on 8 devices 57 GiB a device by the CPU compile (GPU estimate 35);
full fine-tuning 152 GiB on 8, 76 GiB on 16 (just over an 80 GB GPU), 49 GiB on 32. The
``full`` variant is the card's full fine-tuning sized for 32 devices; on N devices set
``--config.optimizer.grad_accum=1024/N`` (one row per device per micro-batch).

``model.moe_impl=dense``: every expert on every token, combined by the routing weights.
With this JAX/XLA the grouped implementation (``jax.lax.ragged_dot``) is expanded into a
masked dense matmul over all experts on CPU and, unless cuDNN's ragged-dot fusion is
enabled, on NVIDIA GPUs too (k = 2 times the dense implementation's FLOPs). Both run per
batch shard and gather the experts as FSDP does (RESULTS.md).

Not stated by the card, so chosen here: LoRA rank/alpha, the schedule (3% warmup, cosine
to 0), AdamW b2 0.999 and no weight decay (transformers' Trainer defaults), gradient
clipping at 1.0, checkpoint / eval intervals. lr 2e-5 is the card's full fine-tuning
rate; LoRA runs commonly use 5-10x more (not tuned here). The card's results were not
reproduced here.
"""

from medjax.configs import base, full_size, parse_arg

GLOBAL_BATCH = 1024  # rows of 4096 tokens


def get_config(arg=None):
    variant = parse_arg(arg, __file__, variants=("full",)).variant
    c = base("pretrain")
    full_size(c, "mixtral_8x7b", tokenizer="mistral")  # bf16 compute; data paths yours
    c.model.moe_impl = "dense"  # batch-local, see above
    c.model.remat_policy = "full"  # gradient checkpointing: only each layer's input kept
    c.seq_len = 4096
    c.batch_size = GLOBAL_BATCH
    c.epochs = 1
    c.steps = 0  # from the data: epochs x the batches of one epoch
    c.optimizer.update(lr=2e-5, min_lr=0.0, warmup_steps=0.03, b1=0.9, b2=0.999, eps=1e-8,
                       weight_decay=0.0, clip_norm=1.0)
    c.mesh.data = 1
    c.mesh.fsdp = -1  # FSDP over every device
    if variant == "full":  # f32 weights and Adam moments, 32 devices
        c.model.param_dtype = "float32"
        c.optimizer.grad_accum = GLOBAL_BATCH // 32  # one row per device per micro-batch
    else:  # LoRA over a bf16 base, 8 devices
        c.model.param_dtype = "bfloat16"
        c.model.lora.rank = 16
        c.model.lora.alpha = 32.0
        c.model.lora.targets = "q,k,v,o"  # a mixture-of-experts model: attention only
        c.optimizer.grad_accum = GLOBAL_BATCH // 8  # one row per device per micro-batch
    c.checkpoint.every = 100
    c.eval.every = 100
    return c
