"""Forward-pass benchmark: medjax (JAX/XLA) against Hugging Face transformers (PyTorch).

What it measures, all in one process and one run:

1. Forward pass, medjax vs transformers. A random Llama-shaped model is built
   with transformers, saved to a temporary directory and loaded into medjax
   with ``load_hf``, so both sides run the same weights on the same token
   batch. Both are warmed up (medjax: jit compile + first run; torch: one
   forward under ``torch.no_grad()``), their logits are compared (the run fails
   if the max abs difference exceeds ``--atol``), then ``--repeats`` timed
   forwards of each are interleaved (the order alternates every repeat, so
   machine noise hits both sides alike). Reported per side: median / min
   seconds, tokens/s, achieved GFLOP/s and the fraction of measured matmul peak;
   and the ratio medjax tokens/s / torch tokens/s (> 1: medjax is faster).

2. Matmul peak of this machine, measured in the same run: a jitted
   ``[n, n] @ [n, n]`` in ``--dtype`` (float32 by default; ``--peak_n``, default
   2048) timed the same way, and a torch matmul of the same size; the faster
   of the two is the peak used by "% of matmul peak". "% of own-library
   matmul" divides each side by its own library's matmul speed, separating
   framework overhead from the speed of the matmul kernels underneath (XLA's
   vs torch's BLAS).

3. Compile time vs depth: for the ``llama3_tiny`` preset with
   ``num_layers`` in ``--compile_layers`` and ``scan_layers`` on and off,
   ``jax.jit(forward, static_argnums=0).lower(config, abstract_params,
   ids_struct).compile()`` on abstract shapes (nothing is allocated). Tracing +
   lowering and XLA compilation are timed separately. With ``lax.scan`` the
   layer body is compiled once, so time should stay roughly flat with depth;
   unrolled, it grows with the number of layers.

FLOP count (stated in the output too): per forward,

    2 * N_matmul * tokens  +  4 * layers * batch * seq^2 * (heads * head_dim)

where ``N_matmul`` counts the weights used in matmuls (q/k/v/o, gate/up/down
per layer, and the LM head; not the input-embedding gather nor norm scales),
and the second term is QK^T and attention-times-V over the full seq x seq
square (causal masking is not subtracted). Elementwise work (norms, RoPE,
softmax, SiLU) is not counted.

Run (defaults: hidden 512, 8 layers, 8 heads, 4 kv heads, mlp 1408, vocab
32000, batch 4, seq 512, float32; about a minute on a 2-core CPU):

    .venv/bin/python benchmarks/forward.py
    .venv/bin/python benchmarks/forward.py --layers=4 --seq=256 --repeats=10
    .venv/bin/python benchmarks/forward.py --skip_compile   # forward only
    .venv/bin/python benchmarks/forward.py --helpfull       # all flags
"""

from __future__ import annotations

import os

# Quiet, offline transformers; must be set before transformers is imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
# Both sides on the CPU (set JAX_PLATFORMS yourself to override).
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import platform  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from absl import app, flags  # noqa: E402
from cpu_load import OtherLoad  # noqa: E402  (benchmarks/, the script directory)

FLAGS = flags.FLAGS
# Model shape (Llama architecture) and batch.
flags.DEFINE_integer("hidden", 512, "Hidden size.")
flags.DEFINE_integer("layers", 8, "Number of decoder layers.")
flags.DEFINE_integer("heads", 8, "Attention heads.")
flags.DEFINE_integer("kv_heads", 4, "Key/value heads (grouped-query attention).")
flags.DEFINE_integer("intermediate", 1408, "MLP intermediate size.")
flags.DEFINE_integer("vocab", 32000, "Vocabulary size.")
flags.DEFINE_integer("batch", 4, "Batch size.")
flags.DEFINE_integer("seq", 512, "Sequence length.")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"],
                  "Parameter and compute dtype of both implementations (bfloat16 needs a "
                  "looser --atol: the two round differently).")
flags.DEFINE_float("init_std", 0.02,
                   "Std of the random weights (transformers' default initializer_range). Speed "
                   "does not depend on it. At 0.02 the default model's logits reach ~2 and the "
                   "two sides agree to ~4e-6, while a wrong computation (other rope_theta, one "
                   "layer fewer) differs by >0.2. Much larger values (e.g. 0.1) blow up "
                   "q/k, and float32 RoPE-angle rounding, which the two libraries do "
                   "differently, then alone moves logits by ~1e-3.")
flags.DEFINE_bool("scan_layers", True, "medjax: run layers with lax.scan (else unrolled).")
flags.DEFINE_string("torch_attention", "sdpa",
                    "transformers attn_implementation ('sdpa' or 'eager').")
# Timing.
flags.DEFINE_integer("repeats", 10, "Timed forwards per implementation (interleaved).")
flags.DEFINE_float("pause", 0.2,
                   "Seconds to sleep before each timed call, so that one library's spinning "
                   "worker threads are idle before the other one starts.")
flags.DEFINE_float("atol", 1e-3, "Fail if max |logits_medjax - logits_torch| exceeds this.")
flags.DEFINE_integer("peak_n", 2048, "Size of the square matmul (in --dtype) used as peak.")
flags.DEFINE_integer("peak_repeats", 10, "Timed repeats of the peak matmul.")
flags.DEFINE_integer("seed", 0, "Seed for weights and tokens.")
# Compile time vs depth.
flags.DEFINE_bool("skip_compile", False, "Skip the compile-time-vs-depth section.")
flags.DEFINE_list("compile_layers", ["2", "8", "32"], "Depths for the compile-time section.")
flags.DEFINE_string("compile_preset", "llama3_tiny", "medjax preset for the compile section.")
flags.DEFINE_integer("compile_repeats", 3, "Compiles per (depth, scan) cell; the median is kept.")


# --------------------------------------------------------------------- timing
def timed(fn) -> float:
    """Seconds taken by one call of ``fn`` (which must block until its result is ready)."""
    time.sleep(FLAGS.pause)
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved(fns: dict, repeats: int) -> dict[str, list[float]]:
    """Times each callable ``repeats`` times, alternating which goes first each round."""
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        for n in order:
            times[n].append(timed(fns[n]))
    return times


# ---------------------------------------------------------------- FLOP count
def forward_flops(cfg) -> tuple[int, int, int]:
    """(matmul flops, attention flops, N_matmul) of one forward; see module docstring."""
    d, f, L = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers
    n, k, h = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    per_layer = d * n * h * 2 + d * k * h * 2 + 3 * d * f  # q, o; k, v; gate, up, down
    n_matmul = L * per_layer + d * cfg.vocab_size  # + LM head
    tokens = FLAGS.batch * FLAGS.seq
    matmul = 2 * n_matmul * tokens
    attn = 4 * L * FLAGS.batch * FLAGS.seq ** 2 * n * h
    return matmul, attn, n_matmul


# -------------------------------------------------------------- environment
def describe_machine() -> dict[str, str]:
    import flax
    import jax
    import torch
    import transformers

    blas = re.search(r"BLAS_INFO=(\w+)", torch.__config__.show())
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": f"{cpu}, {os.cpu_count()} logical cores",
        "python": platform.python_version(),
        "jax": f"{jax.__version__} (backend {jax.default_backend()}, {jax.device_count()} device)",
        "flax": flax.__version__,
        "torch": f"{torch.__version__} ({torch.get_num_threads()} intra-op threads, BLAS "
                 f"{blas.group(1) if blas else '?'}, CPU capability "
                 f"{torch.backends.cpu.get_cpu_capability()})",
        "transformers": transformers.__version__,
    }


# ------------------------------------------------------------ 1. forward pass
def build_models(tmpdir: str):
    """A random transformers Llama saved to ``tmpdir``, and the same weights in medjax."""
    import torch
    import transformers

    from medjax.models import load_hf

    torch.manual_seed(FLAGS.seed)
    hf_cfg = transformers.LlamaConfig(
        vocab_size=FLAGS.vocab, hidden_size=FLAGS.hidden, intermediate_size=FLAGS.intermediate,
        num_hidden_layers=FLAGS.layers, num_attention_heads=FLAGS.heads,
        num_key_value_heads=FLAGS.kv_heads, max_position_embeddings=max(FLAGS.seq, 2048),
        rms_norm_eps=1e-5, rope_theta=500000.0, initializer_range=FLAGS.init_std,
        tie_word_embeddings=False, use_cache=False,
        attn_implementation=FLAGS.torch_attention)
    torch_model = transformers.LlamaForCausalLM(hf_cfg).eval()
    torch_model.save_pretrained(tmpdir)  # float32 safetensors
    if FLAGS.dtype == "bfloat16":
        torch_model = torch_model.to(torch.bfloat16)
    config, params = load_hf(tmpdir, dtype=FLAGS.dtype, scan_layers=FLAGS.scan_layers)
    return torch_model, config, params


def bench_forward() -> dict:
    import jax
    import numpy as np
    import torch

    from medjax.models import forward

    with tempfile.TemporaryDirectory() as tmpdir:
        torch_model, config, params = build_models(tmpdir)
        attn_impl = torch_model.config._attn_implementation

    ids_np = np.random.RandomState(FLAGS.seed + 1).randint(
        0, FLAGS.vocab, (FLAGS.batch, FLAGS.seq)).astype(np.int32)
    ids_jax = jax.device_put(ids_np)  # inputs placed before timing, on both sides
    ids_torch = torch.from_numpy(ids_np.astype(np.int64))

    fwd = jax.jit(forward, static_argnums=0)

    def run_medjax():
        return jax.block_until_ready(fwd(config, params, ids_jax))

    def run_torch():
        with torch.no_grad():
            return torch_model(input_ids=ids_torch, use_cache=False).logits

    # Warm-up: the first medjax call includes the jit compile; time it for the record.
    t0 = time.perf_counter()
    out_medjax = np.asarray(run_medjax())
    first_call_medjax = time.perf_counter() - t0
    t0 = time.perf_counter()
    out_torch = run_torch().float().numpy()
    first_call_torch = time.perf_counter() - t0

    # Same computation? Compare before timing anything.
    if out_medjax.shape != out_torch.shape:
        sys.exit(f"FAIL: logits shapes differ: medjax {out_medjax.shape} vs torch "
                 f"{out_torch.shape}")
    max_diff = float(np.abs(out_medjax - out_torch).max())
    max_logit = float(np.abs(out_torch).max())
    print(f"logits {out_torch.shape}: max |torch| = {max_logit:.3f}, "
          f"max |medjax - torch| = {max_diff:.3e} (atol {FLAGS.atol:g})")
    if not np.isfinite(max_diff) or max_diff > FLAGS.atol:
        sys.exit(f"FAIL: medjax and transformers logits differ by {max_diff:.3e} > "
                 f"--atol={FLAGS.atol:g}; the benchmark would compare different computations")
    if max_logit < 1.0:
        print("warning: logits are small, so the agreement check is weak; raise --init_std")
    del out_medjax, out_torch

    with OtherLoad() as load:
        times = interleaved({"medjax": run_medjax, "torch": run_torch}, FLAGS.repeats)
    return dict(load=load, config=config, times=times, max_diff=max_diff, max_logit=max_logit,
                first_call=dict(medjax=first_call_medjax, torch=first_call_torch),
                attn_impl=attn_impl)


# ------------------------------------------------------------- 2. matmul peak
def bench_peak() -> tuple[dict[str, float], OtherLoad]:
    """Median GFLOP/s of an [n, n] @ [n, n] matmul in --dtype: jitted JAX and torch."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    n = FLAGS.peak_n
    rng = np.random.RandomState(FLAGS.seed)
    a_np, b_np = (rng.standard_normal((n, n)).astype(np.float32) for _ in range(2))
    a = jnp.asarray(a_np, FLAGS.dtype)
    b = jnp.asarray(b_np, FLAGS.dtype)
    ta = torch.from_numpy(a_np).to(getattr(torch, FLAGS.dtype))
    tb = torch.from_numpy(b_np).to(getattr(torch, FLAGS.dtype))
    mm = jax.jit(jnp.matmul)
    jax.block_until_ready(mm(a, b))  # compile + warm up
    torch.matmul(ta, tb)

    # Small matmuls take ~1 ms, less than the wake-up of thread pools idled by
    # --pause: time `inner` back-to-back calls per sample (same count for both).
    t0 = time.perf_counter()
    jax.block_until_ready(mm(a, b))
    inner = max(1, int(0.1 / (time.perf_counter() - t0)))

    def jax_mm():
        for _ in range(inner):
            out = mm(a, b)
        jax.block_until_ready(out)

    def torch_mm():
        for _ in range(inner):
            torch.matmul(ta, tb)

    with OtherLoad() as load:
        times = interleaved({"jax": jax_mm, "torch": torch_mm}, FLAGS.peak_repeats)
    flops = 2 * n ** 3 * inner
    return {k: flops / statistics.median(v) / 1e9 for k, v in times.items()}, load


# --------------------------------------------------- 3. compile time vs depth
def compile_once(config, ids_struct) -> tuple[float, float]:
    """(trace + lower seconds, XLA compile seconds) of medjax's jitted forward."""
    import jax

    from medjax.models import abstract_params, forward

    params_struct = abstract_params(config)  # ShapeDtypeStructs: nothing allocated
    # JAX keeps in-memory caches of traces, lowerings and executables keyed on the
    # function and its static arguments, across jit wrappers: without clearing
    # them a repeated compile of the same config takes ~0s.
    jax.clear_caches()
    fn = jax.jit(forward, static_argnums=0)
    t0 = time.perf_counter()
    lowered = fn.lower(config, params_struct, ids_struct)
    t1 = time.perf_counter()
    lowered.compile()
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def bench_compile() -> list[dict]:
    import jax
    import jax.numpy as jnp

    from medjax.models import get_preset

    # No persistent compilation cache: every compile below must really compile.
    jax.config.update("jax_enable_compilation_cache", False)
    ids_struct = jax.ShapeDtypeStruct((FLAGS.batch, FLAGS.seq), jnp.int32)
    depths = [int(x) for x in FLAGS.compile_layers]
    # A throwaway compile first, so one-time set-up costs do not land on the first row.
    compile_once(get_preset(FLAGS.compile_preset, num_layers=1), ids_struct)
    rows = []
    for scan in (True, False):
        for depth in depths:
            config = get_preset(FLAGS.compile_preset, num_layers=depth, scan_layers=scan,
                                max_position_embeddings=max(FLAGS.seq, 2048))
            runs = [compile_once(config, ids_struct) for _ in range(FLAGS.compile_repeats)]
            lower_s = statistics.median(r[0] for r in runs)
            compile_s = statistics.median(r[1] for r in runs)
            rows.append(dict(scan=scan, layers=depth, lower=lower_s, compile=compile_s))
            print(f"  scan_layers={scan!s:5} layers={depth:3d}: trace+lower {lower_s:6.2f}s, "
                  f"compile {compile_s:6.2f}s")
    return rows


# ----------------------------------------------------------------------- main
def main(argv):
    del argv
    import torch

    torch.set_num_threads(os.cpu_count())
    wall0 = time.perf_counter()

    machine = describe_machine()
    print("## Machine")
    for k, v in machine.items():
        print(f"- {k}: {v}")
    print(f"- command: {' '.join([os.path.relpath(sys.executable), *sys.argv])}")
    with OtherLoad() as before:
        time.sleep(1.0)
    print(f"- CPU used by other processes in the second before starting: {before.describe()}")
    print()

    print(f"[1/3] forward pass: building model, compiling, checking logits, "
          f"{FLAGS.repeats} interleaved repeats each ...")
    fw = bench_forward()
    print("[2/3] matmul peak ...")
    peak, peak_load = bench_peak()
    rows = None
    if not FLAGS.skip_compile:
        print(f"[3/3] compile time vs depth ({FLAGS.compile_preset}, batch {FLAGS.batch}, "
              f"seq {FLAGS.seq}) ...")
        with OtherLoad() as compile_load:
            rows = bench_compile()

    # ----------------------------------------------------------- report
    cfg = fw["config"]
    tokens = FLAGS.batch * FLAGS.seq
    mm_flops, attn_flops, n_matmul = forward_flops(cfg)
    flops = mm_flops + attn_flops
    # The machine's matmul peak: the faster of the two libraries' matmuls.
    peak_lib = max(peak, key=peak.get)
    peak_gflops = peak[peak_lib]
    stats = {}
    for name, ts in fw["times"].items():
        med = statistics.median(ts)
        stats[name] = dict(median=med, min=min(ts), max=max(ts), tok_s=tokens / med,
                           gflops=flops / med / 1e9)

    print()
    print("## Forward pass: medjax vs transformers (CPU)")
    print()
    print(f"Model: Llama, hidden {cfg.hidden_size}, {cfg.num_layers} layers, {cfg.num_heads} heads "
          f"({cfg.num_kv_heads} kv, head_dim {cfg.head_dim}), mlp {cfg.intermediate_size}, "
          f"vocab {cfg.vocab_size}; {cfg.num_params:,} parameters ({n_matmul:,} in matmuls). "
          f"Batch {FLAGS.batch} x seq {FLAGS.seq} = {tokens:,} tokens, {FLAGS.dtype}. "
          f"medjax scan_layers={cfg.scan_layers}; torch attn_implementation="
          f"{fw['attn_impl']!r}, {torch.get_num_threads()} threads, no_grad.")
    print()
    print(f"FLOPs per forward: 2 * N_matmul * tokens = {mm_flops / 1e9:.1f} GFLOP, plus "
          f"attention 4 * layers * batch * seq^2 * heads * head_dim = {attn_flops / 1e9:.1f} "
          f"GFLOP (full square, causal mask not subtracted); total {flops / 1e9:.1f} GFLOP.")
    print(f"Matmul {FLAGS.dtype} {FLAGS.peak_n}x{FLAGS.peak_n} @ {FLAGS.peak_n}x{FLAGS.peak_n}, "
          f"median of {FLAGS.peak_repeats}: jitted JAX {peak['jax']:.1f} GFLOP/s, torch.matmul "
          f"{peak['torch']:.1f} GFLOP/s; matmul peak = {peak_gflops:.1f} GFLOP/s ({peak_lib}); "
          f"CPU used by other processes meanwhile: {peak_load.describe()}.")
    print(f"Logits agree: max |medjax - torch| = {fw['max_diff']:.2e} "
          f"(max |logit| {fw['max_logit']:.2f}, tolerance {FLAGS.atol:g}).")
    print(f"CPU used by other processes during the timed forwards: {fw['load'].describe()}.")
    if fw["load"].others is not None and fw["load"].others + fw["load"].steal > 0.05:
        print("WARNING: other load on the machine during timing; the numbers below are noisy "
              "(compare min and max), rerun on a quiet machine.")
    print(f"First call (warm-up): medjax {fw['first_call']['medjax']:.2f}s incl. jit compile, "
          f"torch {fw['first_call']['torch']:.2f}s.")
    print()
    # "% of peak" is against the machine's measured matmul peak; "% of own
    # matmul" against the same-size matmul of the side's own library (XLA / torch's BLAS),
    # which separates framework overhead from the speed of the underlying matmul kernels.
    print("| implementation | median s | min s | max s | tokens/s | GFLOP/s | % of matmul peak "
          "| % of own-library matmul |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, label, own in (("medjax", "medjax (jax.jit)", "jax"),
                             ("torch", "transformers (torch)", "torch")):
        s = stats[name]
        print(f"| {label} | {s['median']:.3f} | {s['min']:.3f} | {s['max']:.3f} | "
              f"{s['tok_s']:,.0f} | {s['gflops']:.1f} | {100 * s['gflops'] / peak_gflops:.1f}% "
              f"| {100 * s['gflops'] / peak[own]:.1f}% |")
    ratio = stats["medjax"]["tok_s"] / stats["torch"]["tok_s"]
    print()
    print(f"**Ratio medjax tokens/s / torch tokens/s = {ratio:.2f}** "
          f"(median of {FLAGS.repeats} interleaved repeats each; > 1 means medjax is faster).")

    if rows is not None:
        print()
        print("## Compile time vs depth")
        print()
        print(f"`jax.jit(forward, static_argnums=0).lower(config, abstract_params(config), "
              f"ShapeDtypeStruct(({FLAGS.batch}, {FLAGS.seq}), int32)).compile()`, preset "
              f"`{FLAGS.compile_preset}`; median of {FLAGS.compile_repeats} compiles per row, "
              f"each after jax.clear_caches(), with no persistent compilation cache.")
        print()
        print(f"CPU used by other processes during this section: {compile_load.describe()}.")
        print()
        print("| layers | scan_layers | trace+lower s | compile s | total s |")
        print("|---:|---|---:|---:|---:|")
        for r in rows:
            print(f"| {r['layers']} | {r['scan']} | {r['lower']:.2f} | {r['compile']:.2f} | "
                  f"{r['lower'] + r['compile']:.2f} |")
    print()
    print(f"Total benchmark wall time: {time.perf_counter() - wall0:.0f}s")


if __name__ == "__main__":
    app.run(main)
