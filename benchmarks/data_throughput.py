"""Does the input pipeline outrun the training step? SFT pipeline tokens/s vs train step tokens/s.

    python benchmarks/data_throughput.py [--config=configs/sft.py] [--batches=60] [--workers=0,1,2]

Measures, in one run and for the same config (default: the tiny CPU SFT config
on the bundled ShareGPT conversations, real Llama-3 tokenizer and template):
  * the SFT pipeline (validate -> shuffle -> template + tokenize -> pack ->
    batch) in tokens per second (all row positions, padding included, as the
    step consumes them), in the main process and with N Grain worker processes,
    after a few warm-up batches so worker start-up is not counted;
  * the jitted train step on those batches, in tokens per second.
The pipeline keeps up when its tokens/s exceeds the step's.
"""

from __future__ import annotations

import time

import jax
from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/sft.py", "Training config.", lock_config=True)
flags.DEFINE_integer("batches", 60, "Timed batches per pipeline measurement.")
flags.DEFINE_integer("warmup", 5, "Untimed batches first.")
flags.DEFINE_list("workers", ["0", "1", "2"], "Worker-process counts to measure.")
flags.DEFINE_integer("steps", 5, "Timed train steps.")


def pipeline_rate(config, tokenizer, template, workers: int) -> tuple[float, float]:
    from medjax.data.pipeline import build_pipeline
    pipe = build_pipeline(config.data, tokenizer, template, objective=config.objective.name,
                          seq_len=config.seq_len, batch_size=config.batch_size, seed=config.seed,
                          num_workers=workers)
    it = iter(pipe)
    for _ in range(FLAGS.warmup):
        next(it)
    real = 0
    t0 = time.perf_counter()
    for _ in range(FLAGS.batches):
        b = next(it)
        real += int((b["segment_ids"] != 0).sum())
    dt = time.perf_counter() - t0
    return FLAGS.batches * config.batch_size * config.seq_len / dt, real / dt


def step_rate(config, tokenizer, template) -> float:
    from medjax.data.pipeline import build_pipeline
    from medjax.training.state import setup
    s = setup(config, tokenizer.vocab_size)
    it = iter(build_pipeline(config.data, tokenizer, template, objective=config.objective.name,
                             seq_len=config.seq_len, batch_size=config.batch_size,
                             seed=config.seed))
    batches = [{k: jax.device_put(v, s.batch_sharding) for k, v in next(it).items()}
               for _ in range(FLAGS.steps + 2)]
    state = s.state
    with jax.set_mesh(s.mesh):
        for b in batches[:2]:  # compile
            state, m = s.step_fn(state, b)
        jax.block_until_ready(m)
        t0 = time.perf_counter()
        for b in batches[2:]:
            state, m = s.step_fn(state, b)
        jax.block_until_ready(m)
    return FLAGS.steps * config.batch_size * config.seq_len / (time.perf_counter() - t0)


def main(argv):
    del argv
    from medjax.training.state import data_tools

    config = FLAGS.config
    spec, tokenizer, template = data_tools(config)
    print(f"config: objective {config.objective.name}, data {config.data.sources}, "
          f"batch {config.batch_size} x {config.seq_len}, tokenizer {spec}")
    rows = []
    for w in FLAGS.workers:
        total, real = pipeline_rate(config, tokenizer, template, int(w))
        rows.append((f"pipeline, {w} worker processes" if int(w) else "pipeline, main process",
                     total, real))
    rows.append(("train step (jit, this machine)", step_rate(config, tokenizer, template), None))
    print("| what | tokens/s (row positions) | non-padding tokens/s |\n|---|---:|---:|")
    for name, total, real in rows:
        print(f"| {name} | {total:,.0f} | {'' if real is None else f'{real:,.0f}'} |")
    slowest = min(r[1] for r in rows[:-1])
    print(f"slowest pipeline / train step = {slowest / rows[-1][1]:.1f}x "
          f"({'keeps up' if slowest > rows[-1][1] else 'DOES NOT keep up'})")


if __name__ == "__main__":
    app.run(main)
