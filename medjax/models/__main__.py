"""Forward pass of a model preset or Hugging Face directory: a quick health check.

  python -m medjax.models --preset=llama3_tiny
  python -m medjax.models --hf=path/to/hf_model --batch=1 --length=32
"""

from __future__ import annotations

import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("preset", "llama3_tiny", "Model preset (see medjax.models.PRESETS).")
flags.DEFINE_string("hf", None, "Load this Hugging Face directory instead of a random preset.")
flags.DEFINE_integer("batch", 2, "Batch size.")
flags.DEFINE_integer("length", 64, "Sequence length.")
flags.DEFINE_integer("seed", 0, "Random seed for parameters and tokens.")


def main(argv):
    del argv
    import jax
    import jax.numpy as jnp

    from medjax import models

    try:
        if FLAGS.hf:
            config, params = models.load_hf(FLAGS.hf)
        else:
            config = models.get_preset(FLAGS.preset)
            params = models.init_params(config, jax.random.key(FLAGS.seed))
    except (OSError, KeyError, ValueError) as e:
        sys.exit(f"medjax.models: error: {e}")
    ids = jax.random.randint(jax.random.key(FLAGS.seed + 1), (FLAGS.batch, FLAGS.length), 0,
                             config.vocab_size)
    fwd = jax.jit(models.forward, static_argnums=0)
    t0 = time.perf_counter()
    logits = jax.block_until_ready(fwd(config, params, ids))
    t1 = time.perf_counter()
    print(f"model: {FLAGS.hf or FLAGS.preset} ({config.family}, {config.num_params:,} parameters, "
          f"{config.num_layers} layers, scan={config.scan_layers})")
    print(f"devices: {jax.devices()}")
    print(f"logits shape: {tuple(logits.shape)} dtype: {logits.dtype} "
          f"(first call incl. compile: {t1 - t0:.2f}s)")
    if not bool(jnp.isfinite(logits).all()):
        sys.exit("medjax.models: error: non-finite logits")


if __name__ == "__main__":
    app.run(main)
