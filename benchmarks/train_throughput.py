"""Training throughput and MFU of the real train step for a config, on this machine.

    python benchmarks/train_throughput.py --config=configs/pretrain.py [--config.key=value ...]
        [--steps=10] [--warmup=2]

Builds the mesh, model and jitted ``train_step`` exactly as ``python -m
medjax.train`` does (``medjax.training.loop.setup``), feeds it fully packed
random-token batches (so the data pipeline is not measured), and times
``--steps`` steps after ``--warmup`` compiled ones. MFU = model FLOPs (6 x
matmul parameters + causal attention, per token) x tokens/s over the device
peak: the datasheet bf16 peak on known GPUs; on CPU the peak is measured in the
same run as the best of several large jitted matmuls in the model's compute
dtype.
"""

from __future__ import annotations

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


def main(argv):
    del argv
    from medjax.training.state import setup
    from medjax.training.metrics import device_peak_flops, train_flops_per_token

    config = FLAGS.config
    with config.unlocked():
        config.steps = max(config.steps, FLAGS.steps + FLAGS.warmup)
    vocab = config.model.vocab_size or 32000
    s = setup(config, vocab)
    b, t = config.batch_size, config.seq_len
    rs = np.random.RandomState(0)
    batch = {
        "input_ids": rs.randint(0, s.model_config.vocab_size, (b, t)).astype(np.int32),
        "segment_ids": np.ones((b, t), np.int32),
        "positions": np.broadcast_to(np.arange(t, dtype=np.int32), (b, t)).copy(),
        "loss_mask": np.ones((b, t), np.int32),
    }
    batch = {k: jax.device_put(v, s.batch_sharding) for k, v in batch.items()}
    state = s.state
    with jax.set_mesh(s.mesh):
        t0 = time.perf_counter()
        for _ in range(FLAGS.warmup):
            state, metrics = s.step_fn(state, batch)
        jax.block_until_ready(metrics)
        compile_and_warmup = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(FLAGS.steps):
            state, metrics = s.step_fn(state, batch)
        jax.block_until_ready(metrics)
        elapsed = time.perf_counter() - t0

    tokens_per_s = FLAGS.steps * b * t / elapsed
    flops_per_token = train_flops_per_token(s.model_config, t)
    achieved = tokens_per_s * flops_per_token / jax.device_count()
    peak = config.logging.peak_flops or device_peak_flops()
    source = "datasheet" if peak else "measured matmul"
    if not peak:
        peak = measured_matmul_peak(s.model_config.dtype, FLAGS.matmul_size)
    print(f"device: {jax.devices()[0].device_kind} x {jax.device_count()}, jax {jax.__version__}")
    print(f"model: {config.model.preset or config.model.init_from} "
          f"({s.model_config.num_params:,} params, dtype {s.model_config.dtype}), "
          f"batch {b} x {t} tokens, mesh {dict(s.mesh.shape)}")
    print("| metric | value |\n|---|---|")
    print(f"| compile + {FLAGS.warmup} warm-up steps | {compile_and_warmup:.1f} s |")
    print(f"| step time | {elapsed / FLAGS.steps:.3f} s |")
    print(f"| tokens/s (all devices) | {tokens_per_s:,.0f} |")
    print(f"| model FLOPs per token | {flops_per_token / 1e6:,.1f} M |")
    print(f"| achieved per device | {achieved / 1e9:,.1f} GFLOP/s |")
    print(f"| peak per device ({source}) | {peak / 1e9:,.1f} GFLOP/s |")
    print(f"| MFU | {achieved / peak:.1%} |")
    print(f"| final loss (random tokens) | {float(metrics['loss']):.3f} |")


if __name__ == "__main__":
    app.run(main)
