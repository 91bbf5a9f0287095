"""Training throughput and MFU of the real train step for a config, on this machine.

    python benchmarks/train_throughput.py --config=configs/pretrain.py [--config.key=value ...]
        [--steps=10] [--warmup=2]
    python benchmarks/train_throughput.py --config=configs/sft.py --shape=medium \\
        --lora=16 --vs_full --steps=5                  # LoRA r=16 vs full fine-tuning
    python benchmarks/train_throughput.py --config=configs/dpo.py --shape=medium \\
        --config.objective.reference=frozen --lora=16 --vs_full

Builds the mesh, model and jitted ``train_step`` exactly as ``python -m
medjax.train`` does (``medjax.training.state.setup``), feeds it fully packed
random-token batches (so the data pipeline is not measured), and times
``--steps`` steps after ``--warmup`` compiled ones. MFU = model FLOPs (6 x
matmul parameters + causal attention, per token; with LoRA 4 x the base's matmul
parameters, whose weight gradients are not computed, + 6 x the adapters') x tokens/s
over the device peak: the datasheet bf16 peak on known GPUs; on CPU the peak is measured in the
same run as the best of several large jitted matmuls in the model's compute
dtype.

Preference and KTO objectives get rows of [pairs, 2, seq_len] (the first quarter of
each row is prompt, the rest response). With ``objective.reference=frozen`` the
reference is built as a run builds it (``training/reference.py``: a copy of the
starting policy; with LoRA the frozen base itself, shared) and its forward is timed
with each step, as the trainer runs it before the step; other references get
zero log-probs (not timed).

``--shape=medium``: a random model of the medium shape the other benchmarks use
(hidden 512, MLP 1536, 8 layers, 8 query / 4 KV heads of 64, vocabulary 32000),
saved to a temporary directory and loaded as ``model.init_from``.

``--lora=R``: ``model.lora.rank=R`` (``--config.model.lora.*`` sets the rest);
``--vs_full``: the same config with full fine-tuning too, in this process (both set up
and warmed up, then their timed steps interleaved: full, LoRA, full, ...), and a table
of LoRA / full ratios. Memory per device is read from the
compiled step (``compiled.memory_analysis()``: its peak is arguments + temp +
outputs - aliased, the state donated; a LoRA step's arguments include the frozen
base) and, for what stays resident between steps, from the arrays' bytes.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/pretrain.py", "Training config.",
                                lock_config=True)
flags.DEFINE_integer("steps", 10, "Timed steps.")
flags.DEFINE_integer("warmup", 2, "Untimed steps first (compilation).")
flags.DEFINE_integer("matmul_size", 2048, "CPU peak: square matmul size.")
flags.DEFINE_enum("shape", "", ["", "medium"], "A random model of this shape as "
                  "model.init_from (medium: hidden 512, 8 layers, vocabulary 32000).")
flags.DEFINE_integer("lora", -1, "model.lora.rank (-1: the config's; 0: full fine-tuning).")
flags.DEFINE_bool("vs_full", False, "Also time full fine-tuning (model.lora.rank=0) in this "
                  "process and print LoRA / full ratios.")

MEDIUM = dict(vocab_size=32000, hidden_size=512, intermediate_size=1536, num_layers=8,
              num_heads=8, num_kv_heads=4, head_dim=64)


def measured_matmul_peak(dtype: str, n: int) -> float:
    """Best FLOP/s of an n x n x n matmul on the first device (float32 accumulation)."""
    a = jnp.ones((n, n), dtype)
    f = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
    f(a, a).block_until_ready()
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        f(a, a).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best


def build_medium(root: str) -> str:
    """A random model of the medium shape, saved as a medjax checkpoint under ``root``."""
    from medjax.models import get_preset, init_params
    from medjax.models.checkpoint import save_model
    config = get_preset("llama3_tiny").replace(**MEDIUM)
    path = os.path.join(root, "medium")
    save_model(config, init_params(config, jax.random.key(0)), path)
    return path


def random_batch(config, vocab: int) -> dict:
    """Fully packed random tokens: [b, t] rows, or [b, 2, t] for paired objectives."""
    from medjax import objectives
    b, t = config.batch_size, config.seq_len
    unit = objectives.get(config.objective.name)
    rs = np.random.RandomState(0)
    rows = (b, 2, t) if unit.kind in ("preference", "kto") else (b, t)
    batch = {"input_ids": rs.randint(0, vocab, rows).astype(np.int32),
             "segment_ids": np.ones(rows, np.int32),
             "positions": np.broadcast_to(np.arange(t, dtype=np.int32), rows).copy(),
             "loss_mask": np.ones(rows, np.int32)}
    if len(rows) == 3:  # a prompt of a quarter of the row, then the response
        batch["loss_mask"][..., : t // 4] = 0
        if unit.kind == "kto":
            batch["label"] = np.arange(b) % 2 == 0
    return batch


def nbytes(tree) -> int:
    """Bytes this process's first device holds of ``tree``."""
    return sum(x.addressable_shards[0].data.nbytes for x in jax.tree.leaves(tree))


def memory(compiled) -> dict:
    """Bytes per device of a compiled program (and XLA's FLOP count of it)."""
    m = compiled.memory_analysis()
    out = {"argument": m.argument_size_in_bytes, "output": m.output_size_in_bytes,
           "alias": m.alias_size_in_bytes, "temp": m.temp_size_in_bytes}
    out["peak"] = out["argument"] + out["temp"] + out["output"] - out["alias"]
    return out


def flops_per_token(mc, seq_len: int, trainable: int) -> float:
    """Model FLOPs per trained token (``train_flops_per_token``: 6 x matmul params +
    causal attention). With LoRA the base's weight gradients are not computed: 4 x the
    base's matmul params (forward and input gradients) + 6 x the adapters' + attention."""
    from medjax.training.metrics import train_flops_per_token
    full = train_flops_per_token(mc, seq_len)
    if mc.lora is None:
        return full
    matmul = (full - 6 * mc.num_layers * mc.num_heads * mc.head_dim * seq_len) / 6
    return full - 2 * matmul + 6 * trainable


class Run:
    """``config`` set up as ``medjax.train`` sets it up, stepped one step at a time."""

    def __init__(self, config):
        from medjax import objectives
        from medjax.training.reference import build_reference
        from medjax.training.state import setup

        self.config = config
        unit = objectives.get(config.objective.name)
        s = self.setup = setup(config, config.model.vocab_size or 32000)
        self.local = random_batch(config, s.model_config.vocab_size)
        batch = self.batch = {k: jax.device_put(v, s.batch_sharding)
                              for k, v in self.local.items()}
        self.reference, self.ref_shared = None, False
        if unit.needs_reference(config.objective):
            if config.objective.reference == "frozen":
                with jax.set_mesh(s.mesh):  # before the first step donates the policy's
                    start = s.state["params"] if s.frozen is None else s.frozen
                    self.reference = build_reference(
                        config, unit, s.mesh, s.model_config.replace(lora=None), start,
                        share=s.frozen is not None)["train"]
                self.ref_shared = s.frozen is not None and self.reference.params is s.frozen
            batch["ref_logps"] = jax.device_put(np.zeros((config.batch_size, 2), np.float32),
                                                s.batch_sharding)
        ref = self.reference
        self.trainable = sum(x.size for x in jax.tree.leaves(s.state["params"]))
        self.resident = {"state": nbytes(s.state),
                         "frozen": nbytes(s.frozen) if s.frozen else 0,
                         "reference copy": nbytes(ref.params) if ref and not self.ref_shared
                         else 0}
        with jax.set_mesh(s.mesh):
            # the compiled step (the same program setup() jits) for its memory analysis
            if s.frozen is None:
                self.step_memory = memory(s.step_fn.lower(s.state, batch).compile())
            else:
                self.step_memory = memory(
                    s.step_fn.args[0].lower(s.state, batch, s.frozen).compile())
            self.ref_memory = memory(ref.fn.lower(ref.params, batch).compile()) if ref else None
        self.state = s.state
        self.step_times, self.ref_times, self.warmup_s, self.metrics = [], [], 0.0, None

    def step(self, timed: bool) -> None:
        """One step as the trainer runs it: the reference's log-probs, then the step."""
        s, batch = self.setup, self.batch
        with jax.set_mesh(s.mesh):
            t1 = time.perf_counter()
            if self.reference is not None:
                batch["ref_logps"] = self.reference.ref_logps(self.local, batch)
                jax.block_until_ready(batch["ref_logps"])
            t2 = time.perf_counter()
            self.state, self.metrics = s.step_fn(self.state, batch)
            jax.block_until_ready(self.metrics)
            t3 = time.perf_counter()
        if timed:
            self.ref_times.append(t2 - t1)
            self.step_times.append(t3 - t2)
        else:
            self.warmup_s += t3 - t1

    def result(self) -> dict:
        mem, res, ref_mem = self.step_memory, self.resident, self.ref_memory
        out = {"model_config": self.setup.model_config, "mesh": dict(self.setup.mesh.shape),
               "trainable": self.trainable, "num_params": self.setup.model_config.num_params,
               "resident": res, "step_memory": mem, "ref_memory": ref_mem,
               "ref_shared": self.ref_shared, "compile_and_warmup": self.warmup_s,
               "step_times": self.step_times,
               "ref_times": self.ref_times if self.reference else [],
               "loss": float(self.metrics["loss"]), "rows": self.local["input_ids"].shape[:-1],
               "tokens": int(np.prod(self.local["input_ids"].shape))}
        out["step_s"] = statistics.median(self.step_times)
        out["ref_s"] = statistics.median(self.ref_times) if self.reference else 0.0
        # Per device, the step's peak plus what stays resident beside it (a reference
        # copy); the reference forward runs with the train state (and a base it does not
        # share) resident.
        phases = [mem["peak"] + res["reference copy"]]
        if ref_mem:
            phases.append(res["state"] + (0 if self.ref_shared else res["frozen"])
                          + ref_mem["peak"])
        out["peak"] = max(phases)
        return out


MiB = 2 ** 20


def report(config, r: dict, peak: float, source: str) -> None:
    mc = r["model_config"]
    lora = mc.lora
    t = config.seq_len
    step_total = r["step_s"] + r["ref_s"]
    tokens_per_s = r["tokens"] / step_total
    flops = flops_per_token(mc, t, r["trainable"])
    achieved = tokens_per_s * flops / jax.device_count()
    mem, res = r["step_memory"], r["resident"]
    what = (f"LoRA r={lora.rank} on {','.join(lora.targets)}" if lora else "full fine-tuning")
    print(f"\n### {config.objective.name}: {what}")
    name = f"random {FLAGS.shape} shape" if FLAGS.shape else (config.model.init_from
                                                               or config.model.preset)
    print(f"model: {name} "
          f"({r['num_params']:,} params, {r['trainable']:,} trained; param_dtype "
          f"{mc.param_dtype}, dtype {mc.dtype}, remat {mc.remat_policy}), rows "
          f"{'x'.join(map(str, r['rows']))} x {t} tokens, mesh {r['mesh']}")
    print("| metric | value |\n|---|---|")
    print(f"| compile + {FLAGS.warmup} warm-up steps | {r['compile_and_warmup']:.1f} s |")
    print(f"| train step, median of {len(r['step_times'])} | {r['step_s']:.3f} s "
          f"(each: {', '.join(f'{x:.2f}' for x in r['step_times'])}) |")
    if r["ref_times"]:
        print(f"| reference forward, median | {r['ref_s']:.3f} s "
              f"({'the base itself, shared' if r['ref_shared'] else 'a copy'}; each: "
              f"{', '.join(f'{x:.2f}' for x in r['ref_times'])}) |")
        print(f"| step + reference | {step_total:.3f} s |")
    print(f"| tokens/s (all devices) | {tokens_per_s:,.0f} |")
    print(f"| model FLOPs per token ({'4N + 6 x adapters' if lora else '6N'} + attention) | "
          f"{flops / 1e6:,.1f} M |")
    print(f"| MFU | {achieved / peak:.1%} of {peak / 1e9:,.1f} GFLOP/s ({source}) |")
    print(f"| step memory (compiled): arguments / temp / outputs / aliased | "
          f"{mem['argument'] / MiB:,.1f} / {mem['temp'] / MiB:,.1f} / "
          f"{mem['output'] / MiB:,.1f} / {mem['alias'] / MiB:,.1f} MiB |")
    print(f"| step peak (arguments + temp + outputs - aliased) | {mem['peak'] / MiB:,.1f} MiB |")
    if r["ref_memory"]:
        print(f"| reference forward peak (compiled) | {r['ref_memory']['peak'] / MiB:,.1f} MiB |")
    print(f"| resident: train state / frozen base / reference copy | "
          f"{res['state'] / MiB:,.1f} / {res['frozen'] / MiB:,.1f} / "
          f"{res['reference copy'] / MiB:,.1f} MiB |")
    print(f"| peak per device (largest phase) | {r['peak'] / MiB:,.1f} MiB |")
    print(f"| final loss (random tokens) | {r['loss']:.3f} |")
    r["tokens_per_s"], r["step_total"], r["flops"] = tokens_per_s, step_total, flops


def main(argv):
    del argv
    with tempfile.TemporaryDirectory(prefix="medjax_tput_") as tmp:  # --shape's model
        measure(FLAGS.config, tmp)


def measure(config, tmp: str):
    with config.unlocked():
        config.steps = max(config.steps, FLAGS.steps + FLAGS.warmup)
        if FLAGS.shape:
            config.model.init_from = build_medium(tmp)
            config.model.vocab_size = 0
        if FLAGS.lora >= 0:
            config.model.lora.rank = FLAGS.lora
    if FLAGS.vs_full and not config.model.lora.rank:
        raise SystemExit("--vs_full compares a LoRA config with full fine-tuning: give --lora=R")
    configs = [config]
    if FLAGS.vs_full:
        full = config.copy_and_resolve_references()
        with full.unlocked():
            full.model.lora.rank = 0
        configs = [full, config]
    load0 = os.getloadavg()[0]
    runs = [Run(c) for c in configs]
    for run in runs:  # compilation and warm-up, one run after the other
        for _ in range(FLAGS.warmup):
            run.step(timed=False)
    for _ in range(FLAGS.steps):  # timed steps interleaved: load drift hits both alike
        for run in runs:
            run.step(timed=True)
    results = [run.result() for run in runs]

    from medjax.training.metrics import device_peak_flops
    peak = config.logging.peak_flops or device_peak_flops()
    source = "datasheet" if peak else "measured matmul"
    if not peak:
        peak = measured_matmul_peak(results[0]["model_config"].dtype, FLAGS.matmul_size)
    print(f"device: {jax.devices()[0].device_kind} x {jax.device_count()}, jax {jax.__version__}; "
          f"load average (1 min) at the start {load0:.2f}, at the end {os.getloadavg()[0]:.2f}")
    for c, r in zip(configs, results):
        report(c, r, peak, source)
    if FLAGS.vs_full:
        f, lo = results
        print(f"\n### LoRA / full ({config.objective.name}, measured in this run, steps "
              "interleaved)")
        print("| metric | full | LoRA | LoRA / full |\n|---|---:|---:|---:|")
        rows = [("train step, median (s)", f["step_s"], lo["step_s"], "{:.3f}")]
        if f["ref_times"]:
            rows += [("reference forward, median (s)", f["ref_s"], lo["ref_s"], "{:.3f}"),
                     ("step + reference (s)", f["step_total"], lo["step_total"], "{:.3f}")]
        rows += [("tokens/s", f["tokens_per_s"], lo["tokens_per_s"], "{:,.0f}"),
                 ("trained parameters", f["trainable"], lo["trainable"], "{:,}"),
                 ("model FLOPs per token (M)", f["flops"] / 1e6, lo["flops"] / 1e6,
                  "{:,.1f}"),
                 ("step peak, compiled (MiB)", f["step_memory"]["peak"] / MiB,
                  lo["step_memory"]["peak"] / MiB, "{:,.1f}"),
                 ("step temp, compiled (MiB)", f["step_memory"]["temp"] / MiB,
                  lo["step_memory"]["temp"] / MiB, "{:,.1f}"),
                 ("resident between steps (MiB)", sum(f["resident"].values()) / MiB,
                  sum(lo["resident"].values()) / MiB, "{:,.1f}"),
                 ("peak per device, largest phase (MiB)", f["peak"] / MiB, lo["peak"] / MiB,
                  "{:,.1f}")]
        for name, a, b, fmt in rows:
            print(f"| {name} | {fmt.format(a)} | {fmt.format(b)} | {b / a:.2f} |")


if __name__ == "__main__":
    app.run(main)
