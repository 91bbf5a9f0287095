"""objective.max_completion_length: responses truncated to it, and the vocabulary
projection cut to that many positions per row, statically (on several devices too),
with the same losses and gradients as computing every position."""

import re

import jax
import jax.numpy as jnp
import numpy as np
from conftest import load_config

from medjax import models
from medjax.data.pipeline import pipeline_from_config
from medjax.objectives.preference import dpo_loss
from medjax.parallel import make_mesh
from medjax.training.state import data_tools


def test_responses_are_truncated_and_the_loss_is_unchanged_on_eight_devices():
    k = 24
    config = load_config("dpo", **{"batch_size": 8, "seq_len": 96,
                                   "objective.max_completion_length": k})
    _, tok, tpl = data_tools(config)
    batch = next(iter(pipeline_from_config(config, tok, tpl, one_pass=True)))
    full = next(iter(pipeline_from_config(load_config("dpo", **{"batch_size": 8,
                                                                "seq_len": 96}),
                                          tok, tpl, one_pass=True)))
    responses = batch["loss_mask"].sum(-1)
    assert responses.max() == k and full["loss_mask"].sum(-1).max() > k  # truncated to k
    batch.pop("example_id")
    model = models.get_preset("llama3_tiny", vocab_size=128256)
    params = models.init_params(model, jax.random.key(0))
    ref = np.random.RandomState(0).uniform(-60, -20, (8, 2)).astype(np.float32)
    mesh = make_mesh(1, 8, 1)
    rows = jax.sharding.NamedSharding(mesh, jax.P(("data", "fsdp")))
    with jax.set_mesh(mesh):
        b = jax.device_put(dict({k_: jnp.asarray(v) for k_, v in batch.items()},
                                ref_logps=ref), rows)
        out, hlo = {}, {}
        for cut in (0, k):
            fn = jax.jit(jax.value_and_grad(
                lambda p, x, cut=cut: dpo_loss(model, p, x, chunk_size=16,
                                               max_completion=cut)[0]))
            out[cut] = fn(params, b)
            hlo[cut] = fn.lower(params, b).compile().as_text()
    np.testing.assert_allclose(float(out[k][0]), float(out[0][0]), rtol=1e-6)
    for x, y in zip(jax.tree.leaves(out[k][1]), jax.tree.leaves(out[0][1])):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-7)
    # the cut is compiled in: the vocabulary projection's loops run over ceil(24 / 16) = 2
    # chunks of sorted positions per row instead of 96 / 16 = 6
    trips = {c: {int(n) for n in re.findall(r"known_trip_count[^0-9]*(\d+)", t)}
             for c, t in hlo.items()}
    assert max(trips[0]) == 6 and max(trips[k]) == 2, trips
