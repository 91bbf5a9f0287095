"""What skipping prompt positions saves in the preference log-probs, on real batches.

    python benchmarks/preference_loss.py [--config=configs/dpo.py] [--config.key=value ...]
        [--steps=10]

Takes batches of the config's own preference data (the bundled pairs by
default), and times, in one run, forward + backward of the summed response
log-probs (`token_nll` over the final hidden states and the LM head, the
vocabulary-sized part of a DPO/KTO step) two ways: every position's logits
(`weights_bt=None`) and only the chunks that hold a response token (what
`medjax.objectives.preference.sequence_logps` does). Prints the fraction of
positions that are response tokens, both times and their ratio, and checks
that both give the same log-probs and gradients.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/dpo.py", "A preference config.",
                                lock_config=True)
flags.DEFINE_integer("steps", 10, "Timed batches per variant.")


def main(argv):
    del argv
    from medjax import models
    from medjax.data.pipeline import pipeline_from_config
    from medjax.objectives.lm import next_token_targets, token_nll
    from medjax.objectives.preference import flatten_pairs
    from medjax.training.state import data_tools

    config = FLAGS.config
    _, tok, template = data_tools(config)
    cfg = models.get_preset(config.model.preset, dtype=config.model.dtype)
    if config.model.vocab_size:
        cfg = cfg.replace(vocab_size=config.model.vocab_size)
    params = models.init_params(cfg, jax.random.key(0))
    pipe = pipeline_from_config(config, tok, template)
    batches = [flatten_pairs({k: v for k, v in next(pipe).items() if k != "example_id"})
               for _ in range(FLAGS.steps + 1)]
    chunk = config.objective.loss_chunk_size

    def logps(p, rows, skip):
        hidden = models.forward_hidden(cfg, p, rows["input_ids"], segment_ids=rows["segment_ids"],
                                       positions=rows["positions"])
        targets, weights = next_token_targets(rows)
        nll, _ = token_nll(hidden, models.lm_head_kernel(cfg, p), targets, chunk_size=chunk,
                           weights_bt=weights if skip else None)
        return -(nll * weights).sum()

    fns = {skip: jax.jit(jax.value_and_grad(functools.partial(logps, skip=skip)))
           for skip in (False, True)}
    (v0, g0), (v1, g1) = (fns[s](params, batches[0]) for s in (False, True))
    np.testing.assert_allclose(v1, v0, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6), g1, g0)
    times = {}
    for skip in (False, True, False, True):  # interleaved: machine load hits both alike
        t0 = time.perf_counter()
        for b in batches[1:]:
            jax.block_until_ready(fns[skip](params, b))
        times.setdefault(skip, []).append((time.perf_counter() - t0) / FLAGS.steps)
    frac = np.mean([float(next_token_targets(b)[1].mean()) for b in batches])
    rows, length = batches[0]["input_ids"].shape
    print(f"config: {config.objective.name}, {rows} rows x {length} tokens, vocab "
          f"{cfg.vocab_size}, hidden {cfg.hidden_size}, loss_chunk_size {chunk}")
    print(f"response tokens: {frac:.1%} of positions")
    every, skipping = min(times[False]), min(times[True])
    print(f"forward+backward of the response log-probs: every position {every * 1e3:.1f} ms, "
          f"response chunks only {skipping * 1e3:.1f} ms -> {every / skipping:.2f}x")
    print("log-probs and gradients agree (rtol 1e-5 / 1e-3)")


if __name__ == "__main__":
    app.run(main)
