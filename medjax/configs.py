"""The shared base of every ``configs/*.py`` file, imported as a module.

``base(objective)`` returns the keys every run has (model, data, optimizer, mesh,
checkpoint, logging, eval) plus only that objective's own ``objective.*`` keys, which
its unit adds (``medjax.objectives``): ``--config.objective.loss_type=ipo`` on a KTO run is
then an error, not a silently ignored key. ``parse_arg`` reads the ``:ARG`` of
``--config=configs/dpo.py:ARG`` for every config file; ``full_size`` holds the settings
every named GPU variant shares.
"""

from __future__ import annotations

import os
from typing import Sequence

import ml_collections

SAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "samples")


def base(objective: str) -> ml_collections.ConfigDict:
    from . import objectives
    unit = objectives.get(objective)
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.steps = 100  # 0 with epochs > 0: epochs x the batches one epoch of the data makes
    c.epochs = 0  # 0: repeat the data until `steps`; N: N passes, the steps follow
    c.batch_size = 8  # global: packed sequences, or pairs / examples
    c.seq_len = 256

    c.model = ml_collections.ConfigDict()
    c.model.preset = "llama3_tiny"  # the architecture when not loading one (init_from)
    # A Hugging Face directory, a medjax model checkpoint or a medjax.train workdir
    c.model.init_from = ""
    c.model.vocab_size = 128256  # 0: the preset's / checkpoint's own
    c.model.param_dtype = "float32"  # stored weights: float32 | bfloat16 | float16
    c.model.dtype = "float32"  # compute: float32 | bfloat16 | float16
    c.model.remat_policy = "none"  # activation recomputation: none | full | dots | dots_no_batch
    c.model.scan_layers = True  # layers as one scanned block (fast compiles)
    # auto (blocked on CPU, xla elsewhere) | xla (dense scores) | blocked (masked key blocks
    # skipped) | cudnn (fused, GPU)
    c.model.attention = "auto"
    # Mixture-of-experts layers: grouped (tokens sorted by expert, jax.lax.ragged_dot) |
    # dense (every expert on every token; local to each batch shard): benchmarks/RESULTS.md
    c.model.moe_impl = "grouped"
    # LoRA: low-rank adapters train over the frozen model (rank 0: full fine-tuning)
    c.model.lora = ml_collections.ConfigDict()
    c.model.lora.rank = 0  # r (e.g. 16); 0: no adapters, every weight trains
    c.model.lora.alpha = 16.0  # the update is scaled by alpha / rank (alpha / sqrt(rank): rslora)
    c.model.lora.dropout = 0.0  # on each adapter's input, in training
    c.model.lora.rslora = False  # rank-stabilised scale alpha / sqrt(rank) (PEFT use_rslora)
    # q, k, v, o, gate, up, down (comma-separated), all, or a pattern over parameter paths
    # such as 'attn/(q|v)_proj'
    c.model.lora.targets = "all"
    # The base of a PEFT adapter in model.init_from, when its adapter_config.json does not
    # name a local directory
    c.model.lora.base = ""

    c.data = ml_collections.ConfigDict()
    # Paths/globs (comma-separated), or a mixture: [{"path": ..., "weight": ..., "format": ...}]
    # (type object, so that --config.data.sources="[{'path': ..., 'weight': 2}, ...]" works too)
    c.data.sources = ml_collections.FieldReference("", field_type=object)
    # Held-out data, evaluated every eval.every steps and at the last. 'auto': the held-out
    # file shipped with a bundled sample source; none for data you bring (set it).
    c.data.eval_sources = ml_collections.FieldReference("auto", field_type=object)
    # Instead: this fraction of the training records (the same ones on every run, by a
    # hash of their position) is held out of training and evaluated
    c.data.eval_split = 0.0
    # auto | text | messages | sharegpt | alpaca | prompt_completion | preference | kto
    c.data.format = "auto"
    # Your field names: medjax's name=yours, comma-separated (e.g. "prompt=question,
    # completion=answer"; role=... and content=... name the keys inside messages)
    c.data.fields = ml_collections.FieldReference("", field_type=object)  # or a dict
    # auto: the tokenizer of model.init_from (an HF directory's tokenizer files, or the one a
    # medjax checkpoint / workdir was trained with), else llama3 (mistral for Mistral
    # presets) | llama3 | mistral | a Hugging Face tokenizer directory
    c.data.tokenizer = "auto"
    # Chat template: auto (the one model.init_from was trained with, else the tokenizer
    # directory's own, else the tokenizer family's) | llama3 | mistral | alpaca | hf
    c.data.template = "auto"
    c.data.on_bad_record = "error"  # error: stop before training; skip: skip and count
    c.data.max_bad_fraction = 0.01  # with on_bad_record=skip: the most that may be bad
    c.data.max_prompt_length = 512  # preference / KTO prompts
    c.data.truncation_mode = "keep_end"  # which end of a long prompt to keep: keep_start|keep_end
    # DPO, reward models, KTO: padding-free batches: batch_size rows of 2 x seq_len tokens,
    # each holding as many whole pairs (KTO: example + KL sequence) as fit (a step then has
    # batch_size pairs or more; the loss is their mean)
    c.data.pack_pairs = False
    c.data.num_workers = 0  # Grain worker processes for tokenisation (0: in the main process)
    # Logical data shards (0: gcd(batch_size, 8), or one per process past 8 processes). The
    # global batch depends on this, not on the number of processes.
    c.data.shards = 0

    c.objective = ml_collections.ConfigDict()
    c.objective.name = objective
    unit.add_config(c)

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.lr = 3e-3  # AdamW peak learning rate, after linear warmup
    c.optimizer.min_lr = 3e-4  # cosine decay ends here at `steps`
    c.optimizer.warmup_steps = 10.0  # steps; below 1: a fraction of `steps`
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.95
    c.optimizer.eps = 1e-8
    c.optimizer.weight_decay = 0.1
    c.optimizer.decay_embeddings = True  # weight decay on the embeddings too
    c.optimizer.clip_norm = 1.0  # global gradient norm clipping (0: none)
    c.optimizer.grad_accum = 1  # micro-batches per step (batch_size / grad_accum rows each)
    # A step whose loss or gradient norm is NaN/inf is not applied and stops the run;
    # N > 0 skips up to N such steps instead (counted as `nonfinite_skipped`).
    c.optimizer.skip_nonfinite = 0

    c.mesh = ml_collections.ConfigDict()
    # Device mesh axes; their product is the device count (-1: the rest)
    c.mesh.data = 1  # replicas (batch split, weights copied)
    c.mesh.fsdp = -1  # batch and weights split
    c.mesh.tensor = 1  # heads and MLP split (within a host)
    # Mixture of experts: whole experts over the fsdp axis (tokens travel to their experts)
    # instead of every expert's weights split over it like a dense MLP
    c.mesh.expert_parallel = False

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every = 50  # steps (and always at the last)
    c.checkpoint.keep = 2  # newest checkpoints kept in WORKDIR/checkpoints
    c.checkpoint.async_save = True  # write while training continues
    # An unreadable newest checkpoint on resume: moved aside (STEP.damaged) and the previous
    # readable one used; False: stop with an error instead
    c.checkpoint.fallback = True

    c.logging = ml_collections.ConfigDict()
    c.logging.every = 10  # steps between metrics.jsonl lines (and always the last)
    c.logging.tensorboard = True  # also WORKDIR/tensorboard event files
    c.logging.progress = True  # a progress bar on the console
    c.logging.peak_flops = 0.0  # per device; 0: known GPUs from their datasheet, else no MFU

    c.eval = ml_collections.ConfigDict()
    c.eval.every = 25  # steps between evaluations (and always at the last); 0: none
    c.eval.at_start = True  # also before the first step
    c.eval.batches = 0  # 0: the whole eval set
    # Prompts whose greedy completions are written to WORKDIR/samples.jsonl at each eval:
    # a list of strings, or "a; b; c" (a chat objective's template applies)
    c.eval.samples = ml_collections.FieldReference("", field_type=object)
    c.eval.sample_tokens = 64  # new tokens per sample completion
    # Multiple-choice benchmarks scored as lm-eval does (medjax.evaluate), logged as
    # bench/<task>/acc: tasks "medqa_4options,pubmedqa", a group (mmlu_medical, multimedqa)
    # or task files; "" = none. data_dir "" = the bundled samples.
    c.eval.benchmarks = ml_collections.ConfigDict()
    c.eval.benchmarks.tasks = ""
    c.eval.benchmarks.data_dir = ""
    c.eval.benchmarks.every = 0  # steps between runs (and at the last); 0: with eval.every
    c.eval.benchmarks.limit = 0  # questions per task; 0: all
    c.eval.benchmarks.add_bos = "auto"  # auto (as current lm-eval), true or false
    c.eval.benchmarks.max_length = 0  # model window for scoring; 0: the model's
    return c


def parse_arg(arg: str | None, config_file: str, variants: Sequence[str] = (),
              **spec) -> ml_collections.ConfigDict:
    """The ``ARG`` of ``--config=FILE:ARG`` as a ConfigDict (big_vision's ``parse_arg``).

    ``ARG`` is comma-separated: a bare word is the variant (one of ``variants``), or a
    boolean key of ``spec`` set to True; ``key=value`` sets a key of ``spec``, converted
    to the type of its default. ``variant`` is "" when none is named.
    """
    out = ml_collections.ConfigDict({"variant": "", **spec})
    name = os.path.join("configs", os.path.basename(config_file))
    for token in filter(None, (t.strip() for t in (arg or "").split(","))):
        key, eq, value = token.partition("=")
        if not eq and key in variants and not out.variant:
            out.variant = key
        elif not eq and isinstance(spec.get(key), bool):
            out[key] = True
        elif eq and key in spec:
            default = spec[key]
            try:
                out[key] = (value.lower() in ("1", "true", "yes") if isinstance(default, bool)
                            else type(default)(value))
            except ValueError:
                raise ValueError(f"{name}: {key}={value!r} is not a {type(default).__name__}"
                                 ) from None
        else:
            known = ", ".join(list(variants) + [f"{k}=..." for k in spec]) or "none"
            raise ValueError(f"{name}: unknown variant {token!r} (known: {known})")
    return out


def full_size(c, preset: str, tokenizer: str = "auto"):
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


def tiny_preferences(c, name: str = "preference"):
    """The CPU defaults of the preference objectives: the tiny model on the bundled
    ``{name}.jsonl`` / ``{name}_eval.jsonl`` samples, short rows, 16 examples a step."""
    c.data.sources = os.path.join(SAMPLES, f"{name}.jsonl")  # evaluated on {name}_eval.jsonl
    c.seq_len = 64
    c.batch_size = 16
    c.optimizer.lr = 1e-3
    c.optimizer.min_lr = 1e-4
    c.optimizer.warmup_steps = 10.0
    c.optimizer.weight_decay = 0.1
    c.eval.every = 50
    return c


def ultramedical_preferences(c, variant: str):
    """UltraMedical's preference-learning settings (references section 1) for a named
    GPU variant (``llama3_8b``, ``llama3_70b``, ``mistral_7b``), frozen reference."""
    full_size(c, variant, tokenizer="mistral" if variant == "mistral_7b" else "llama3")
    c.objective.reference = "frozen"
    c.objective.loss_chunk_size = 512
    c.seq_len = 2048  # UltraMedical: max length 2048, max prompt 512
    c.data.max_prompt_length = 512
    c.batch_size = 32
    c.epochs = 1
    c.steps = 0  # from the data: epochs x the batches of one epoch
    c.objective.beta = 0.1
    c.optimizer.lr = 3e-7
    c.optimizer.min_lr = 0.0
    c.optimizer.warmup_steps = 0.1
    c.optimizer.b2 = 0.999
    c.optimizer.grad_accum = 4
    if variant == "llama3_70b":  # 64 GPUs (benchmarks/memory_plan.py, RESULTS.md)
        # 32 pairs do not split over 64 fsdp shards: tensor 2 within each host, fsdp
        # the rest; 2 micro-batches of 16 pairs = one row per fsdp shard each.
        c.mesh.tensor = 2
        c.optimizer.grad_accum = 2
    c.checkpoint.every = 500
    c.eval.every = 500
    return c


# Names users bring from TRL / transformers' TrainingArguments / axolotl -> medjax keys.
ALIASES = {
    "learning_rate": "optimizer.lr", "per_device_train_batch_size": "batch_size",
    "micro_batch_size": "batch_size", "train_batch_size": "batch_size",
    "num_train_epochs": "epochs", "num_epochs": "epochs", "max_steps": "steps",
    "max_length": "seq_len", "max_seq_length": "seq_len", "sequence_len": "seq_len",
    "gradient_accumulation_steps": "optimizer.grad_accum", "warmup_ratio":
    "optimizer.warmup_steps", "max_grad_norm": "optimizer.clip_norm", "adam_beta1":
    "optimizer.b1", "adam_beta2": "optimizer.b2", "adam_epsilon": "optimizer.eps",
    "model_name_or_path": "model.init_from", "base_model": "model.init_from",
    "dataset": "data.sources", "datasets": "data.sources", "output_dir": "(--workdir)",
    "save_steps": "checkpoint.every", "eval_steps": "eval.every", "logging_steps":
    "logging.every", "rpo_alpha": "objective.sft_weight", "desirable_weight":
    "objective.desirable_weight", "gradient_checkpointing": "model.remat_policy",
}


def _keys(c, prefix: str = "") -> list[str]:
    out = []
    for k, v in c.items():
        out += _keys(v, f"{prefix}{k}.") if isinstance(v, ml_collections.ConfigDict) \
            else [f"{prefix}{k}"]
    return out


def key_comments(objective: str, online: bool = False) -> dict[str, str]:
    """Each key's comment where ``base`` and the objective's unit (and, for an online
    config, ``online.add_online_config``) define it: the trailing ``# ...`` of its line,
    else the comment lines right above it."""
    import inspect
    import re
    from . import objectives
    out: dict[str, str] = {}
    assign = re.compile(r"^\s*(c|o)\.([\w.]+)\s*=[^=](.*)$")
    fns = [(base, "objective."), (objectives.get(objective).add_config, "objective.")]
    if online:
        from .online import add_online_config
        fns.append((add_online_config, "online."))
    for fn, o_prefix in fns:
        above: list[str] = []
        for line in inspect.getsource(fn).splitlines():
            stripped = line.strip()
            if stripped.startswith("#"):
                above.append(stripped.lstrip("#").strip())
                continue
            m = assign.match(line)
            if m:
                key = (o_prefix if m.group(1) == "o" else "") + m.group(2)
                text = m.group(3).partition("  # ")[2].strip() or " ".join(above)
                if text:
                    out[key] = text
            above = []
    return out


def describe_keys(config) -> str:
    """``  --config.KEY=DEFAULT  # what it is`` for every key of ``config``."""
    import textwrap
    comments = key_comments(config.objective.name, online="online" in config)
    lines = []
    for key in _keys(config):
        node = config
        for part in key.split("."):
            node = node[part]
        line = f"  --config.{key}={node!r}"
        if key in comments:
            lines += textwrap.wrap(comments[key], 100, initial_indent=f"{line:<46}  # ",
                                   subsequent_indent=" " * 48 + "# ")
        else:
            lines.append(line)
    return "\n".join(lines)


def closest_key(config, key: str) -> str | None:
    """The known key a user most likely meant by ``key`` (a dotted path), or None."""
    import difflib
    known = _keys(config)
    leaf = key.rsplit(".", 1)[-1]
    if leaf in ALIASES:
        return ALIASES[leaf]
    same_leaf = [k for k in known if k.rsplit(".", 1)[-1] == leaf]  # right name, wrong group
    if same_leaf:
        return same_leaf[0]
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6) or difflib.get_close_matches(
        leaf, [k.rsplit(".", 1)[-1] for k in known], n=1, cutoff=0.6)
    if close and close[0] not in known:
        close = [k for k in known if k.rsplit(".", 1)[-1] == close[0]]
    return close[0] if close else None


def check(config) -> None:
    """Values with a fixed set of choices, checked before anything is built or read (one
    line naming the key and the choices)."""
    from .data.formats import PARSERS
    from .data.templates import KNOWN as TEMPLATES
    d = config.data
    choices = {"data.format": (d.format, ("auto",) + tuple(PARSERS)),
               "data.template": (d.template, ("auto",) + tuple(TEMPLATES)),
               "data.on_bad_record": (d.on_bad_record, ("error", "skip")),
               "data.truncation_mode": (d.truncation_mode, ("keep_start", "keep_end")),
               "eval.benchmarks.add_bos": (config.eval.benchmarks.add_bos,
                                           ("auto", "true", "false"))}
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ValueError(f"{key}={value!r}: expected one of {', '.join(allowed)}")
    from .data.formats import field_map
    field_map(d.fields)
    from .models.presets import get_preset
    get_preset(config.model.preset)  # an unknown preset: one line naming the known ones
    if config.model.get("lora") is not None:  # rank, alpha, dropout, targets: one line
        from .models.lora import from_settings
        from_settings(config.model.lora)
    if not 0.0 <= d.eval_split < 1.0:
        raise ValueError(f"data.eval_split={d.eval_split}: a fraction in [0, 1)")
    if d.eval_split and d.eval_sources not in ("auto", ""):
        raise ValueError(f"data.eval_split={d.eval_split} and data.eval_sources="
                         f"{d.eval_sources!r}: set one of them (eval_split holds out part of "
                         "data.sources)")
    for key in ("batch_size", "seq_len"):  # steps=0: evaluate only (eval.at_start)
        if config[key] < 1:
            raise ValueError(f"{key}={config[key]}: must be at least 1")
    if d.get("pack_pairs") and config.objective.name not in ("dpo", "reward", "kto"):
        raise ValueError(f"data.pack_pairs=True: padding-free pairs are built for 'dpo', "
                         f"'reward' and 'kto'; objective {config.objective.name!r} reads "
                         "rows that are already packed or padded (set it False)")
    if d.max_prompt_length < 1:
        raise ValueError(f"data.max_prompt_length={d.max_prompt_length}: must be at least 1")
