"""Training throughput, real (non-padding) tokens and MFU of the real train step of any
objective, on this machine.

    python benchmarks/train_throughput.py --config=configs/OBJECTIVE.py [--config.key=value ...]
        [--shape=medium] [--lengths=full|realistic] [--length_scale=1] [--steps=10]
        [--warmup=2] [--batches=4] [--lora=R] [--vs='KEY=VALUE;...' | --vs_full]

One command per objective (each config file's default variant is its CPU default; add
``--config.model.init_from=DIR`` for an HF directory, medjax checkpoint or workdir, or
``--shape=medium``):

    python benchmarks/train_throughput.py --config=configs/pretrain.py
    python benchmarks/train_throughput.py --config=configs/sft.py
    python benchmarks/train_throughput.py --config=configs/dpo.py      # reference: precompute
    python benchmarks/train_throughput.py --config=configs/dpo.py \\
        --config.objective.reference=frozen
    python benchmarks/train_throughput.py --config=configs/kto.py      # reference: frozen
    python benchmarks/train_throughput.py --config=configs/reward.py
    # UltraMedical-like lengths through the real pipeline, padded vs padding-free pairs:
    python benchmarks/train_throughput.py --config=configs/dpo.py --shape=medium \\
        --lengths=realistic --length_scale=4 --config.seq_len=384 --config.batch_size=2 \\
        --config.objective.reference=frozen --vs='data.pack_pairs=true'
    # LoRA r=16 vs full fine-tuning:
    python benchmarks/train_throughput.py --config=configs/sft.py --shape=medium --lora=16 --vs_full

Builds the mesh, model and jitted ``train_step`` exactly as ``python -m medjax.train``
does (``medjax.training.state.setup``) and times ``--steps`` steps after ``--warmup``
untimed ones (compilation). The batches are made before anything is timed:

``--lengths=full`` (default): one batch of random tokens with no padding, fed every step:
  ``[batch_size, seq_len]`` rows (pretrain, SFT); ``[batch_size, 2, seq_len]`` pairs for
  DPO, reward models and KTO (the first quarter of each sequence is prompt; KTO gets
  ``label``, alternating); with ``data.pack_pairs`` ``[batch_size, 2 x seq_len]`` rows of
  one pair each (chosen = segment 1, rejected = segment 2; KTO: the example and its KL
  sequence, ``label`` per slot).
``--lengths=realistic``: ``--batches`` batches drawn once from the REAL data pipeline
  (``pipeline_from_config``: the config's tokenizer, chat template, validation,
  truncation, packing or padding) over synthetic JSONL records (``benchmarks/synthetic.py``)
  whose lengths follow an UltraMedical-like spread: prompts 50-600 tokens, responses
  50-900, uniform, divided by ``--length_scale``. Record format by the objective's kind:
  pretrain text documents (prompt + response long), SFT one user / assistant exchange,
  DPO and reward prompt / chosen / rejected, KTO prompt / completion / label. Timed
  steps cycle through the batches from the first (``--steps`` a multiple of
  ``--batches`` times each equally). ``data.pack_pairs=true`` packs whole pairs (DPO,
  reward; KTO: each example with its KL sequence), so padded and packed can be compared.

References (DPO, KTO): ``objective.reference=frozen`` (or a model directory) is built as a
run builds it (``training/reference.py``: a copy of the starting policy; with LoRA the
frozen base itself, shared) and its forward is timed before each step, as the trainer
runs it; ``precompute`` puts ``ref_logps`` (zeros, the table's shape) in the batch, as a
run's table lookup does: nothing of the reference is timed (the output says so).

``--shape=medium``: a random model of the medium shape the other benchmarks use (hidden
512, MLP 1536, 8 layers, 8 query / 4 KV heads of 64, vocabulary 32000), saved with
Mistral's tokenizer and template to a temporary directory and loaded as
``model.init_from`` (``data.tokenizer`` / ``data.template`` set to ``auto``: the model's).

``--lora=R``: ``model.lora.rank=R`` (``--config.model.lora.*`` sets the rest).

``--vs='KEY=VALUE;KEY=VALUE'``: a second config B, the first (A) with these dotted
overrides (values parsed by the existing field's type: bool, int, float, str), in this
process: both set up (each draws its own batches from the same records) and warmed up,
then their timed steps interleaved (A, B, A, B, ...) so that a change in load hits both,
and a table of B / A ratios. ``--vs_full``: ``--vs=model.lora.rank=0`` with that full
fine-tuning run first (A = full, B = the LoRA config): LoRA / full ratios.

Printed per run (a markdown table):
  set-up + compile         wall time of setup() (model, train state), the reference and
                           compiling the step (for its memory analysis); not the batches
  warm-up steps            wall time of the untimed steps
  train step               median of the timed steps (each listed), the reference excluded
  reference forward        median of the frozen reference's forward (timed references)
  step + reference         what one training step costs: the two medians added
  tokens/s                 positions per step (padding included) / step + reference
  real tokens              the fraction of positions with segment_ids != 0 (pairs: both
                           sequences) over the batches drawn, and the counts: the packing
                           efficiency
  real tokens/s            tokens/s x that fraction
  pairs / step, pairs/s    DPO, reward: the real pairs a step holds (packed rows hold
                           several), and per second; KTO: examples
  model FLOPs per token    6 x matmul parameters + causal attention over the row length
                           (with LoRA 4 x the base's matmul parameters, whose weight
                           gradients are not computed, + 6 x the adapters'; a reward
                           model without the LM head); the reference's forward is not
                           counted
  MFU                      real tokens/s x model FLOPs per token / devices over the peak:
                           the datasheet bf16 peak on known GPUs; elsewhere the best of
                           several jitted ``--matmul_size`` matmuls in the model's compute
                           dtype, measured in this run (with padding: also over all
                           positions, the hardware's share)
  step memory (compiled)   per device, from ``compiled.memory_analysis()``: arguments /
                           temp / outputs / aliased; its peak = arguments + temp + outputs
                           - aliased (the state donated; a LoRA step's arguments include
                           the frozen base)
  resident                 bytes of the train state, frozen base and reference copy
  peak per device          the largest phase: the step's peak + a reference copy beside
                           it, or the reference forward's peak + what stays resident
  final loss               of the last step (random or synthetic tokens: not a quality)
Also printed: the load average at the start and end, and the CPU share other processes
took during the timed steps (``cpu_load.OtherLoad``).
"""

from __future__ import annotations

import ast
import dataclasses
import os
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:  # cpu_load, synthetic: beside this file (also when imported)
    sys.path.insert(0, HERE)

from cpu_load import OtherLoad  # noqa: E402
from synthetic import PROMPT, RESPONSE, write_records  # noqa: E402

MEDIUM = dict(vocab_size=32000, hidden_size=512, intermediate_size=1536, num_layers=8,
              num_heads=8, num_kv_heads=4, head_dim=64)
# The record format (data.format) of each record kind's synthetic records
FORMATS = {"text": "text", "chat": "messages", "preference": "preference", "kto": "kto"}
MiB = 2 ** 20


@dataclasses.dataclass
class Options:
    """The command line's options (the flags of the same names)."""
    steps: int = 10
    warmup: int = 2
    matmul_size: int = 2048
    shape: str = ""
    lora: int = -1
    lengths: str = "full"
    length_scale: float = 1.0
    batches: int = 4
    records: int = 512
    vs: str = ""
    vs_full: bool = False


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
    """A random model of the medium shape, saved as a medjax checkpoint under ``root``
    with Mistral's tokenizer and template (32,000 ids, as the model's vocabulary)."""
    from medjax.models import get_preset, init_params
    from medjax.models.checkpoint import save_model
    config = get_preset("llama3_tiny").replace(**MEDIUM)
    path = os.path.join(root, "medium")
    save_model(config, init_params(config, jax.random.key(0)), path, tokenizer="mistral",
               template="mistral")
    return path


# ------------------------------------------------------------------ overrides (--vs)
def parse_value(raw: str, old, key: str):
    """``raw`` as the type of the field's current value ``old`` (bool, int, float, str;
    anything else: a Python literal, or the string itself)."""
    try:
        if isinstance(old, bool):
            low = raw.strip().lower()
            if low in ("true", "1", "yes"):
                return True
            if low in ("false", "0", "no"):
                return False
            raise ValueError(raw)
        if isinstance(old, int):
            return int(raw)
        if isinstance(old, float):
            return float(raw)
        if isinstance(old, str):
            return raw
    except ValueError:
        raise SystemExit(f"--vs: {key}={raw!r}: expected {type(old).__name__}") from None
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def overrides(spec: str) -> list[tuple[str, str]]:
    """``"a.b=1;c=x"`` -> ``[("a.b", "1"), ("c", "x")]``."""
    out = []
    for item in filter(None, (x.strip() for x in spec.split(";"))):
        key, eq, raw = item.partition("=")
        if not eq or not key.strip():
            raise SystemExit(f"--vs: {item!r} is not KEY=VALUE")
        out.append((key.strip(), raw.strip()))
    return out


def with_overrides(config, spec: str):
    """A copy of ``config`` with the dotted overrides of ``spec`` (``--vs``) applied."""
    c = config.copy_and_resolve_references()
    for key, raw in overrides(spec):
        node = c
        *parents, leaf = key.split(".")
        try:
            for p in parents:
                node = node[p]
            old = node[leaf]
        except (KeyError, AttributeError, TypeError):
            from medjax.configs import closest_key
            hint = closest_key(c, key)
            raise SystemExit(f"--vs: the config has no key {key!r}"
                             + (f" (did you mean {hint}?)" if hint else "")) from None
        node[leaf] = parse_value(raw, old, key)
    return c


# ------------------------------------------------------------------------- batches
def random_batch(config, vocab: int) -> dict:
    """Random tokens with no padding (``--lengths=full``, module docstring)."""
    from medjax import objectives
    b, t = config.batch_size, config.seq_len
    unit = objectives.get(config.objective.name)
    rs = np.random.RandomState(0)
    paired = unit.kind in ("preference", "kto")
    packed = paired and config.data.get("pack_pairs", False)
    if packed:  # one pair a row: chosen (KTO: the example) = segment 1, rejected (KTO: its
        # KL sequence) = segment 2, t tokens each
        rows = (b, 2 * t)
        segment_ids = np.broadcast_to(np.repeat(np.int32([1, 2]), t), rows).copy()
        positions = np.broadcast_to(np.tile(np.arange(t, dtype=np.int32), 2), rows).copy()
    else:
        rows = (b, 2, t) if paired else (b, t)
        segment_ids = np.ones(rows, np.int32)
        positions = np.broadcast_to(np.arange(t, dtype=np.int32), rows).copy()
    batch = {"input_ids": rs.randint(0, vocab, rows).astype(np.int32),
             "segment_ids": segment_ids, "positions": positions,
             "loss_mask": np.ones(rows, np.int32)}
    if paired:  # a prompt of a quarter of each sequence, then the response
        batch["loss_mask"][positions < t // 4] = 0
        if unit.kind == "kto":  # per example; packed: per slot of a row, slot 0 used
            label = np.arange(b) % 2 == 0
            batch["label"] = (np.pad(label[:, None], [(0, 0), (0, t - 1)]) if packed
                              else label)
    return batch


def realistic_config(config, data_path: str, kind: str) -> None:
    """``config`` reads the synthetic records at ``data_path`` (in place)."""
    with config.unlocked():
        config.data.sources = data_path
        config.data.eval_sources = ""
        config.data.eval_split = 0.0
        config.data.format = FORMATS[kind]
        config.data.fields = ""
        config.epochs = 0  # repeat the records: any number of batches can be drawn


def pipeline_batches(config, tokenizer, template, n: int) -> list[dict]:
    """The first ``n`` batches of ``config``'s training pipeline (host numpy arrays)."""
    from medjax.data.pipeline import pipeline_from_config
    it = pipeline_from_config(config, tokenizer, template)
    return [next(it) for _ in range(n)]


def nbytes(tree) -> int:
    """Bytes this process's first device holds of ``tree``."""
    return sum(x.addressable_shards[0].data.nbytes for x in jax.tree.leaves(tree))


def memory(compiled) -> dict:
    """Bytes per device of a compiled program."""
    m = compiled.memory_analysis()
    out = {"argument": m.argument_size_in_bytes, "output": m.output_size_in_bytes,
           "alias": m.alias_size_in_bytes, "temp": m.temp_size_in_bytes}
    out["peak"] = out["argument"] + out["temp"] + out["output"] - out["alias"]
    return out


def is_precompute(reference: str) -> bool:
    return reference == "precompute" or reference.startswith("precompute:")


class Run:
    """``config`` set up as ``medjax.train`` sets it up, stepped one step at a time over
    batches made up front."""

    def __init__(self, config, opts: Options):
        from medjax import objectives
        from medjax.data.pipeline import pair_real
        from medjax.training.batches import device_batch
        from medjax.training.reference import build_reference
        from medjax.training.state import setup

        t_start = time.perf_counter()
        self.config, self.opts = config, opts
        unit = self.unit = objectives.get(config.objective.name)
        if opts.lengths == "realistic":
            s = self.setup = setup(config)  # the config's tokenizer and template
            t0 = time.perf_counter()
            self.local = pipeline_batches(config, s.tokenizer, s.template, opts.batches)
            self.pipeline_s = time.perf_counter() - t0
        else:  # no tokenizer: random ids below the model's vocabulary
            s = self.setup = setup(config, 1)
            self.local = [random_batch(config, s.model_config.vocab_size)]
            self.pipeline_s = 0.0
        self.reference, self.ref_shared, self.ref_kind = None, False, ""
        if unit.needs_reference(config.objective):
            if is_precompute(config.objective.reference):
                self.ref_kind = "precomputed"
            else:  # frozen (a copy of the start) or another model: timed with each step
                with jax.set_mesh(s.mesh):  # before the first step donates the policy's
                    start = s.state["params"] if s.frozen is None else s.frozen
                    self.reference = build_reference(
                        config, unit, s.mesh, s.model_config.replace(lora=None), start,
                        share=s.frozen is not None)["train"]
                self.ref_shared = s.frozen is not None and self.reference.params is s.frozen
                self.ref_kind = "timed"
        with jax.set_mesh(s.mesh):
            self.batches = [device_batch(local, s.batch_sharding) for local in self.local]
        ref = self.reference
        if self.ref_kind == "precomputed":  # what the table lookup hands the step
            for local, batch in zip(self.local, self.batches):
                batch["ref_logps"] = jax.device_put(
                    np.zeros(pair_real(local).shape + (2,), np.float32), s.batch_sharding)
        first = dict(self.batches[0])
        if ref is not None:  # the shape the reference gives, for compiling the step alone
            with jax.set_mesh(s.mesh):
                shape = jax.eval_shape(ref.fn, ref.params, first)
            first["ref_logps"] = jax.device_put(np.zeros(shape.shape, shape.dtype),
                                                s.batch_sharding)
        seg = [np.asarray(x["segment_ids"]) for x in self.local]
        self.positions = sum(x.size for x in seg)
        self.real = sum(int((x != 0).sum()) for x in seg)
        self.row_len = seg[0].shape[-1]
        self.pairs = (sum(int(pair_real(x).sum()) for x in self.local)  # KTO: examples
                      if unit.kind in ("preference", "kto") else None)
        self.trainable = sum(x.size for x in jax.tree.leaves(s.state["params"]))
        self.resident = {"state": nbytes(s.state),
                         "frozen": nbytes(s.frozen) if s.frozen else 0,
                         "reference copy": nbytes(ref.params) if ref and not self.ref_shared
                         else 0}
        with jax.set_mesh(s.mesh):
            # the compiled step (the same program setup() jits) for its memory analysis
            if s.frozen is None:
                self.step_memory = memory(s.step_fn.lower(s.state, first).compile())
            else:
                self.step_memory = memory(
                    s.step_fn.args[0].lower(s.state, first, s.frozen).compile())
            self.ref_memory = (memory(ref.fn.lower(ref.params, self.batches[0]).compile())
                               if ref else None)
        self.setup_s = time.perf_counter() - t_start - self.pipeline_s
        self.state = s.state
        self.count = 0
        self.step_times, self.ref_times, self.warmup_s, self.metrics = [], [], 0.0, None

    def restart(self) -> None:
        """The next step takes the first batch again (the timed steps start there)."""
        self.count = 0

    def step(self, timed: bool) -> None:
        """One step as the trainer runs it: the reference's log-probs, then the step."""
        s = self.setup
        i = self.count % len(self.batches)
        self.count += 1
        batch = self.batches[i]
        with jax.set_mesh(s.mesh):
            t1 = time.perf_counter()
            if self.reference is not None:
                inputs = {k: v for k, v in batch.items() if k != "ref_logps"}
                batch["ref_logps"] = self.reference.ref_logps(self.local[i], inputs)
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
        n = len(self.local)
        out = {"model_config": self.setup.model_config, "mesh": dict(self.setup.mesh.shape),
               "trainable": self.trainable, "num_params": self.setup.model_config.num_params,
               "resident": res, "step_memory": mem, "ref_memory": ref_mem,
               "ref_shared": self.ref_shared, "ref_kind": self.ref_kind,
               "kind": self.unit.kind,
               "setup_s": self.setup_s, "warmup_s": self.warmup_s, "pipeline_s": self.pipeline_s,
               "step_times": self.step_times,
               "ref_times": self.ref_times if self.reference else [],
               "loss": float(self.metrics["loss"]),
               "shape": self.local[0]["input_ids"].shape, "row_len": self.row_len,
               "batches": n, "positions": self.positions, "real": self.real,
               "tokens": self.positions / n, "real_fraction": self.real / self.positions,
               "pairs": None if self.pairs is None else self.pairs / n}
        out["step_s"] = statistics.median(self.step_times)
        out["ref_s"] = statistics.median(self.ref_times) if self.reference else 0.0
        out["step_total"] = out["step_s"] + out["ref_s"]
        out["tokens_per_s"] = out["tokens"] / out["step_total"]
        out["real_tokens_per_s"] = out["tokens_per_s"] * out["real_fraction"]
        out["pairs_per_s"] = None if self.pairs is None else out["pairs"] / out["step_total"]
        from medjax.training.metrics import train_flops_per_token
        out["flops"] = train_flops_per_token(out["model_config"], self.row_len,
                                             head=self.unit.head, trainable=self.trainable)
        # Per device, the step's peak plus what stays resident beside it (a reference
        # copy); the reference forward runs with the train state (and a base it does not
        # share) resident.
        phases = [mem["peak"] + res["reference copy"]]
        if ref_mem:
            phases.append(res["state"] + (0 if self.ref_shared else res["frozen"])
                          + ref_mem["peak"])
        out["peak"] = max(phases)
        return out


# --------------------------------------------------------------------------- output
def describe_run(config, r: dict) -> str:
    mc = r["model_config"]
    lora = mc.lora
    what = f"LoRA r={lora.rank} on {','.join(lora.targets)}" if lora else "full fine-tuning"
    ref = config.objective.get("reference", "")
    extra = f", reference {ref}" if r["ref_kind"] else ""
    packed = ", data.pack_pairs" if config.data.get("pack_pairs", False) else ""
    return f"{config.objective.name}: {what}{extra}{packed}"


def report(config, r: dict, peak: float, source: str, opts: Options, title: str = "") -> None:
    mc = r["model_config"]
    lora = mc.lora
    print(f"\n### {title or describe_run(config, r)}")
    name = (f"random {opts.shape} shape" if opts.shape else
            (config.model.init_from or config.model.preset))
    print(f"model: {name} "
          f"({r['num_params']:,} params, {r['trainable']:,} trained; param_dtype "
          f"{mc.param_dtype}, dtype {mc.dtype}, remat {mc.remat_policy}), batch "
          f"{'x'.join(map(str, r['shape']))} (seq_len {config.seq_len}), mesh {r['mesh']}")
    if opts.lengths == "realistic":
        print(f"data: {r['batches']} batch(es) from the pipeline ({r['pipeline_s']:.1f} s, not "
              f"timed) over synthetic {FORMATS[r['kind']]} records, prompts "
              f"{PROMPT[0]}-{PROMPT[1]} / responses {RESPONSE[0]}-{RESPONSE[1]} tokens / "
              f"{opts.length_scale:g}; timed steps cycle through them")
    else:
        print("data: one batch of random tokens, no padding, every step")
    print("| metric | value |\n|---|---|")
    print(f"| set-up + compile (state, reference, compiled step) | {r['setup_s']:.1f} s |")
    print(f"| {opts.warmup} warm-up step(s) | {r['warmup_s']:.1f} s |")
    print(f"| train step, median of {len(r['step_times'])} | {r['step_s']:.3f} s "
          f"(each: {', '.join(f'{x:.2f}' for x in r['step_times'])}) |")
    if r["ref_times"]:
        print(f"| reference forward, median | {r['ref_s']:.3f} s "
              f"({'the base itself, shared' if r['ref_shared'] else 'a copy'}; each: "
              f"{', '.join(f'{x:.2f}' for x in r['ref_times'])}) |")
        print(f"| step + reference | {r['step_total']:.3f} s |")
    elif r["ref_kind"] == "precomputed":
        print("| reference | precomputed: ref_logps (zeros) in the batch, not timed |")
    print(f"| tokens/s (all positions, all devices) | {r['tokens_per_s']:,.0f} |")
    print(f"| real tokens (segment_ids != 0) | {r['real_fraction']:.2%} ({r['real']:,} of "
          f"{r['positions']:,} positions in {r['batches']} batch(es)) |")
    print(f"| real tokens/s | {r['real_tokens_per_s']:,.0f} |")
    if r["pairs"] is not None:
        what = "examples" if r["kind"] == "kto" else "pairs"
        print(f"| {what} / step, {what}/s | {r['pairs']:.2f}, {r['pairs_per_s']:.3f} |")
    print(f"| model FLOPs per token ({'4N + 6 x adapters' if lora else '6N'} + attention "
          f"over {r['row_len']}) | {r['flops'] / 1e6:,.1f} M |")
    devices = jax.device_count()
    mfu_real = r["real_tokens_per_s"] * r["flops"] / devices / peak
    mfu_all = r["tokens_per_s"] * r["flops"] / devices / peak
    also = f"; over all positions {mfu_all:.1%}" if r["real"] < r["positions"] else ""
    print(f"| MFU (real tokens) | {mfu_real:.1%} of {peak / 1e9:,.1f} GFLOP/s ({source}){also} |")
    mem, res = r["step_memory"], r["resident"]
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
    print(f"| final loss ({'synthetic' if opts.lengths == 'realistic' else 'random'} "
          f"tokens) | {r['loss']:.3f} |")


def ratio_table(a: dict, b: dict, names: tuple[str, str]) -> None:
    na, nb = names
    print(f"| metric | {na} | {nb} | {nb} / {na} |\n|---|---:|---:|---:|")
    rows = [("train step, median (s)", a["step_s"], b["step_s"], "{:.3f}")]
    if a["ref_times"] or b["ref_times"]:
        rows += [("reference forward, median (s)", a["ref_s"], b["ref_s"], "{:.3f}"),
                 ("step + reference (s)", a["step_total"], b["step_total"], "{:.3f}")]
    rows += [("tokens/s", a["tokens_per_s"], b["tokens_per_s"], "{:,.0f}"),
             ("real tokens (fraction)", a["real_fraction"], b["real_fraction"], "{:.3f}"),
             ("real tokens/s", a["real_tokens_per_s"], b["real_tokens_per_s"], "{:,.0f}")]
    if a["pairs"] is not None and b["pairs"] is not None:
        what = "examples/s" if a["kind"] == "kto" else "pairs/s"
        rows += [(what, a["pairs_per_s"], b["pairs_per_s"], "{:.3f}")]
    rows += [("trained parameters", a["trainable"], b["trainable"], "{:,}"),
             ("model FLOPs per token (M)", a["flops"] / 1e6, b["flops"] / 1e6, "{:,.1f}"),
             ("step peak, compiled (MiB)", a["step_memory"]["peak"] / MiB,
              b["step_memory"]["peak"] / MiB, "{:,.1f}"),
             ("step temp, compiled (MiB)", a["step_memory"]["temp"] / MiB,
              b["step_memory"]["temp"] / MiB, "{:,.1f}"),
             ("resident between steps (MiB)", sum(a["resident"].values()) / MiB,
              sum(b["resident"].values()) / MiB, "{:,.1f}"),
             ("peak per device, largest phase (MiB)", a["peak"] / MiB, b["peak"] / MiB,
              "{:,.1f}")]
    for name, x, y, fmt in rows:
        ratio = f"{y / x:.2f}" if x else "-"
        print(f"| {name} | {fmt.format(x)} | {fmt.format(y)} | {ratio} |")


# --------------------------------------------------------------------------- driver
def prepare(config, opts: Options, tmp: str) -> None:
    """Applies the options to ``config`` in place (model, LoRA, synthetic data in ``tmp``)."""
    from medjax import objectives
    kind = objectives.get(config.objective.name).kind
    with config.unlocked():
        config.steps = max(config.steps, opts.steps + opts.warmup)
        if opts.shape:
            config.model.init_from = build_medium(tmp)
            config.model.vocab_size = 0
            config.data.tokenizer = "auto"  # the checkpoint's (Mistral's)
            config.data.template = "auto"
        if opts.lora >= 0:
            config.model.lora.rank = opts.lora
    if opts.lengths == "realistic":
        path = os.path.join(tmp, f"synthetic_{kind}.jsonl")
        write_records(path, opts.records, opts.length_scale, kind)
        realistic_config(config, path, kind)


def measure(config, opts: Options, tmp: str) -> list[dict]:
    """Sets up, warms up and times ``config`` (and ``--vs``'s B), prints the tables and
    returns one result per run (A first)."""
    from medjax import objectives
    if opts.lengths not in ("full", "realistic"):
        raise SystemExit(f"--lengths={opts.lengths!r}: full or realistic")
    if opts.vs and opts.vs_full:
        raise SystemExit("--vs_full is --vs=model.lora.rank=0: give one of them")
    prepare(config, opts, tmp)
    if opts.vs_full and not config.model.lora.rank:
        raise SystemExit("--vs_full compares a LoRA config with full fine-tuning: give --lora=R")
    configs, names = [config], None
    if opts.vs_full:
        configs, names = [with_overrides(config, "model.lora.rank=0"), config], ("full", "LoRA")
    elif opts.vs:
        configs, names = [config, with_overrides(config, opts.vs)], ("A", "B")
    load0 = os.getloadavg()[0]
    runs = [Run(c, opts) for c in configs]
    for run in runs:  # compilation and warm-up, one run after the other
        for _ in range(opts.warmup):
            run.step(timed=False)
        run.restart()
    with OtherLoad() as other:
        for _ in range(opts.steps):  # timed steps interleaved: load drift hits both alike
            for run in runs:
                run.step(timed=True)
    results = [run.result() for run in runs]

    from medjax.training.metrics import device_peak_flops
    peak = config.logging.peak_flops or device_peak_flops()
    source = "datasheet" if peak else "measured matmul"
    if not peak:
        peak = measured_matmul_peak(results[0]["model_config"].dtype, opts.matmul_size)
    print(f"device: {jax.devices()[0].device_kind} x {jax.device_count()}, jax {jax.__version__}; "
          f"load average (1 min) at the start {load0:.2f}, at the end {os.getloadavg()[0]:.2f}; "
          f"CPU used by other processes during the timed steps: {other.describe()}")
    print(f"lengths: {opts.lengths}" + (f" (/ {opts.length_scale:g})"
                                        if opts.lengths == "realistic" else ""))
    for i, (c, r) in enumerate(zip(configs, results)):
        title = ""
        if names:
            title = f"{names[i]}: {describe_run(c, r)}"
            if names == ("A", "B") and i == 1:
                title += f" (A with {opts.vs})"
        report(c, r, peak, source, opts, title)
    if names:
        na, nb = names
        what = opts.vs if names == ("A", "B") else "model.lora.rank=0 for full"
        print(f"\n### {nb} / {na} ({config.objective.name}; {what}; measured in this run, "
              "steps interleaved)")
        ratio_table(results[0], results[1], names)
    return results


def options_from_flags(flags_) -> Options:
    return Options(**{f.name: getattr(flags_, f.name) for f in dataclasses.fields(Options)})


def main(argv):
    del argv
    from absl import flags
    with tempfile.TemporaryDirectory(prefix="medjax_tput_") as tmp:  # --shape's model, data
        measure(flags.FLAGS.config, options_from_flags(flags.FLAGS), tmp)


def define_flags() -> None:
    from absl import flags
    from ml_collections import config_flags
    d = Options()
    config_flags.DEFINE_config_file("config", "configs/pretrain.py", "Training config.",
                                    lock_config=True)
    flags.DEFINE_integer("steps", d.steps, "Timed steps.")
    flags.DEFINE_integer("warmup", d.warmup, "Untimed steps first (compilation).")
    flags.DEFINE_integer("matmul_size", d.matmul_size, "CPU peak: square matmul size.")
    flags.DEFINE_enum("shape", d.shape, ["", "medium"], "A random model of this shape as "
                      "model.init_from (medium: hidden 512, 8 layers, vocabulary 32000, "
                      "Mistral's tokenizer).")
    flags.DEFINE_integer("lora", d.lora, "model.lora.rank (-1: the config's; 0: full "
                         "fine-tuning).")
    flags.DEFINE_enum("lengths", d.lengths, ["full", "realistic"], "full: random tokens, no "
                      "padding; realistic: batches of the real pipeline over synthetic records "
                      "with UltraMedical-like lengths.")
    flags.DEFINE_float("length_scale", d.length_scale, "--lengths=realistic: divide the "
                       "lengths (prompts 50-600, responses 50-900 tokens) by this.")
    flags.DEFINE_integer("batches", d.batches, "--lengths=realistic: batches drawn up front "
                         "and cycled.")
    flags.DEFINE_integer("records", d.records, "--lengths=realistic: synthetic records.")
    flags.DEFINE_string("vs", d.vs, "'KEY=VALUE;KEY=VALUE': also time the config with these "
                        "dotted overrides (B) in this process, steps interleaved, and print "
                        "B / A ratios.")
    flags.DEFINE_bool("vs_full", d.vs_full, "--vs=model.lora.rank=0 with full fine-tuning "
                      "first: LoRA / full ratios (needs --lora=R).")


if __name__ == "__main__":
    from absl import app
    define_flags()
    app.run(main)
