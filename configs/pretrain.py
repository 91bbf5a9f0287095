"""Continued pretraining (next-token loss on packed plain text).

  python -m medjax.train --config=configs/pretrain.py --workdir=/tmp/pretrain
  python -m medjax.train --config=configs/pretrain.py:mistral_7b --workdir=... \
      --config.model.init_from=/path/to/Mistral-7B-v0.1 --config.data.sources='corpus/*.jsonl'

The default variant trains the tiny Llama-3-shaped model on the bundled
medical sample text on a laptop CPU in a couple of minutes.
"""

import os

import ml_collections

SAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "medjax", "data", "samples")


def full_size(c, preset: str, tokenizer: str = "llama3"):
    """Settings every named (GPU) variant shares: a published architecture in bf16
    compute with remat, and data paths the user supplies."""
    c.model.preset = preset
    c.model.vocab_size = 0  # the preset's own
    c.model.dtype = "bfloat16"
    c.model.remat_policy = "dots_no_batch"
    c.data.tokenizer = tokenizer
    c.data.sources = ""
    c.data.eval_sources = ""
    return c


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.steps = 100
    c.epochs = 0  # 0: repeat the data until `steps`
    c.batch_size = 8  # global, in packed sequences
    c.seq_len = 256

    c.model = ml_collections.ConfigDict()
    c.model.preset = "llama3_tiny"
    c.model.init_from = ""  # Hugging Face directory or medjax model checkpoint
    c.model.vocab_size = 128256  # 0: the preset's / checkpoint's own
    c.model.param_dtype = "float32"
    c.model.dtype = "float32"
    c.model.remat_policy = "none"
    c.model.scan_layers = True
    c.model.attention = "xla"

    c.data = ml_collections.ConfigDict()
    # Paths/globs (comma-separated), or a mixture: [{"path": ..., "weight": ..., "format": ...}]
    # (type object, so that --config.data.sources="[{'path': ..., 'weight': 2}, ...]" works too)
    c.data.sources = ml_collections.FieldReference(os.path.join(SAMPLES, "pretrain.jsonl"),
                                                   field_type=object)
    c.data.eval_sources = ml_collections.FieldReference(
        os.path.join(SAMPLES, "pretrain_eval.jsonl"), field_type=object)
    c.data.format = "auto"  # text | messages | sharegpt | alpaca | preference | kto | auto
    c.data.tokenizer = "llama3"  # llama3 | mistral | a Hugging Face tokenizer directory
    # Chat template: auto (the tokenizer directory's own, else the tokenizer family's) |
    # llama3 | mistral | alpaca | hf
    c.data.template = "auto"
    c.data.on_bad_record = "error"  # error: stop before training; skip: skip and count
    c.data.max_bad_fraction = 0.01
    c.data.max_prompt_length = 512  # preference / KTO prompts
    c.data.truncation_mode = "keep_end"  # which end of a long prompt to keep: keep_start|keep_end
    c.data.num_workers = 0  # Grain worker processes for tokenisation (0: in the main process)
    # Logical data shards (0: one per process). The global batch depends on this, not on the
    # number of processes: keep it fixed to resume on a different number of hosts.
    c.data.shards = 0

    c.objective = ml_collections.ConfigDict()
    c.objective.name = "pretrain"
    c.objective.z_loss = 0.0
    c.objective.neftune_alpha = 0.0
    c.objective.loss_chunk_size = 1024

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.lr = 3e-3
    c.optimizer.min_lr = 3e-4
    c.optimizer.warmup_steps = 10.0  # steps; below 1: a fraction of `steps`
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.95
    c.optimizer.eps = 1e-8
    c.optimizer.weight_decay = 0.1
    c.optimizer.decay_embeddings = True
    c.optimizer.clip_norm = 1.0
    c.optimizer.grad_accum = 1

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = 1
    c.mesh.fsdp = -1
    c.mesh.tensor = 1

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every = 50
    c.checkpoint.keep = 2
    c.checkpoint.async_save = True

    c.logging = ml_collections.ConfigDict()
    c.logging.every = 10
    c.logging.tensorboard = True
    c.logging.progress = True
    c.logging.peak_flops = 0.0  # per device; 0: known GPUs from their datasheet, else no MFU

    c.eval = ml_collections.ConfigDict()
    c.eval.every = 25
    c.eval.at_start = True
    c.eval.batches = 0  # 0: the whole eval set

    if arg == "mistral_7b":  # Internist.ai 7b (references section 1), 4 x 80 GB GPUs
        full_size(c, "mistral_7b", tokenizer="mistral")
        c.model.param_dtype = "float32"
        c.seq_len = 4096
        c.batch_size = 48  # 48 x 4096 = 196,608 tokens, Internist's ~192k tokens per step
        c.epochs = 4
        c.steps = 12000  # set from the corpus size: tokens * epochs / 196,608
        c.objective.neftune_alpha = 5.0
        c.optimizer.lr = 6e-6
        c.optimizer.min_lr = 1e-8
        c.optimizer.warmup_steps = 100.0
        c.optimizer.b2 = 0.95
        c.optimizer.eps = 1e-5
        c.optimizer.weight_decay = 0.1
        c.optimizer.grad_accum = 12
        c.checkpoint.every = 500
        c.eval.every = 250
        c.logging.every = 10
    elif arg not in (None, ""):
        raise ValueError(f"configs/pretrain.py: unknown variant {arg!r} (known: mistral_7b)")
    return c
