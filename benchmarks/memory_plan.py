"""Per-device memory of a training config, from the real train step compiled on fake devices.

    .venv/bin/python benchmarks/memory_plan.py --config=configs/dpo.py:llama3_8b --devices=8
    .venv/bin/python benchmarks/memory_plan.py --config=configs/sft.py:llama3_8b --devices=8 \\
        --config.model.remat_policy=dots_no_batch --config.mesh.tensor=2 \\
        --config.optimizer.grad_accum=32                      # overrides, as medjax.train takes
    .venv/bin/python benchmarks/memory_plan.py --all        # the GPU recipes, one table
    .venv/bin/python benchmarks/memory_plan.py --all --only=lora   # only the LoRA rows
    .venv/bin/python benchmarks/memory_plan.py --config=configs/sft.py:llama3_8b --devices=1 \
        --config.model.lora.rank=16 --config.model.param_dtype=bfloat16 \
        --config.mesh.fsdp=1 --config.optimizer.grad_accum=128   # LoRA on one GPU
    .venv/bin/python benchmarks/memory_plan.py --config=configs/sft.py:llama3_8b --devices=8 \\
        --layers=2,4,8,32                                     # compile time vs number of layers

What it compiles: the jitted train step that ``medjax.train`` runs
(``medjax.training.state.make_step_fn``, the function ``setup()`` builds: the
objective's loss, the optimizer, ``optimizer.grad_accum`` micro-batches, in/out
shardings, state donated), lowered with abstract inputs
(``jax.ShapeDtypeStruct`` with shardings from ``state.abstract_train_state``:
nothing is allocated) for a mesh over ``--devices`` fake CPU devices
(``--xla_force_host_platform_device_count``, set by this script before JAX
starts). For preference objectives with a frozen reference it also compiles
the reference forward (``training/reference.py``: a bf16 copy of the starting
policy, sharded like it, run on each whole global batch).

Mixture of experts (Mixtral): ``model.moe_impl`` as configured (``dense`` runs every
expert on every token, so one layer's working set holds ``experts`` times a dense MLP's
[rows, seq, mlp] arrays; ``grouped``'s sorted assignments span the global batch, and on
this CPU backend ``ragged_dot`` is a dense dot over a group-masked copy of its input);
``mesh.expert_parallel`` applies its sharding rules (``rules_for``) as ``medjax.train``
does, and the report names the mesh axis the experts are split over.

LoRA (``model.lora.rank`` > 0): the train state is the adapters (float32) and their Adam
moments (``abstract_train_state``); the frozen base (``model.param_dtype``, e.g. bf16;
``abstract_frozen_base``) is a third argument of the step, not donated, so it counts in
the arguments and stays resident. The reference of a LoRA preference run is that base
itself, no copy, when it is stored in the compute dtype (``share``); otherwise a copy in
the compute dtype, as for full fine-tuning.

What it prints, per device: XLA's ``compiled.memory_analysis()`` (arguments =
params + optimizer state + batch, outputs, aliased = donated state, temp =
gradients + activations + gathered weights + everything else live inside the
step, generated code) next to a hand calculation from the shapes and
shardings: params, Adam moments, gradients (2 copies under gradient
accumulation: the running sum and one micro-batch's), weights gathered by
FSDP (one layer and the LM head, plus their gradients), activations saved by
the remat policy, and the working set of one layer's backward pass. The peak
is arguments + temp + (outputs - aliased); with a frozen reference, the
reference's bf16 weights are resident for the whole run and its forward
runs between steps, so the total is the larger of the two phases.

Caveat: the numbers come from XLA's CPU backend. The partitioning (SPMD) is
the same as on GPUs, but fusion and buffer assignment are not. Measured here
(benchmarks/RESULTS.md): the CPU backend computes bf16 dots in float32 and
updates the bf16 stacks of saved activations through float32 (a
``dynamic-update-slice`` that is then not in place), so it holds those stacks
twice, and bf16 compute needs as much temp as float32 or more. Bf16 weights that
do not change inside the step (a LoRA run's frozen base, a reference's weights)
are upcast to float32 for those dots once, outside the layer and micro-batch
loops, so the CPU program carries whole float32 copies of them (the lowered
program's dots take the bf16 weights as they are). The "GPU estimate" subtracts
one copy of the bf16 stacks and those float32 weight copies (their sizes are read
from the compiled HLO); it is an estimate, not a GPU measurement. A GPU adds its own
workspace (cuBLAS/cuDNN, NCCL buffers), and JAX preallocates 75% of GPU memory
unless XLA_PYTHON_CLIENT_MEM_FRACTION is raised, so leave headroom. Attention
is compiled as configured (``auto`` as on a GPU: ``xla``); ``attention='xla'`` materialises [heads, seq, seq]
scores, while ``cudnn`` (flash attention, GPU only) cannot be compiled here
and would need less.
"""

from __future__ import annotations

import os
import sys


def _device_count_from_argv(argv: list[str]) -> int | None:
    for i, a in enumerate(argv):
        if a.startswith("--devices="):
            return int(a.split("=", 1)[1])
        if a == "--devices" and i + 1 < len(argv):
            return int(argv[i + 1])
    return None


def set_fake_devices(n: int) -> None:
    """XLA_FLAGS with ``n`` host devices; must run before JAX initialises a backend."""
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
    os.environ["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={n}"])
    os.environ["JAX_PLATFORMS"] = "cpu"


if __name__ == "__main__":  # before `import jax`
    set_fake_devices(_device_count_from_argv(sys.argv) or 8)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import json  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from medjax import models, objectives  # noqa: E402
from medjax.objectives.preference import sequence_logps  # noqa: E402
from medjax.parallel import make_mesh  # noqa: E402
from medjax.models import lora as lora_lib  # noqa: E402
from medjax.parallel.sharding import axis_rules, logical_to_spec, rules_for  # noqa: E402
from medjax.training.state import (abstract_frozen_base, abstract_train_state,  # noqa: E402
                                   batch_sharding_for, make_step_fn, moe_targets)

GiB = 2 ** 30
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name, config, devices, overrides: the recipes the named GPU variants are sized for (the
# four of the memory plan in RESULTS.md, the 70B DPO variant) and the LoRA runs of issue 16
# (base stored in bf16, adapters and their Adam moments in f32).
LORA = ("--config.model.lora.rank=16", "--config.model.lora.targets=all",
        "--config.model.param_dtype=bfloat16")
RECIPES = (
    ("Llama-3-8B DPO, seq 2048, 32 pairs", "configs/dpo.py:llama3_8b", 8, ()),
    ("Llama-3-8B SFT, seq 8192", "configs/sft.py:llama3_8b", 8, ()),
    ("Mistral-7B CPT, 48 x 4096", "configs/pretrain.py:mistral_7b", 4, ()),
    ("Llama-3-70B SFT, seq 4096", "configs/sft.py:llama3_70b", 64, ()),
    ("(extra) Llama-3-70B DPO, seq 2048", "configs/dpo.py:llama3_70b", 64, ()),
    # One GPU: the recipe's 128 rows a step, one row of 8192 per micro-batch, full remat (the
    # recipe's); and rows of 4096, two per micro-batch, which fit even by the CPU total.
    ("Llama-3-8B SFT with LoRA (r=16, all linear), 1 device, seq 8192",
     "configs/sft.py:llama3_8b", 1, LORA + ("--config.mesh.fsdp=1",
                                           "--config.optimizer.grad_accum=128")),
    ("Llama-3-8B SFT with LoRA (r=16, all linear), 1 device, seq 4096",
     "configs/sft.py:llama3_8b", 1, LORA + ("--config.mesh.fsdp=1", "--config.seq_len=4096",
                                           "--config.optimizer.grad_accum=64")),
    # Eight GPUs, fsdp 8: one row (of 2 x 2048) per GPU per micro-batch, full remat
    # (dots_no_batch would keep ~30 GB of activations per 70B row); the reference is the
    # bf16 base itself. The recipe's 32 pairs, and 16, which fit even by the CPU total.
    ("Llama-3-70B DPO with LoRA (r=16, all linear), 8 devices, 32 pairs",
     "configs/dpo.py:llama3_70b", 8, LORA + ("--config.mesh.fsdp=8", "--config.mesh.tensor=1",
                                            "--config.optimizer.grad_accum=8",
                                            "--config.model.remat_policy=full")),
    ("Llama-3-70B DPO with LoRA (r=16, all linear), 8 devices, 16 pairs",
     "configs/dpo.py:llama3_70b", 8, LORA + ("--config.mesh.fsdp=8", "--config.mesh.tensor=1",
                                            "--config.batch_size=16",
                                            "--config.optimizer.grad_accum=4",
                                            "--config.model.remat_policy=full")),
    # Medico-Mistral (issue 17): Mixtral-8x7B, rows of 4096, one row per device per
    # micro-batch, full remat, moe_impl=dense. The recipes (LoRA r=16 on q,k,v,o over a bf16
    # base, 8 devices); full fine-tuning (f32 weights and Adam) on 8, 16 and 32 devices;
    # LoRA with whole experts over fsdp; and the grouped implementation as this backend
    # lowers it.
    ("Mixtral-8x7B knowledge injection with LoRA (r=16, q,k,v,o), 8 devices",
     "configs/recipes/medico_mistral_knowledge.py", 8, ()),
    ("Mixtral-8x7B SFT with LoRA (r=16, q,k,v,o), 8 devices, 896 rows",
     "configs/recipes/medico_mistral_sft.py", 8, ()),
    ("Mixtral-8x7B knowledge injection, full fine-tuning, 8 devices",
     "configs/recipes/medico_mistral_knowledge.py:full", 8,
     ("--config.optimizer.grad_accum=128",)),
    ("Mixtral-8x7B knowledge injection, full fine-tuning, 16 devices",
     "configs/recipes/medico_mistral_knowledge.py:full", 16,
     ("--config.optimizer.grad_accum=64",)),
    ("Mixtral-8x7B knowledge injection, full fine-tuning, 32 devices",
     "configs/recipes/medico_mistral_knowledge.py:full", 32, ()),
    ("(extra) Mixtral-8x7B knowledge injection with LoRA, expert_parallel, 8 devices",
     "configs/recipes/medico_mistral_knowledge.py", 8, ("--config.mesh.expert_parallel=True",)),
    ("(extra) Mixtral-8x7B knowledge injection with LoRA, moe_impl=grouped, 8 devices",
     "configs/recipes/medico_mistral_knowledge.py", 8, ("--config.model.moe_impl=grouped",)),
)


# ------------------------------------------------------------------ inputs
def model_config_of(config, num_layers: int | None = None) -> models.ModelConfig:
    """The architecture ``state.starting_model`` would build, without its weights."""
    m = config.model
    # "auto" would resolve to the CPU's blocked attention here; a GPU runs xla (or cudnn)
    attention = "xla" if m.attention == "auto" else m.attention
    overrides = dict(param_dtype=m.param_dtype, dtype=m.dtype, remat_policy=m.remat_policy,
                     scan_layers=m.scan_layers, attention=attention,
                     moe_impl=m.get("moe_impl", "grouped"))
    hf_json = os.path.join(m.init_from, "config.json") if m.init_from else ""
    if hf_json and os.path.isfile(hf_json):
        cfg = models.ModelConfig.from_hf(hf_json, **overrides)
    else:  # a preset (a medjax checkpoint of another shape is not read here)
        cfg = models.get_preset(m.preset, **overrides)
        if m.vocab_size:
            cfg = cfg.replace(vocab_size=m.vocab_size)
    # LoRA as lora_start sets it (a mixture-of-experts model: attention only)
    cfg = cfg.replace(lora=moe_targets(cfg, lora_lib.from_settings(m.get("lora"))))
    return cfg.replace(num_layers=num_layers) if num_layers else cfg


def batch_shapes(config) -> dict:
    """Global batch as the pipeline (and the reference) hands it to the train step."""
    b, t = config.batch_size, config.seq_len
    unit = objectives.get(config.objective.name)
    rows = (b, 2, t) if paired(config) else (b, t)
    out = {k: jax.ShapeDtypeStruct(rows, jnp.int32)
           for k in ("input_ids", "segment_ids", "positions", "loss_mask")}
    if unit.kind == "kto":
        out["label"] = jax.ShapeDtypeStruct((b,), jnp.bool_)
    if unit.needs_reference(config.objective):
        out["ref_logps"] = jax.ShapeDtypeStruct((b, 2), jnp.float32)
    return out


def paired(config) -> bool:
    """Rows of [pairs or examples, 2, seq_len] (preference and KTO records)."""
    return objectives.get(config.objective.name).kind in ("preference", "kto")


def with_sharding(tree, sharding):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                        tree)


def per_device_bytes(tree) -> int:
    """Bytes one device holds of a tree of sharded ShapeDtypeStructs (from the shapes)."""
    total = 0
    for x in jax.tree.leaves(tree):
        shard = x.sharding.shard_shape(x.shape)
        total += math.prod(shard) * jnp.dtype(x.dtype).itemsize
    return total


def memory_stats(compiled) -> dict:
    m = compiled.memory_analysis()
    return {"argument": m.argument_size_in_bytes, "output": m.output_size_in_bytes,
            "alias": m.alias_size_in_bytes, "temp": m.temp_size_in_bytes,
            "code": m.generated_code_size_in_bytes}


def peak(stats: dict) -> int:
    return (stats["argument"] + stats["temp"] + stats["output"] - stats["alias"]
            + stats["code"])


# ------------------------------------------------------------------ HLO facts
_WHILE = re.compile(r"^\s*%\S+ = \((.*)\) while\(.*op_name=\"([^\"]*)\"", re.M)
_ARRAY = re.compile(r"\b(bf16|f16|f32|f64|s32|pred|s8|u8|u32|s64)\[([0-9,]*)\]")
_DTYPE_BYTES = {"bf16": 2, "f16": 2, "f32": 4, "f64": 8, "s32": 4, "pred": 1, "s8": 1,
                "u8": 1, "u32": 4, "s64": 8}


def saved_activation_stacks(hlo: str, num_layers: int, rows: int, seq_len: int,
                            weights=None) -> dict:
    """Bytes per dtype of the per-layer activations the forward layer scan stacks for
    the backward pass: its loop-carried arrays shaped [layers, rows, seq_len, ...] (or
    [layers, rows * seq_len, ...]); not
    those shaped like a per-device shard of ``weights`` (whole experts over fsdp make an
    expert stack [layers, 1, embed, mlp], which one row of ``seq_len = embed`` matches)."""
    skip = {tuple(x.sharding.shard_shape(x.shape)) for x in jax.tree.leaves(weights or {})}
    best: dict[str, int] = {}
    for tup, op_name in _WHILE.findall(hlo):
        if "transpose(" in op_name:  # a backward loop
            continue
        found: dict[str, int] = {}
        for dt, dims in _ARRAY.findall(tup):
            shape = [int(d) for d in dims.split(",") if d]
            # [layers, rows, seq_len, ...], or [layers, rows * seq_len, ...] (the inputs of
            # decoder.project's 2-D matmuls)
            stacked = (len(shape) >= 3 and shape[:3] == [num_layers, rows, seq_len]) or (
                len(shape) >= 2 and shape[:2] == [num_layers, rows * seq_len])
            if stacked and tuple(shape) not in skip:
                found[dt] = found.get(dt, 0) + math.prod(shape) * _DTYPE_BYTES[dt]
        if sum(found.values()) > sum(best.values()):
            best = found
    return best


def _merged_shapes(shape) -> set[tuple]:
    """``shape`` and every shape made by merging adjacent axes of it, each sorted: the
    forms a weight takes in the program (``decoder.project`` multiplies ``[d, heads,
    head_dim]`` as ``[d, heads * head_dim]``)."""
    shape = tuple(shape)
    out = {tuple(sorted(shape))}
    for i in range(len(shape) - 1):
        merged = shape[:i] + (shape[i] * shape[i + 1],) + shape[i + 2:]
        out |= _merged_shapes(merged)
    return out


def upcast_copies(hlo: str, weights) -> int:
    """Bytes of float32 copies of ``weights``' bf16 arrays (per-device shards, in any
    axis order) that a loop of the compiled program carries: the CPU backend computes
    bf16 dots in float32 and hoists the upcast of loop-invariant weights (a LoRA run's
    frozen base, a reference's weights) out of the layer and micro-batch loops, so it
    holds whole float32 copies of them. At most one copy per weight is counted (a loop
    may carry two, which buffer assignment need not keep apart), in the loop that
    carries the most (outer loops carry what inner ones do). Not a GPU cost: there the
    dots take the bf16 weights as they are."""
    wanted: dict[tuple, int] = {}
    for x in jax.tree.leaves(weights):
        if jnp.dtype(x.dtype) == jnp.bfloat16:
            for key in _merged_shapes(x.sharding.shard_shape(x.shape)):
                wanted[key] = wanted.get(key, 0) + 1
    best = 0
    for tup, _ in _WHILE.findall(hlo):
        found: dict[tuple, int] = {}
        for dt, dims in _ARRAY.findall(tup):
            key = tuple(sorted(int(d) for d in dims.split(",") if d))
            if dt == "f32" and key in wanted:
                found[key] = min(found.get(key, 0) + 1, wanted[key])
        best = max(best, sum(n * math.prod(k) * 4 for k, n in found.items()))
    return best


def dot_dtypes(hlo: str) -> dict:
    """Count of dot instructions in the compiled program by result dtype."""
    out: dict[str, int] = {}
    for dt in re.findall(r"= (\w+)\[[0-9,]*\]\{[0-9,]*\} dot\(", hlo):
        out[dt] = out.get(dt, 0) + 1
    return out


# ------------------------------------------------------------------ hand calculation
def hand_estimate(config, mc: models.ModelConfig, mesh, state, batch, frozen=None) -> dict:
    """What should be live per device, from shapes, shardings and the remat policy. With
    LoRA (``frozen``: the abstract base) the params, moments and gradients are the
    adapters'; the base is an argument too, gathered like a full run's weights but with
    no gradient."""
    pbytes = jnp.dtype(mc.param_dtype).itemsize
    cbytes = jnp.dtype(mc.dtype).itemsize
    tensor = mesh.shape["tensor"]
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    accum = config.optimizer.grad_accum
    d, f, n, k, h = (mc.hidden_size, mc.intermediate_size, mc.num_heads, mc.num_kv_heads,
                     mc.head_dim)
    v, layers, t = mc.vocab_size, mc.num_layers, config.seq_len

    params = per_device_bytes(state["params"])
    opt = per_device_bytes(state["opt_state"])
    base = 0 if frozen is None else per_device_bytes(frozen)
    grads = params * (2 if accum > 1 else 1)  # running sum + one micro-batch's

    weights = state["params"] if frozen is None else frozen
    layer_params = sum(math.prod(x.shape[1:]) for x in jax.tree.leaves(weights["layers"]))
    head_params = d * v  # the LM head (or the tied embedding) is gathered for the loss
    # gathered in the compute dtype, plus their gradient (none for a frozen base)
    gathered = (layer_params + head_params) * (cbytes + (pbytes if frozen is None else 0)) \
        / tensor

    micro_rows = config.batch_size // accum
    if paired(config):
        micro_rows *= 2  # [pairs, 2, L] -> 2 * pairs rows
    rows = math.ceil(micro_rows / shards)
    # Elements kept per token and layer for the backward pass: (replicated over tensor,
    # split over tensor). [b, t, embed] values are whole on every tensor shard; heads and
    # mlp are split.
    kept = {
        "none": (6 * d, 3 * n * h + 4 * k * h + 4 * f),
        "dots": (3 * d, 3 * n * h + 2 * k * h + 2 * f),  # + attention's batched dots
        "dots_no_batch": (3 * d, n * h + 2 * k * h + 2 * f),  # x, o, down; q/k/v, gate/up
        "full": (d, 0),  # the layer input only
    }[mc.remat_policy]
    per_token_layer = kept[0] + kept[1] / tensor
    saved = int(rows * t * layers * per_token_layer * cbytes)
    lora = mc.lora
    if lora is not None and mc.remat_policy != "full":
        # each adapter's two dots, x @ A [.., r] and (x @ A) @ B [.., out], are saved in
        # float32 (the adapters' dtype) by every policy that saves dots
        outs = {"embed": d, "heads": n * h, "kv_heads": k * h, "mlp": f}
        adapter = sum(lora.rank + outs[lora_lib.PROJECTIONS[p][2]] / (
            1 if lora_lib.PROJECTIONS[p][2] == "embed" else tensor) for p in lora.targets)
        saved += int(rows * t * layers * adapter * 4)
    if mc.remat_policy in ("none", "dots"):  # attention scores are kept too
        saved += rows * t * layers * n * t * (4 if mc.remat_policy == "none" else cbytes) \
            // tensor
    attn = 0
    if mc.attention == "xla":  # scores, probabilities and their gradient, f32 [rows, n, t, t]
        attn = 3 * rows * n * t * t * 4 // tensor + rows * t * t  # + the boolean mask
    mlp = 3 * rows * t * f * 4 // tensor  # gate, up, their gradient (f32 on the way back)
    if mc.num_experts:  # dense: every expert on every token; grouped: the sorted
        # assignments (k a token) of the whole global batch, on every device
        mlp *= mc.num_experts if mc.moe_impl == "dense" else shards * mc.experts_per_token
    loss = 0  # a reward head has no vocabulary projection
    if "loss_chunk_size" in config.objective:  # one chunk's f32 logits and their gradient
        loss = 2 * rows * min(config.objective.loss_chunk_size, t) * v * 4 // tensor
    batch_b = per_device_bytes(batch)
    temp = grads + gathered + saved + attn + mlp + loss
    return {"params": params, "opt_state": opt, "batch": batch_b, "frozen": base,
            "grads": grads,
            "gathered": int(gathered), "saved_activations": saved,
            "layer_working_set": attn + mlp + loss, "temp": int(temp),
            "argument": params + opt + batch_b + base, "rows_per_device": rows,
            "micro_rows": micro_rows, "batch_shards": shards}


# ------------------------------------------------------------------ the plan
def reference_forward(config, mc: models.ModelConfig):
    """The frozen reference's forward as ``training/reference.py`` jits it."""
    ref_cfg = mc.replace(remat_policy="none")
    chunk = config.objective.loss_chunk_size
    return jax.jit(lambda p, b: sequence_logps(ref_cfg, p, b, chunk_size=chunk)[0])


def plan(config, *, devices=None, num_layers: int | None = None, reference: bool = True,
         keep_hlo: bool = False) -> dict:
    """Compiles the train step (and the reference forward) for ``config``; returns bytes
    per device, measured and by hand, and compile times. Under the axis rules a run of
    ``config`` uses (``mesh.expert_parallel``)."""
    with axis_rules(rules_for(bool(config.mesh.get("expert_parallel", False)))):
        return _plan(config, devices=devices, num_layers=num_layers, reference=reference,
                     keep_hlo=keep_hlo)


def _plan(config, *, devices, num_layers, reference, keep_hlo) -> dict:
    devices = list(jax.devices() if devices is None else devices)
    mesh = make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor, devices=devices)
    mc = model_config_of(config, num_layers)
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    accum = config.optimizer.grad_accum
    if config.batch_size % shards or config.batch_size % accum:
        raise ValueError(f"batch_size={config.batch_size} is not divisible by the data x fsdp "
                         f"mesh size {shards} and optimizer.grad_accum={accum}")
    out: dict = {"devices": len(devices), "mesh": dict(mesh.shape), "model": {
        "num_params": mc.num_params, "num_layers": mc.num_layers,
        "lora": None if mc.lora is None else {"rank": mc.lora.rank,
                                              "targets": list(mc.lora.targets)},
        "param_dtype": mc.param_dtype, "dtype": mc.dtype, "remat_policy": mc.remat_policy,
        "attention": mc.attention, "scan_layers": mc.scan_layers,
        "moe": None if not mc.num_experts else {
            "experts": mc.num_experts, "per_token": mc.experts_per_token,
            "impl": mc.moe_impl,
            # the mesh axis the experts dimension of [L, experts, embed, mlp] is split over
            "experts_axis": logical_to_spec(("layers", "experts", "embed", "mlp"), None,
                                            mesh.axis_names)[1]}},
        "batch_size": config.batch_size, "seq_len": config.seq_len, "grad_accum": accum,
        "objective": config.objective.name}
    bs = batch_sharding_for(mesh)
    with jax.set_mesh(mesh):
        state, state_sharding = abstract_train_state(config, mc, mesh)
        frozen = frozen_sharding = None
        if mc.lora is not None:  # the frozen base: a step argument, resident, not donated
            frozen, frozen_sharding = abstract_frozen_base(config, mc, mesh)
        batch = with_sharding(batch_shapes(config), bs)
        step_fn = make_step_fn(config, mc, mesh, state_sharding,
                               frozen_sharding=frozen_sharding)
        args = (state, batch) if frozen is None else (state, batch, frozen)
        t0 = time.perf_counter()
        lowered = step_fn.lower(*args)
        t1 = time.perf_counter()
        compiled = lowered.compile()
        t2 = time.perf_counter()
        out["lower_s"], out["compile_s"] = t1 - t0, t2 - t1
        out["step"] = memory_stats(compiled)
        hlo = compiled.as_text()
        if keep_hlo:
            out["hlo"] = hlo
        hand = hand_estimate(config, mc, mesh, state, batch, frozen)
        out["hand"] = hand
        out["dots"] = dot_dtypes(hlo)
        out["saved_stacks"] = saved_activation_stacks(
            hlo, mc.num_layers, hand["rows_per_device"], config.seq_len,
            state["params"] if frozen is None else frozen) if mc.scan_layers else {}
        out["upcast_base"] = upcast_copies(hlo, frozen) if frozen is not None else 0
        del hlo, compiled, lowered

        if reference and objectives.get(config.objective.name).needs_reference(
                config.objective) and config.objective.reference in (
                "frozen", "precompute"):
            # training/reference.py: a copy of the starting policy in the compute dtype;
            # with LoRA the frozen base itself where it is stored in that dtype (share)
            dt = jnp.dtype(mc.dtype)
            start = state["params"] if frozen is None else frozen
            shared = frozen is not None and all(x.dtype == dt for x in jax.tree.leaves(frozen))
            ref_params = start if shared else jax.tree.map(
                lambda x: jax.ShapeDtypeStruct(x.shape, dt, sharding=x.sharding), start)
            ref_batch = {k: v for k, v in batch.items() if k != "ref_logps"}
            t0 = time.perf_counter()
            ref_compiled = reference_forward(config, mc.replace(lora=None)).lower(
                ref_params, ref_batch).compile()
            out["reference"] = {"mode": config.objective.reference, "shared": shared,
                                "weights": per_device_bytes(ref_params),
                                "upcast": upcast_copies(ref_compiled.as_text(), ref_params),
                                "compile_s": time.perf_counter() - t0,
                                **memory_stats(ref_compiled)}
        if "online" in config:
            out["online"] = online_phases(config, mc, mesh)
    out["max_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return summarise(out)


def online_phases(config, mc: models.ModelConfig, mesh) -> dict:
    """The online loop's other phases (medjax/online.py), compiled as they run: sampling
    (``generate._generate``: the policy's weights in the compute dtype, the KV cache of
    ``online.sample_batch`` x ``samples_per_prompt`` rows of prompt bucket + new tokens)
    and scoring (``online._score_fn``: the reward model, same architecture, a batch of
    ``reward_batch`` rows of ``reward_max_length``). Each phase loads its model and
    releases it at the end, so the loop's peak is the largest phase."""
    from medjax.generate import _generate, bucket
    from medjax.online import _score_fn
    from medjax.parallel.sharding import batch_divisor
    o = config.online
    run_cfg = mc.replace(param_dtype=mc.dtype, remat_policy="none")
    div = batch_divisor()
    rows_of = lambda n: -(-n // div) * div  # noqa: E731 (generate pads to the mesh)
    bs = batch_sharding_for(mesh)

    def params(head):
        shard = models.param_shardings(run_cfg, mesh, head)
        return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                            models.abstract_params(run_cfg, head), shard)

    rows = rows_of(o.sample_batch * o.samples_per_prompt)
    prompt = bucket(config.data.max_prompt_length)
    ids = jax.ShapeDtypeStruct((rows, prompt), jnp.int32, sharding=bs)
    lengths = jax.ShapeDtypeStruct((rows,), jnp.int32, sharding=bs)
    key = jax.eval_shape(lambda: jax.random.key(0))
    policy = params("lm")
    t0 = time.perf_counter()
    gen = _generate.lower(run_cfg, policy, ids, lengths, key, max_new_tokens=o.max_new_tokens,
                          temperature=float(o.temperature), top_k=int(o.top_k),
                          top_p=float(o.top_p), stop_ids=(0,), on_token=None).compile()
    sampling = {"rows": rows, "prompt_bucket": prompt, "new_tokens": o.max_new_tokens,
                "weights": per_device_bytes(policy), "compile_s": time.perf_counter() - t0,
                **memory_stats(gen)}
    del gen
    length = o.reward_max_length or config.seq_len
    rm_rows = rows_of(o.reward_batch)
    reward = params("reward")
    t0 = time.perf_counter()
    sc = _score_fn(run_cfg).lower(
        reward, jax.ShapeDtypeStruct((rm_rows, length), jnp.int32, sharding=bs),
        jax.ShapeDtypeStruct((rm_rows,), jnp.int32, sharding=bs)).compile()
    scoring = {"rows": rm_rows, "length": length, "weights": per_device_bytes(reward),
               "compile_s": time.perf_counter() - t0, **memory_stats(sc)}
    return {"sampling": sampling, "scoring": scoring}


def summarise(p: dict) -> dict:
    """Adds the totals: per-phase peaks, the GPU estimate and the fit verdict."""
    step = p["step"]
    train = peak(step)
    ref = p.get("reference")
    # A shared reference (LoRA: the frozen base itself) is already in the step's arguments.
    resident_ref = ref["weights"] if ref and ref["mode"] == "frozen" and not ref.get(
        "shared") else 0
    phases = {"train step": train + resident_ref}
    if ref:
        # The reference forward runs with the train state (and a LoRA run's frozen base)
        # resident; its arguments are the reference's weights (the base, when shared).
        h = p["hand"]
        state = h["params"] + h["opt_state"] + (0 if ref.get("shared") else h["frozen"])
        phases["reference forward"] = state + peak(ref)
    online = p.get("online")
    if online:  # one model resident per phase: sampling, scoring, then the train step
        phases["online sampling"] = peak(online["sampling"])
        phases["online scoring"] = peak(online["scoring"])
    p["phases"] = phases
    p["total"] = max(phases.values())
    dup = p["saved_stacks"].get("bf16", 0) if p["model"]["dtype"] == "bfloat16" else 0
    gpu = dict(phases, **{"train step": train - dup - p.get("upcast_base", 0) + resident_ref})
    if ref:
        gpu["reference forward"] -= ref.get("upcast", 0)
    p["gpu_estimate"] = max(*gpu.values(), 0)
    return p


# ------------------------------------------------------------------ printing
def gib(x) -> str:
    return f"{x / GiB:7.2f}"


def report(p: dict, title: str, budget_gb: float) -> str:
    m, h, s = p["model"], p["hand"], p["step"]
    lora, moe = m.get("lora"), m.get("moe")
    lines = [f"## {title}",
             f"devices {p['devices']}, mesh {p['mesh']}; {m['num_params'] / 1e9:.2f}B params, "
             f"{m['num_layers']} layers, param_dtype {m['param_dtype']}, compute {m['dtype']}, "
             f"remat {m['remat_policy']}, attention {m['attention']}"
             + (f"; LoRA r={lora['rank']} on {','.join(lora['targets'])} (adapters f32, base "
                f"frozen)" if lora else "")
             + (f"; {moe['experts']} experts top-{moe['per_token']}, moe_impl {moe['impl']}, "
                + ("whole experts over " + str(moe['experts_axis']) if moe['experts_axis'] else
                   "each expert split like a dense MLP") if moe else ""),
             f"objective {p['objective']}: global batch {p['batch_size']} x seq {p['seq_len']}, "
             f"grad_accum {p['grad_accum']} -> micro-batch {h['micro_rows']} rows, "
             f"{h['rows_per_device']} per batch shard (data x fsdp)",
             f"compile: lower {p['lower_s']:.1f} s + compile {p['compile_s']:.1f} s; "
             f"this process's max RSS {p['max_rss'] / GiB:.1f} GiB",
             "",
             "per device, GiB                      compiled  by hand",
             (f"  params (trainable: adapters f32)           {gib(h['params'])}" if lora else
              f"  params                                     {gib(h['params'])}"),
             f"  optimizer state (Adam mu, nu)              {gib(h['opt_state'])}",
             f"  batch                                      {gib(h['batch'])}"]
    if lora:
        lines.append(f"  frozen base ({m['param_dtype']}, not donated)".ljust(45)
                     + gib(h["frozen"]))
    lines += [
        ("  arguments (incl. frozen base)" if lora else
         "  arguments (params + opt + batch)").ljust(36)
        + f"{gib(s['argument'])}  {gib(h['argument'])}",
        f"  outputs                           {gib(s['output'])}",
        f"  aliased (donated state)           {gib(s['alias'])}",
        f"  temp                              {gib(s['temp'])}  {gib(h['temp'])}",
        f"    gradients{' (sum + micro-batch)' if p['grad_accum'] > 1 else ''}"
        f"{'' if p['grad_accum'] > 1 else '                   '}"
        f"              {gib(h['grads'])}",
        f"    gathered weights (layer, head{'; no grads' if lora else ''})".ljust(45)
        + gib(h['gathered']),
        f"    saved activations ({m['remat_policy']})".ljust(45) + gib(
            h['saved_activations']),
        f"    one layer's backward + loss chunk          {gib(h['layer_working_set'])}",
        f"  generated code                    {gib(s['code'])}",
        f"  train step peak (args + temp + out - alias) {gib(peak(s))}"]
    stacks = p["saved_stacks"]
    if stacks:
        lines.append("  saved-activation stacks in the compiled HLO: " + ", ".join(
            f"{dt} {v / GiB:.2f} GiB" for dt, v in stacks.items()))
    if p.get("upcast_base"):
        lines.append(f"  f32 copies of the bf16 base carried by the step's loops (CPU backend's "
                     f"bf16 dots, not a GPU cost): {p['upcast_base'] / GiB:.2f} GiB of the temp")
    ref = p.get("reference")
    if ref and ref.get("shared"):
        lines.append(f"  reference ({ref['mode']}): the frozen base itself (shared, no copy: "
                     f"stored in {m['dtype']}), {ref['weights'] / GiB:.2f} GiB, counted in the "
                     "step's arguments")
    elif ref:
        lines.append(f"  reference ({ref['mode']}): weights {m['dtype']} "
                     f"{ref['weights'] / GiB:.2f} GiB"
                     + (" resident all run" if ref["mode"] == "frozen" else
                        " (only during the precompute pass)"))
    if ref:
        lines.append(f"    reference forward: arguments {ref['argument'] / GiB:.2f}, temp "
                     f"{ref['temp'] / GiB:.2f}, outputs {ref['output'] / GiB:.4f} GiB; "
                     f"compile {ref['compile_s']:.1f} s")
        if ref.get("upcast"):
            lines.append(f"    of its temp, f32 copies of the bf16 weights carried by its loop "
                         f"(CPU backend only): {ref['upcast'] / GiB:.2f} GiB")
    online = p.get("online")
    if online:
        g, r = online["sampling"], online["scoring"]
        lines += [f"  online sampling: {g['rows']} rows x (prompt {g['prompt_bucket']} + "
                  f"{g['new_tokens']} new), policy weights {m['dtype']} "
                  f"{g['weights'] / GiB:.2f} GiB; arguments {g['argument'] / GiB:.2f}, temp "
                  f"(KV cache + activations) {g['temp'] / GiB:.2f} GiB; compile "
                  f"{g['compile_s']:.1f} s",
                  f"  online scoring: {r['rows']} rows x {r['length']}, reward model weights "
                  f"{r['weights'] / GiB:.2f} GiB; arguments {r['argument'] / GiB:.2f}, temp "
                  f"{r['temp'] / GiB:.2f} GiB; compile {r['compile_s']:.1f} s",
                  "  (each phase loads its model and releases it: the policy's train state, "
                  "the sampling copy and the reward model are never resident together)"]
    for name, v in p["phases"].items():
        lines.append(f"  phase '{name}': {v / GiB:.2f} GiB")
    budget = budget_gb * 1e9
    verdict = "fits" if p["total"] <= budget else "DOES NOT FIT" + (
        " on the CPU backend (the GPU estimate fits)" if p["gpu_estimate"] <= budget else "")
    lines.append(f"  TOTAL per device {p['total'] / GiB:.2f} GiB (CPU backend) vs "
                 f"{budget_gb:g} GB = {budget / GiB:.1f} GiB: {verdict}; GPU estimate "
                 f"{p['gpu_estimate'] / GiB:.2f} GiB")
    frac = p["total"] / (80 * GiB)
    lines.append(f"  = {frac:.2f} of an 80 GiB GPU" + (
        ": above JAX's default preallocation (0.75); run with "
        f"XLA_PYTHON_CLIENT_MEM_FRACTION={min(math.ceil(frac * 20 + 1) / 20, 0.95):.2f}"
        if frac > 0.75 else " (within JAX's default 0.75 preallocation)"))
    lines.append(f"  dots in the compiled program by result dtype: {p['dots']}")
    if h["micro_rows"] % h["batch_shards"]:
        lines.append(f"  WARNING: a micro-batch of {h['micro_rows']} rows does not split over "
                     f"{h['batch_shards']} batch shards (data x fsdp): the compiler pads or "
                     "replicates; lower optimizer.grad_accum")
    return "\n".join(lines)


def table(rows: list[tuple[str, dict]], budget_gb: float) -> str:
    out = ["| recipe | devices | mesh d/f/t | remat | accum | rows/shard | params | opt state | "
           "frozen base (LoRA) | grads (hand) | temp (hand) | reference weights + fwd temp | "
           "total | GPU est. | vs 80 GB |",
           "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, p in rows:
        h, ms = p["hand"], p["mesh"]
        ref = p.get("reference")
        ref_s = "-" if not ref else (
            f"the base (shared) + {ref['temp'] / GiB:.2f}" if ref.get("shared") else
            f"{ref['weights'] / GiB:.2f} + {ref['temp'] / GiB:.2f}")
        base = f"{h['frozen'] / GiB:.2f}" if p["model"].get("lora") else "-"
        fits = "fits" if p["total"] <= budget_gb * 1e9 else "**over**" + (
            " (GPU est. fits)" if p["gpu_estimate"] <= budget_gb * 1e9 else "")
        out.append(f"| {name} | {p['devices']} | {ms['data']}/{ms['fsdp']}/{ms['tensor']} | "
                   f"{p['model']['remat_policy']} | {p['grad_accum']} | {h['rows_per_device']} | "
                   f"{h['params'] / GiB:.2f} | {h['opt_state'] / GiB:.2f} | {base} | "
                   f"{h['grads'] / GiB:.2f} | "
                   f"{p['step']['temp'] / GiB:.2f} ({h['temp'] / GiB:.2f}) | {ref_s} | "
                   f"{p['total'] / GiB:.2f} | {p['gpu_estimate'] / GiB:.2f} | {fits} |")
    return "\n".join(out)


# ------------------------------------------------------------------ entry point
def _child(args: list[str]) -> dict:
    """Runs this script in a fresh process (its own device count); returns its plan."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "plan.json")
        cmd = [sys.executable, os.path.abspath(__file__), *args, f"--json_out={path}"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
        with open(path) as f:
            return json.load(f)


def main(argv):
    from absl import flags
    FLAGS = flags.FLAGS
    if len(argv) > 1:
        raise SystemExit(f"unexpected arguments: {argv[1:]}")
    passthrough = [a for a in sys.argv[1:] if a.startswith("--config")
                   and not a.startswith("--config=")]
    if FLAGS.all:
        rows = []
        for name, cfg, n, overrides in RECIPES:
            if FLAGS.only and FLAGS.only.lower() not in name.lower():
                continue
            what = f"{' '.join([cfg, *overrides])}, {n} devices"
            print(f"compiling {name} ({what}) ...", flush=True)
            p = _child([f"--config={os.path.join(ROOT, cfg)}", f"--devices={n}", *overrides])
            print(report(p, f"{name}: {what}", FLAGS.budget_gb) + "\n", flush=True)
            rows.append((name, p))
        print(table(rows, FLAGS.budget_gb))
        return
    if FLAGS.config is None:
        raise SystemExit("give --config=configs/FILE.py[:variant] or --all")
    layers = [int(x) for x in FLAGS.layers] if FLAGS.layers else []
    if len(layers) > 1:  # compile time vs depth: one fresh process per depth
        cfg_arg = next(a for a in sys.argv[1:] if a.startswith("--config="))
        print("| layers | lower s | compile s | temp GiB | arguments GiB |")
        print("|---:|---:|---:|---:|---:|")
        for k in layers:
            p = _child([cfg_arg, f"--devices={FLAGS.devices}", f"--layers={k}",
                        "--noreference", *passthrough])
            print(f"| {k} | {p['lower_s']:.2f} | {p['compile_s']:.2f} | "
                  f"{p['step']['temp'] / GiB:.2f} | {p['step']['argument'] / GiB:.2f} |",
                  flush=True)
        return
    if jax.device_count() != FLAGS.devices:
        raise SystemExit(f"JAX sees {jax.device_count()} devices, not --devices="
                         f"{FLAGS.devices} (run this file as a script)")
    try:
        p = plan(FLAGS.config, num_layers=layers[0] if layers else None,
                 reference=FLAGS.reference)
    except ValueError as e:  # a config that setup() would refuse too
        raise SystemExit(f"memory_plan.py: error: {e}")
    if FLAGS.json_out:
        with open(FLAGS.json_out, "w") as f:
            json.dump(p, f)
        return
    cfg_arg = next((a for a in sys.argv[1:] if a.startswith("--config=")), "")
    print(report(p, f"{cfg_arg.split('=', 1)[1]} {' '.join(passthrough)}".strip(),
                 FLAGS.budget_gb))


if __name__ == "__main__":
    from absl import app, flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "Training config (configs/*.py[:variant]).",
                                    lock_config=True)
    flags.DEFINE_integer("devices", 8, "Fake CPU devices (the mesh's size).")
    flags.DEFINE_bool("all", False, "Plan the GPU recipes (RECIPES) and print one table.")
    flags.DEFINE_string("only", "", "With --all: only the recipes whose name contains this "
                        "(case-insensitive), e.g. --only=lora.")
    flags.DEFINE_list("layers", [], "num_layers override; several: compile time vs depth.")
    flags.DEFINE_bool("reference", True, "Also compile the frozen reference's forward.")
    flags.DEFINE_float("budget_gb", 80.0, "Device memory to fit in, GB (1e9 bytes).")
    flags.DEFINE_string("json_out", "", "Write the plan as JSON here (used by --all).")
    app.run(main)
