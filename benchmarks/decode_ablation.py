"""Where a decode step's time goes: generation with parts of the layer removed, or
op by op.

    python benchmarks/decode_ablation.py [--batch=16] [--scan_layers=false]
    python benchmarks/decode_ablation.py --profile [--new_tokens=64] [--top=25]

A random model of the medium shape (hidden 512, 8 layers, 8/4 heads, MLP 1536,
vocabulary 32,000, float32), prompt 128, greedy. The per-token decode time is
(time for 66 new tokens - time for 2) / 64, best of 3 after a compile. Variants
replace functions of medjax.models.decoder for the run: the cached attention by its
query (no attention), the cache write by the identity (no cache update), both. What
the removed part costs is the difference to the full step; the rest is the matmuls,
norms, RoPE, sampling and the loop. Last, the floor of any decode step: one read of all
the weights but the embedding table (``jnp.sum`` over them, best of 5).

``--profile``: one ``generate()`` call of ``--new_tokens`` runs under
``jax.profiler.trace`` instead; the trace's per-op durations (XLA's CPU thunks) are
matched to the compiled program's ops (``_generate.lower(...).compile().as_text()``) and
summed by the op's result shape and JAX source name, per decode step. Ops that run
concurrently on the two cores each count their own time, so the sum can exceed the
step; read the table for shares and outliers (a copy, a transpose, a slow dot), not as
a partition of the step.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import re
import tempfile
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch", 16, "Rows.")
flags.DEFINE_bool("scan_layers", False, "Layer scan on (stacked) or off (split once).")
flags.DEFINE_bool("profile", False, "Per-op profile of the decode loop instead.")
flags.DEFINE_integer("new_tokens", 64, "--profile: new tokens (decode steps) profiled.")
flags.DEFINE_integer("top", 25, "--profile: rows of the table.")


def main(argv):
    del argv
    import jax
    import numpy as np

    from medjax import generate as G
    from medjax.models import decoder, get_preset
    cfg = get_preset("llama3_tiny").replace(
        vocab_size=32000, hidden_size=512, intermediate_size=1536, num_layers=8, num_heads=8,
        num_kv_heads=4, head_dim=64, scan_layers=FLAGS.scan_layers)
    params = decoder.init_params(cfg, jax.random.key(0))
    ids = np.random.RandomState(0).randint(0, 32000, (FLAGS.batch, 128)).tolist()
    if FLAGS.profile:
        return profile(cfg, params, ids)

    def best(new):
        jax.clear_caches()
        G.generate(cfg, params, ids, max_new_tokens=new)
        times = []
        for _ in range(3):
            t = time.perf_counter()
            G.generate(cfg, params, ids, max_new_tokens=new)
            times.append(time.perf_counter() - t)
        return min(times)

    attention, write = decoder.cached_attention, decoder.write_cache

    def no_write(cache, new, start, layer=None, keys=False):
        return cache

    def no_attention(config, q, k, v, positions):
        return q

    variants = (("full step", attention, write),
                ("no attention", no_attention, write),
                ("no cache write", attention, no_write),
                ("neither", no_attention, no_write))
    print(f"batch {FLAGS.batch}, prompt 128, scan_layers={FLAGS.scan_layers}; JAX "
          f"{jax.__version__} on {jax.devices()[0].platform}")
    try:
        for name, att, wr in variants:
            decoder.cached_attention, decoder.write_cache = att, wr
            step = (best(66) - best(2)) / 64
            print(f"{name:16s} {step * 1e3:7.2f} ms/token", flush=True)
    finally:
        decoder.cached_attention, decoder.write_cache = attention, write
    # The floor of a step that reads every weight once (the embedding table aside: a step
    # reads only its rows): one pass over the same bytes.
    read = {k: v for k, v in params.items() if k != "embed"}
    flat = jax.numpy.concatenate([x.ravel() for x in jax.tree.leaves(read)])
    total = jax.jit(jax.numpy.sum)
    total(flat).block_until_ready()
    times = []
    for _ in range(5):
        t = time.perf_counter()
        total(flat).block_until_ready()
        times.append(time.perf_counter() - t)
    print(f"one read of the weights ({flat.nbytes / 1e6:.0f} MB, jnp.sum): "
          f"{min(times) * 1e3:.2f} ms = {flat.nbytes / min(times) / 1e9:.1f} GB/s", flush=True)



def profile(cfg, params, ids) -> None:
    import jax
    import jax.numpy as jnp

    from medjax import generate as G
    new = FLAGS.new_tokens
    G.generate(cfg, params, ids, max_new_tokens=new)  # compile
    out = tempfile.mkdtemp(prefix="medjax_decode_profile_")
    with jax.profiler.trace(out):
        G.generate(cfg, params, ids, max_new_tokens=new)
    spent, calls = collections.Counter(), collections.Counter()
    trace = sorted(glob.glob(f"{out}/**/*.trace.json.gz", recursive=True))[-1]
    for e in json.load(gzip.open(trace))["traceEvents"]:
        if e.get("ph") == "X":
            spent[e["name"]] += e["dur"]
            calls[e["name"]] += 1
    text = G._generate.lower(
        cfg, params, jnp.zeros((FLAGS.batch, G.bucket(128)), jnp.int32),
        jnp.full((FLAGS.batch,), 128, jnp.int32), jax.random.key(0), max_new_tokens=new,
        temperature=0.0, top_k=0, top_p=1.0, stop_ids=()).compile().as_text()
    ops = {}
    for line in text.splitlines():
        m = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = (\S+)", line)
        if m and m.group(1) not in ops:
            source = re.search(r'op_name="([^"]+)"', line)
            name = source.group(1).replace("jit(_generate)/", "") if source else ""
            ops[m.group(1)] = (m.group(2), name.replace("while/body/", ""))
    rows = collections.Counter()
    count = collections.Counter()
    for op, us in spent.items():
        # ops of the decode loop: executed once per step (and per layer when scanned)
        if op in ops and calls[op] >= new - 1:
            rows[ops[op]] += us
            count[ops[op]] += 1
    print(f"batch {FLAGS.batch}, prompt 128, {new} new tokens, scan_layers={FLAGS.scan_layers};"
          f" JAX {jax.__version__} on {jax.devices()[0].platform}; trace in {out}")
    print("| ms / step | ops | result | source |\n|---:|---:|---|---|")
    for (shape, name), us in rows.most_common(FLAGS.top):
        print(f"| {us / 1e3 / new:.2f} | {count[(shape, name)]} | `{shape}` | {name[-90:]} |")



if __name__ == "__main__":
    app.run(main)
