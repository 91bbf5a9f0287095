"""Reward model: Bradley-Terry loss vs float64, gradient, and the last-token head."""

import jax
import jax.numpy as jnp
import numpy as np

from medjax.models import forward_hidden, get_preset, init_params
from medjax.objectives.reward import (bradley_terry, init_reward_head, last_token_index,
                                      reward_loss, rewards)


def test_bradley_terry_matches_float64_and_finite_differences():
    rs = np.random.RandomState(0)
    rc, rr = rs.normal(0, 2, 12), rs.normal(0, 2, 12)
    want = np.logaddexp(0, -(rc - rr - 0.5)) + 0.01 * (rc + rr) ** 2
    got = bradley_terry(jnp.asarray(rc), jnp.asarray(rr), margin=0.5, centering=0.01)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    g = jax.grad(lambda a: bradley_terry(a, jnp.asarray(rr, jnp.float32), margin=0.5,
                                         centering=0.01).sum())(jnp.asarray(rc, jnp.float32))
    h = 1e-4
    fd = ((np.logaddexp(0, -(rc + h - rr - 0.5)) + 0.01 * (rc + h + rr) ** 2)
          - (np.logaddexp(0, -(rc - h - rr - 0.5)) + 0.01 * (rc - h + rr) ** 2)) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-3, atol=1e-5)


def test_reward_is_the_head_on_the_last_real_token():
    config = get_preset("llama3_tiny")
    params = init_params(config, jax.random.key(0))
    params["reward_head"] = init_reward_head(config, jax.random.key(1))
    rs = np.random.RandomState(2)
    batch = {k: np.zeros((1, 2, 16), np.int32)
             for k in ("input_ids", "segment_ids", "positions", "loss_mask")}
    for r, n in enumerate((9, 13)):
        batch["input_ids"][0, r, :n] = rs.randint(0, 512, n)
        batch["segment_ids"][0, r, :n] = 1
        batch["positions"][0, r, :n] = np.arange(n)
    assert last_token_index(jnp.asarray(batch["segment_ids"][0])).tolist() == [8, 12]
    got = np.asarray(rewards(config, params, batch))
    for r, n in enumerate((9, 13)):  # the row alone, unpadded
        h = forward_hidden(config, params, batch["input_ids"][0, r:r + 1, :n])
        want = float(np.asarray(h[0, -1]) @ np.asarray(params["reward_head"]["kernel"]))
        np.testing.assert_allclose(got[0, r], want, rtol=1e-4, atol=1e-5)
    loss, m = reward_loss(config, params, batch)
    np.testing.assert_allclose(loss, np.logaddexp(0, -(got[0, 0] - got[0, 1])), rtol=1e-5)
    assert float(m["accuracy"]) == float(got[0, 0] > got[0, 1])
