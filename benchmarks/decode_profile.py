"""Where a decode step's time goes, op by op: a profile of medjax's generation loop.

    python benchmarks/decode_profile.py [--batch=16] [--new_tokens=64] [--scan_layers=false]
        [--top=25]

A random model of the medium shape (hidden 512, 8 layers, 8/4 heads, MLP 1536,
vocabulary 32,000, float32), prompt 128, greedy. One ``generate()`` call runs under
``jax.profiler.trace``; the trace's per-op durations (XLA's CPU thunks) are matched to
the compiled program's ops (``_generate.lower(...).compile().as_text()``) and summed by
the op's result shape and JAX source name, divided by the number of decode steps. Ops
that run concurrently on the two cores each count their own time, so the sum can exceed
the step; read the table for shares and outliers (a copy, a transpose, a slow dot), not
as a partition of the step.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import re
import tempfile

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch", 16, "Rows.")
flags.DEFINE_integer("new_tokens", 64, "New tokens (decode steps) in the profiled call.")
flags.DEFINE_bool("scan_layers", False, "Layer scan on (stacked) or off (split in the jit).")
flags.DEFINE_integer("top", 25, "Rows of the table.")


def main(argv):
    del argv
    import jax
    import jax.numpy as jnp
    import numpy as np

    from medjax import generate as G
    from medjax.models import decoder, get_preset
    cfg = get_preset("llama3_tiny").replace(
        vocab_size=32000, hidden_size=512, intermediate_size=1536, num_layers=8, num_heads=8,
        num_kv_heads=4, head_dim=64, scan_layers=FLAGS.scan_layers)
    params = decoder.init_params(cfg, jax.random.key(0))
    ids = np.random.RandomState(0).randint(0, 32000, (FLAGS.batch, 128)).tolist()
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
