"""Drawing one token per row: medjax.generate.draw vs jax.random.categorical.

    python benchmarks/sampling.py [--rows=128] [--vocab=128256] [--repeats=10]

Both draw from softmax(logits) of a [rows, vocab] float32 array inside one jitted
function (the decode loop's sampling step at temperature 1, no top-k / top-p);
jax.random.categorical adds Gumbel noise to every id (one threefry draw each), draw
takes two uniforms per row (a block of 512 ids, then an id in it). Also timed:
argmax (greedy) and log_softmax (one pass of exp over the logits), as floors.
Reported: milliseconds per call, best of ``repeats`` after one warm-up call.
"""

from __future__ import annotations

import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_integer("rows", 128, "Rows (prompts x samples in a generation call).")
flags.DEFINE_integer("vocab", 128256, "Vocabulary (Llama-3's by default).")
flags.DEFINE_integer("repeats", 10, "Timed calls.")


def main(argv):
    del argv
    import jax
    import jax.numpy as jnp
    import numpy as np

    from medjax.generate import draw
    x = jnp.asarray(np.random.RandomState(0).normal(0, 2, (FLAGS.rows, FLAGS.vocab)),
                    jnp.float32)
    key = jax.random.key(0)
    fns = {"jax.random.categorical": lambda k, x: jax.random.categorical(k, x, axis=-1),
           "medjax draw": lambda k, x: draw(x, k),
           "argmax (floor)": lambda k, x: jnp.argmax(x, axis=-1),
           "log_softmax (floor)": lambda k, x: jax.nn.log_softmax(x, axis=-1)}
    print(f"{FLAGS.rows} rows x {FLAGS.vocab} ids, float32; JAX {jax.__version__} on "
          f"{jax.devices()[0].platform}")
    for name, fn in fns.items():
        f = jax.jit(fn)
        f(key, x).block_until_ready()
        best = float("inf")
        for _ in range(FLAGS.repeats):
            t = time.perf_counter()
            f(key, x).block_until_ready()
            best = min(best, time.perf_counter() - t)
        print(f"{name:26s} {best * 1e3:8.1f} ms")


if __name__ == "__main__":
    app.run(main)
