"""Mixture-of-experts speed on this machine: the MoE layer alone and a Mixtral train step,
grouped (``jax.lax.ragged_dot``) vs dense (one-hot), and how XLA lowers ``ragged_dot`` here.

    .venv/bin/python benchmarks/moe.py                        # all three parts, defaults
    .venv/bin/python benchmarks/moe.py --part=lowering,layer --tokens=4096 --repeats=5
    .venv/bin/python benchmarks/moe.py --part=step --shapes=tiny,medium --steps=3
    .venv/bin/python benchmarks/moe.py --part=collectives     # FSDP vs expert_parallel

1. ``lowering``: one ``ragged_dot`` (the layer's gate projection: ``[tokens * k, hidden] x
   [experts, hidden, ffn]``, balanced groups) and the whole MoE layer (forward, and forward
   + backward), compiled, with XLA's FLOP count (``compiled.cost_analysis()``) against the
   useful FLOPs of a dropless grouped matmul (each token through its k experts only) and
   against the dense implementation's (every expert on every token). Also whether the
   lowered program still holds a ragged dot (``chlo.ragged_dot``) or JAX expanded it before
   XLA saw it, and the compiled dots' shapes.
2. ``layer``: ``medjax.models.decoder.MoE`` (router, top-k, experts, load-balancing sums) at
   ``--hidden``/``--ffn``/``--experts``/``--top_k``/``--tokens`` in ``--dtype``: forward
   and forward + backward (gradients of the parameters and the input), median of
   ``--repeats`` interleaved timed calls after compilation, grouped and dense in the same
   run, and their ratio.
3. ``step``: the real train step (``medjax.training.state.setup`` + ``step_fn``, objective
   ``pretrain``, AdamW, the load-balancing loss at the preset's coefficient) on fully
   packed random tokens, for ``mixtral_tiny`` (hidden 64, 2 layers, 4 experts top-2) and a
   ``medium`` Mixtral (the other benchmarks' medium shape: hidden 512, 8 layers, 8 query /
   4 KV heads of 64, vocabulary 32000, with 8 experts of ffn 1536, top-2), grouped vs dense,
   timed steps interleaved (grouped, dense, dense, grouped, ...). Tokens/s, and the
   active-parameter model FLOPs per token (6 x matmul parameters with k of the E experts,
   + causal attention; ``train_flops_per_token`` counts all experts). (XLA's FLOP count of
   the step is not shown: ``cost_analysis`` counts a while loop's body once, so a scanned
   model's layers are counted as one.)

4. ``collectives``: what a mesh moves for one MoE layer (forward + backward, gradients of
   its weights and input) on ``--devices`` fake CPU devices (mesh fsdp = devices, one row
   per device), with experts split like a dense MLP (``mesh.expert_parallel=False``: each
   expert's embed dimension over fsdp) or whole experts over fsdp (``True``): the
   collectives in the compiled program (count and bytes of their results, per device),
   next to the two textbook costs: FSDP all-gathers the layer's expert weights
   (``3 E d f`` values) once per pass and reduce-scatters their gradient; an all-to-all
   expert-parallel layer sends each token's ``k`` copies of its hidden state to their
   experts and back (``2 k n d`` values per pass, ``n`` tokens per device). At the layer
   part's shape and at Mixtral-8x7B's (hidden 4096, ffn 14336, 8 experts top-2, a row of
   4096 tokens per device). Compiled in float32 (the CPU backend runs bf16 dots in f32 and
   would gather f32 copies); a bf16 run moves half the bytes.

``--dtype`` applies to the layer part (f32 by default); the train steps run in f32 (the
CPU computes bf16 dots in f32 anyway). Every part prints the share of the CPU other
processes used while it ran (from /proc/stat), since two shared cores make timings noisy.
"""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "--part=_collectives" in __import__("sys").argv:  # the child process: fake devices
    _n = next((a.split("=", 1)[1] for a in __import__("sys").argv
               if a.startswith("--devices=")), "8")
    os.environ["XLA_FLAGS"] = " ".join(
        [f for f in os.environ.get("XLA_FLAGS", "").split()
         if not f.startswith("--xla_force_host_platform_device_count")]
        + [f"--xla_force_host_platform_device_count={_n}"])
    os.environ["JAX_PLATFORMS"] = "cpu"

import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from cpu_load import OtherLoad  # noqa: E402  (benchmarks/, the script directory)

FLAGS = flags.FLAGS
flags.DEFINE_list("part", ["lowering", "layer", "step", "collectives"],
                  "Parts to run: lowering, layer, step, collectives.")
flags.DEFINE_integer("hidden", 512, "Layer part: hidden size.")
flags.DEFINE_integer("ffn", 1408, "Layer part: each expert's intermediate size.")
flags.DEFINE_integer("experts", 8, "Layer part: number of experts.")
flags.DEFINE_integer("top_k", 2, "Layer part: experts per token.")
flags.DEFINE_integer("tokens", 4096, "Layer part: tokens (as a batch of 4 rows).")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Layer part: params and compute.")
flags.DEFINE_integer("repeats", 5, "Layer part: timed calls per implementation.")
flags.DEFINE_list("shapes", ["tiny", "medium"], "Step part: tiny and/or medium.")
flags.DEFINE_integer("steps", 3, "Step part: timed steps per implementation.")
flags.DEFINE_integer("warmup", 1, "Step part: untimed steps first (compilation).")
flags.DEFINE_integer("batch", 0, "Step part: rows per step (0: 8 for tiny, 4 for medium).")
flags.DEFINE_integer("seq", 256, "Step part: tokens per row.")
flags.DEFINE_integer("devices", 8, "Collectives part: fake CPU devices (= experts).")

IMPLS = ("grouped", "dense")
# The medium shape of benchmarks/train_throughput.py and online.py, with 8 experts.
MEDIUM = dict(vocab_size=32000, hidden_size=512, intermediate_size=1536, num_layers=8,
              num_heads=8, num_kv_heads=4, head_dim=64, num_experts=8, experts_per_token=2)


def flops_of(compiled) -> float:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float((cost or {}).get("flops", float("nan")))


def layer_config(impl: str):
    from medjax.models import get_preset
    return get_preset("mixtral_tiny").replace(
        hidden_size=FLAGS.hidden, intermediate_size=FLAGS.ffn, num_experts=FLAGS.experts,
        experts_per_token=FLAGS.top_k, param_dtype=FLAGS.dtype, dtype=FLAGS.dtype,
        moe_impl=impl)


def layer_inputs():
    """Random layer parameters (unboxed) and input [4, tokens / 4, hidden]."""
    import flax.linen as nn
    from medjax.models.decoder import MoE
    c = layer_config("grouped")
    x = jax.random.normal(jax.random.key(1), (4, FLAGS.tokens // 4, c.hidden_size),
                          jnp.dtype(FLAGS.dtype))
    params = nn.meta.unbox(MoE(c).init(jax.random.key(0), x[:, :1])["params"])
    return params, x


def layer_fns(impl: str):
    """(jitted forward, jitted forward + backward) of the MoE layer with ``impl``."""
    from medjax.models.decoder import MoE
    mod = MoE(layer_config(impl))

    def fwd(params, x):
        return mod.apply({"params": params}, x)[0]

    def loss(params, x, dy):
        return jnp.sum(fwd(params, x).astype(jnp.float32) * dy)

    return jax.jit(fwd), jax.jit(jax.grad(loss, argnums=(0, 1)))


def ideal_layer_flops(tokens: int) -> dict:
    """Matmul FLOPs of the expert MLPs (3 projections) per pass: each token through its k
    experts (a grouped GEMM), and through all E (the dense implementation); the router's
    ``2 * tokens * hidden * E`` is added to both. Backward = 2 x forward."""
    d, f, e, k = FLAGS.hidden, FLAGS.ffn, FLAGS.experts, FLAGS.top_k
    router = 2 * tokens * d * e
    return {"grouped GEMM": 6 * tokens * d * f * k + router,
            "dense (all experts)": 6 * tokens * d * f * e + router}


# ------------------------------------------------------------------ 1. lowering
def compiled_dots(hlo: str) -> list[str]:
    """``operand shapes -> result`` of each dot in a compiled HLO module (a dot inside a
    fusion reads the fused computation's parameters)."""
    out = []
    for block in re.split(r"\n(?=%|ENTRY )", hlo):
        shapes = dict(re.findall(r"%?([\w.-]+) = (\w+\[[0-9,]*\])", block))
        for res, a, b in re.findall(r"= (\w+\[[0-9,]*\])\{[0-9,]*\} dot\(%?([\w.-]+), "
                                    r"%?([\w.-]+)\)", block):
            out.append(f"{shapes.get(a, a)} x {shapes.get(b, b)} -> {res}")
    return out


def part_lowering():
    d, f, e, k, n = FLAGS.hidden, FLAGS.ffn, FLAGS.experts, FLAGS.top_k, FLAGS.tokens
    dt = jnp.dtype(FLAGS.dtype)
    rows = n * k
    lhs = jax.ShapeDtypeStruct((rows, d), dt)
    rhs = jax.ShapeDtypeStruct((e, d, f), dt)
    sizes = jax.ShapeDtypeStruct((e,), jnp.int32)
    rd = jax.jit(lambda a, b, s: jax.lax.ragged_dot(a, b, s))
    lowered = rd.lower(lhs, rhs, sizes)
    text = lowered.as_text()
    compiled = lowered.compile()
    hlo = compiled.as_text()
    dots = compiled_dots(hlo)
    useful = 2 * rows * d * f
    got = flops_of(compiled)
    mem = compiled.memory_analysis()
    print(f"## ragged_dot lowering on {jax.devices()[0].platform} (jax {jax.__version__})\n")
    print(f"one ragged_dot: lhs [{rows}, {d}] (tokens {n} x k {k}) x rhs [{e}, {d}, {f}], "
          f"{FLAGS.dtype}, {e} balanced groups")
    print(f"- lowered StableHLO holds chlo.ragged_dot: {'ragged_dot' in text}; "
          f"dot_general ops in it: {text.count('stablehlo.dot_general')}")
    print(f"- compiled dots (operands -> result): {'; '.join(dots) or 'none'}")
    print(f"- XLA flops {got / 1e9:,.2f} G vs the grouped GEMM's {useful / 1e9:,.2f} G "
          f"= {got / useful:.2f} x (experts = {e})")
    print(f"- compiled temp {mem.temp_size_in_bytes / 2**20:,.1f} MiB vs lhs "
          f"{rows * d * dt.itemsize / 2**20:,.1f} MiB "
          f"({mem.temp_size_in_bytes / (rows * d * dt.itemsize):.1f} x)")
    params, x = jax.eval_shape(layer_inputs)
    ideal = ideal_layer_flops(n)
    print(f"\nMoE layer, {n} tokens, hidden {d}, ffn {f}, {e} experts top-{k}, {FLAGS.dtype}: "
          "XLA flops of the compiled program vs the matmul FLOPs of a grouped GEMM / of all "
          "experts")
    print("\n| program | XLA GFLOP | / grouped GEMM | / dense (all experts) | temp MiB |")
    print("|---|---:|---:|---:|---:|")
    dy = jax.ShapeDtypeStruct(x.shape, jnp.float32)
    for impl in IMPLS:
        fwd, fb = layer_fns(impl)
        for name, fn, args, mult in (("forward", fwd, (params, x), 1),
                                     ("forward + backward", fb, (params, x, dy), 3)):
            c = fn.lower(*args).compile()
            fl = flops_of(c)
            print(f"| {impl} {name} | {fl / 1e9:,.1f} | "
                  f"{fl / (mult * ideal['grouped GEMM']):.2f} | "
                  f"{fl / (mult * ideal['dense (all experts)']):.2f} | "
                  f"{c.memory_analysis().temp_size_in_bytes / 2**20:,.0f} |")
    print()


# ------------------------------------------------------------------ 2. layer timing
def timed(fn, *args) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0


def part_layer():
    params, x = layer_inputs()
    dy = jax.random.normal(jax.random.key(2), x.shape, jnp.float32)
    fns, compile_s = {}, {}
    for impl in IMPLS:
        fwd, fb = layer_fns(impl)
        for name, fn, args in (("forward", fwd, (params, x)),
                               ("forward + backward", fb, (params, x, dy))):
            compile_s[(impl, name)] = timed(fn, *args)  # compile + first call
            fns[(impl, name)] = (fn, args)
    # the two implementations agree (the tests check this exactly; here a sanity check)
    yg = np.asarray(fns[("grouped", "forward")][0](params, x), np.float32)
    yd = np.asarray(fns[("dense", "forward")][0](params, x), np.float32)
    err = float(np.max(np.abs(yg - yd)) / max(np.max(np.abs(yd)), 1e-30))
    times: dict = {key: [] for key in fns}
    with OtherLoad() as load:
        for r in range(FLAGS.repeats):
            for name in ("forward", "forward + backward"):
                order = IMPLS if r % 2 == 0 else IMPLS[::-1]
                for impl in order:
                    fn, args = fns[(impl, name)]
                    times[(impl, name)].append(timed(fn, *args))
    n = FLAGS.tokens
    ideal = ideal_layer_flops(n)
    print(f"## MoE layer (medjax.models.decoder.MoE): {n} tokens (4 x {n // 4}), hidden "
          f"{FLAGS.hidden}, ffn {FLAGS.ffn}, {FLAGS.experts} experts top-{FLAGS.top_k}, "
          f"{FLAGS.dtype}, {jax.devices()[0].platform}\n")
    print(f"median of {FLAGS.repeats} interleaved calls after compilation; CPU used by other "
          f"processes meanwhile: {load}; max |grouped - dense| / max |dense| = {err:.1e}\n")
    print("| implementation | pass | compile + 1st s | median s | min s | tokens/s | "
          "GFLOP/s (grouped-GEMM FLOPs) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    med = {}
    for name, mult in (("forward", 1), ("forward + backward", 3)):
        for impl in IMPLS:
            ts = times[(impl, name)]
            m = med[(impl, name)] = statistics.median(ts)
            print(f"| {impl} | {name} | {compile_s[(impl, name)]:.2f} | {m:.3f} | "
                  f"{min(ts):.3f} | {n / m:,.0f} | "
                  f"{mult * ideal['grouped GEMM'] / m / 1e9:,.1f} |")
    for name in ("forward", "forward + backward"):
        print(f"\n**{name}: grouped / dense time = "
              f"{med[('grouped', name)] / med[('dense', name)]:.2f}** (> 1: dense is faster)")
    print()


# ------------------------------------------------------------------ 3. train step
def active_flops_per_token(mc, seq: int) -> float:
    """6 x the matmul parameters a token uses (k of the E experts, the router, attention,
    the LM head; no embedding gather) + causal attention, as train_flops_per_token."""
    d, f, v, L = mc.hidden_size, mc.intermediate_size, mc.vocab_size, mc.num_layers
    n, k, h = mc.num_heads, mc.num_kv_heads, mc.head_dim
    per_layer = d * h * (2 * n + 2 * k) + 3 * d * f * mc.experts_per_token + d * mc.num_experts
    return 6 * (L * per_layer + d * v) + 6 * L * n * h * seq


def step_config(shape: str, impl: str):
    import importlib.util
    from medjax.models import presets
    spec = importlib.util.spec_from_file_location(
        "pretrain_cfg", os.path.join(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__))), "configs", "pretrain.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config()
    c.model.preset = "mixtral_tiny"
    if shape == "medium":  # in this process only: the medium shape as a preset
        presets.PRESETS["mixtral_medium_bench"] = dict(presets.PRESETS["mixtral_tiny"], **MEDIUM)
        c.model.preset = "mixtral_medium_bench"
    c.model.moe_impl = impl
    c.model.vocab_size = 0
    c.batch_size = FLAGS.batch or (8 if shape == "tiny" else 4)
    c.seq_len = FLAGS.seq
    c.steps = FLAGS.steps + FLAGS.warmup + 1
    c.mesh.fsdp = 1
    return c


def part_step():
    from medjax.training.state import setup
    for shape in FLAGS.shapes:
        runs = {}
        for impl in IMPLS:
            config = step_config(shape, impl)
            s = setup(config, 32000 if shape == "medium" else 512)
            b, t = config.batch_size, config.seq_len
            rs = np.random.RandomState(0)
            batch = {"input_ids": rs.randint(0, s.model_config.vocab_size, (b, t)),
                     "segment_ids": np.ones((b, t)), "loss_mask": np.ones((b, t)),
                     "positions": np.broadcast_to(np.arange(t), (b, t)).copy()}
            batch = {k: jax.device_put(v.astype(np.int32), s.batch_sharding)
                     for k, v in batch.items()}
            with jax.set_mesh(s.mesh):
                t0 = time.perf_counter()  # compile + warm-up
                state = s.state
                for _ in range(FLAGS.warmup):
                    state, metrics = s.step_fn(state, batch)
                jax.block_until_ready(metrics)
            runs[impl] = dict(s=s, state=state, batch=batch, times=[],
                              warm=time.perf_counter() - t0, b=b, t=t)
        with OtherLoad() as load:
            for r in range(FLAGS.steps):
                for impl in (IMPLS if r % 2 == 0 else IMPLS[::-1]):
                    run = runs[impl]
                    with jax.set_mesh(run["s"].mesh):
                        t0 = time.perf_counter()
                        run["state"], m = run["s"].step_fn(run["state"], run["batch"])
                        jax.block_until_ready(m)
                        run["times"].append(time.perf_counter() - t0)
                        run["loss"] = float(m["loss"])
        mc = runs["grouped"]["s"].model_config
        b, t = runs["grouped"]["b"], runs["grouped"]["t"]
        fpt = active_flops_per_token(mc, t)
        print(f"## Train step, Mixtral {shape}: hidden {mc.hidden_size}, {mc.num_layers} layers, "
              f"{mc.num_experts} experts of ffn {mc.intermediate_size} top-"
              f"{mc.experts_per_token}, vocabulary {mc.vocab_size}; {mc.num_params:,} params; "
              f"batch {b} x {t} tokens, f32, AdamW, 1 {jax.devices()[0].platform} device\n")
        print(f"median of {FLAGS.steps} interleaved steps after {FLAGS.warmup} warm-up; CPU used "
              f"by other processes meanwhile: {load}; active-parameter model FLOPs per token "
              f"{fpt / 1e6:,.1f} M\n")
        print("| moe_impl | compile + warm-up s | median step s | min step s | tokens/s | "
              "achieved GFLOP/s (active model FLOPs) | loss |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        med = {}
        for impl in IMPLS:
            run = runs[impl]
            m = med[impl] = statistics.median(run["times"])
            print(f"| {run['s'].model_config.moe_impl} | {run['warm']:.1f} | {m:.3f} | "
                  f"{min(run['times']):.3f} | "
                  f"{b * t / m:,.0f} | {fpt * b * t / m / 1e9:,.1f} | {run['loss']:.3f} |")
        print(f"\n**grouped / dense step time = {med['grouped'] / med['dense']:.2f}** "
              "(> 1: dense is faster)\n")
        del runs


# ------------------------------------------------------------------ 4. collectives
_BYTES = {"bf16": 2, "f16": 2, "f32": 4, "f64": 8, "s32": 4, "u32": 4, "s64": 8, "pred": 1,
          "s8": 1, "u8": 1}
_COLLECTIVE = re.compile(r"= (\(?[^=]*?\)?) (all-gather|all-reduce|reduce-scatter|all-to-all|"
                         r"collective-permute)(?:-start)?\(")


def collectives(hlo: str) -> dict:
    """{op: [count, bytes of the results]} of the collectives in a compiled module."""
    out: dict = {}
    for shapes, op in _COLLECTIVE.findall(hlo):
        size = sum(math_prod(dims) * _BYTES.get(dt, 4)
                   for dt, dims in re.findall(r"(\w+)\[([0-9,]*)\]", shapes))
        entry = out.setdefault(op, [0, 0])
        entry[0] += 1
        entry[1] += size
    return out


def math_prod(dims: str) -> int:
    n = 1
    for x in dims.split(","):
        if x:
            n *= int(x)
    return n


def part_collectives_child():
    import flax.linen as nn
    from jax.sharding import NamedSharding
    from medjax.models import get_preset
    from medjax.models.decoder import MoE
    from medjax.parallel import make_mesh
    from medjax.parallel.sharding import axis_rules, logical_to_spec, rules_for

    n_dev = jax.device_count()
    mesh = make_mesh(1, n_dev, 1)
    shapes = (("layer part", FLAGS.hidden, FLAGS.ffn, FLAGS.experts, FLAGS.top_k, 1024),
              ("Mixtral-8x7B", 4096, 14336, 8, 2, 4096))
    print(f"## One MoE layer's collectives, forward + backward, {n_dev} devices (mesh fsdp "
          f"{n_dev}), one row per device, float32; GiB per device (bf16: half)\n")
    print("| shape | tokens/device | moe_impl | experts | all-gather | all-reduce | "
          "reduce-scatter | all-to-all | total |")
    print("|---|---:|---|---|---:|---:|---:|---:|---:|")
    textbook = []
    for label, d, f, e, k, n in shapes:
        c = get_preset("mixtral_tiny").replace(hidden_size=d, intermediate_size=f,
                                               num_experts=e, experts_per_token=k)
        w = 3 * e * d * f * 4
        textbook.append((label, n, w, 2 * k * n * d * 4, e))
        for ep in (False, True):
            for impl in IMPLS:
                mod = MoE(c.replace(moe_impl=impl))
                with axis_rules(rules_for(ep)), jax.set_mesh(mesh):
                    boxed = jax.eval_shape(lambda m=mod: m.init(
                        jax.random.key(0), jnp.zeros((1, 1, d), jnp.float32))["params"])
                    params = jax.tree.map(
                        lambda b: jax.ShapeDtypeStruct(b.value.shape, b.value.dtype,
                                                       sharding=NamedSharding(mesh, logical_to_spec(
                                                           b.names, None, mesh.axis_names))),
                        boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
                    x = jax.ShapeDtypeStruct((n_dev, n, d), jnp.float32, sharding=NamedSharding(
                        mesh, jax.P(("data", "fsdp"))))

                    def loss(p, x, mod=mod):
                        return jnp.sum(jnp.square(mod.apply({"params": p}, x)[0]))

                    grad = jax.jit(jax.grad(loss, argnums=(0, 1)), out_shardings=(
                        jax.tree.map(lambda a: a.sharding, params), x.sharding))
                    coll = collectives(grad.lower(params, x).compile().as_text())
                g = {op: coll.get(op, [0, 0]) for op in ("all-gather", "all-reduce",
                                                         "reduce-scatter", "all-to-all")}
                total = sum(v[1] for v in coll.values())
                cells = " | ".join(f"{v[1] / 2**30:.3f} ({v[0]})" if v[0] else "-"
                                   for v in g.values())
                print(f"| {label} | {n} | {impl} | {'whole, over fsdp' if ep else 'split'} | "
                      f"{cells} | {total / 2**30:.3f} |")
    print("\n(count in parentheses; bytes are each collective's result on one device: "
          "the gathered array, the reduced array)\n")
    print("Textbook costs per layer, per device, float32 (bf16: half):\n")
    print("| shape | tokens/device | FSDP: gather the experts (3 E d f), per pass | "
          "FSDP: reduce-scatter their gradient (full FT) | all-to-all EP: 2 k n d per pass "
          "(sent, the same received) | tokens/device where they are equal |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, n, w, a2a, e in textbook:
        print(f"| {label} | {n} | {w / 2**30:.3f} GiB | {w / 2**30:.3f} GiB "
              f"({(e - 1) / e:.3f} of it sent) | {a2a / 2**30:.3f} GiB | {n * w / a2a:,.0f} |")
    print()


def part_collectives():
    """Runs the collectives part in a child process with ``--devices`` fake devices."""
    args = [sys.executable, os.path.abspath(__file__), "--part=_collectives",
            f"--devices={FLAGS.devices}", f"--hidden={FLAGS.hidden}", f"--ffn={FLAGS.ffn}",
            f"--experts={FLAGS.experts}", f"--top_k={FLAGS.top_k}"]
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{r.stderr[-3000:]}")
    print(r.stdout, end="")


def main(argv):
    del argv
    if FLAGS.part == ["_collectives"]:
        part_collectives_child()
        return
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, {os.cpu_count()} CPUs\n")
    for part in FLAGS.part:
        {"lowering": part_lowering, "layer": part_layer, "step": part_step,
         "collectives": part_collectives}[part]()


if __name__ == "__main__":
    app.run(main)
