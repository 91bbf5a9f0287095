"""Bradley-Terry reward models: a scalar head on the decoder's last non-pad token.

The head is ``params["reward_head"]["kernel"] [hidden]`` (logical axis
``embed``), applied to the final-norm hidden state of each row's last real
token; the LM head is not used. Loss per pair:
``-log sigmoid(r_c - r_r - margin) + centering * (r_c + r_r)^2`` (references
section 4), on the preference pipeline's ``[pairs, 2, seq_len]`` rows.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ..models import ModelConfig, forward_hidden, segments_at_most
from .preference import flatten_pairs
from .registry import Objective, register


def init_reward_head(config: ModelConfig, rng: jax.Array) -> dict:
    std = 1.0 / np.sqrt(config.hidden_size + 1)
    kernel = std * jax.random.normal(rng, (config.hidden_size,), jnp.float32)
    return {"kernel": kernel.astype(jnp.dtype(config.param_dtype))}


def last_token_index(segment_ids: jax.Array) -> jax.Array:
    """Index of each row's last non-pad token ``[rows]`` (0 for an empty row)."""
    positions = jnp.arange(segment_ids.shape[-1])
    return jnp.max(jnp.where(segment_ids != 0, positions, 0), axis=-1)


def _packed_rewards(config: ModelConfig, params, batch: dict):
    """Rewards and sequence presence ``[rows, seq_len, 2]`` of a packed batch (pair k of a
    row at segments 2k + 1, 2k + 2): each sequence scored at its last token."""
    seg = batch["segment_ids"]
    rows, length = seg.shape
    # each sequence of a packed row is at most seq_len = length / 2 tokens
    hidden = forward_hidden(segments_at_most(config, length // 2), params, batch["input_ids"],
                            segment_ids=seg, positions=batch["positions"])
    r_bt = jnp.einsum("btd,d->bt", hidden.astype(jnp.float32),
                      params["reward_head"]["kernel"].astype(jnp.float32))
    index = jnp.where(seg > 0, seg - 1, length)
    t = jnp.broadcast_to(jnp.arange(length), (rows, length))
    last = jax.vmap(lambda x, i: jax.ops.segment_max(x, i, num_segments=length))(t, index)
    present = last >= 0
    r = jnp.take_along_axis(r_bt, jnp.clip(last, 0, length - 1), axis=1)
    r = jnp.where(present, r, 0.0)
    return r.reshape(rows, length // 2, 2), present.reshape(rows, length // 2, 2)


def rewards(config: ModelConfig, params, batch: dict) -> jax.Array:
    """Scalar rewards ``[pairs, 2]`` (float32); packed batches: ``[rows, seq_len, 2]``."""
    if batch["input_ids"].ndim == 2:
        return _packed_rewards(config, params, batch)[0]
    rows = flatten_pairs(batch)
    hidden = forward_hidden(config, params, rows["input_ids"], segment_ids=rows["segment_ids"],
                            positions=rows["positions"])
    last = last_token_index(rows["segment_ids"])
    h = jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]
    r = jnp.einsum("rd,d->r", h.astype(jnp.float32),
                   params["reward_head"]["kernel"].astype(jnp.float32))
    return r.reshape(-1, 2)


def bradley_terry(r_chosen, r_rejected, *, margin: float = 0.0, centering: float = 0.0):
    return (-jax.nn.log_sigmoid(r_chosen - r_rejected - margin)
            + centering * jnp.square(r_chosen + r_rejected))


def reward_loss(config: ModelConfig, params, batch: dict, rng=None, *, margin: float = 0.0,
                centering: float = 0.0):
    del rng
    if batch["input_ids"].ndim == 2:  # packed (data.pack_pairs): every slot of every row
        r, present = _packed_rewards(config, params, batch)
        r, real = r.reshape(-1, 2), present[..., 0].reshape(-1).astype(jnp.float32)
    else:
        r = rewards(config, params, batch)
        real = (batch["segment_ids"][:, 0].max(-1) > 0).astype(jnp.float32)
    n = jnp.maximum(real.sum(), 1.0)
    losses = bradley_terry(r[:, 0], r[:, 1], margin=margin, centering=centering)

    def mean(x):
        return jnp.where(real > 0, x, 0.0).sum() / n

    metrics = {"accuracy": mean((r[:, 0] > r[:, 1]).astype(jnp.float32)),
               "reward/chosen": mean(r[:, 0]), "reward/rejected": mean(r[:, 1]),
               "margin": mean(r[:, 0] - r[:, 1]), "weight": real.sum()}
    return mean(losses), metrics


# --------------------------------------------------------------------------- unit
def _reward_config(c) -> None:
    c.objective.margin = 0.0
    c.objective.centering = 0.0  # coefficient of mean((r_c + r_r)^2)


def _make_reward_loss(o, model_config: ModelConfig):
    return functools.partial(reward_loss, model_config, margin=o.margin, centering=o.centering)


register(Objective(
    name="reward", kind="preference", add_config=_reward_config, make_loss=_make_reward_loss,
    metrics=("accuracy", "reward/chosen", "reward/rejected", "margin"), head="reward",
    init_head=init_reward_head, title="reward model"))
