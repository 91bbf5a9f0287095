"""Next-token loss (continued pretraining and SFT), computed in vocabulary-safe chunks.

The logits of a 128k vocabulary at 8k tokens would take 4 GB per sequence in
float32. ``token_nll`` never materialises them: it scans over chunks of
positions, computes each chunk's logits (float32 accumulation), keeps only the
per-token log-likelihood and log-partition, and is rematerialised in the
backward pass, so peak memory is one chunk's logits.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ..models import ModelConfig, forward_hidden, lm_head_kernel


def next_token_targets(batch: dict) -> tuple[jax.Array, jax.Array]:
    """Targets [b, t] and weights [b, t] for predicting token t+1 at position t.

    A position has a target only if the next token is in the same (non-padding)
    segment and is marked trainable by ``loss_mask`` (SFT masks the prompt).
    """
    ids = batch["input_ids"]
    seg = batch.get("segment_ids")
    if seg is None:
        seg = jnp.ones_like(ids)
    mask = batch.get("loss_mask")
    if mask is None:
        mask = jnp.ones(ids.shape, jnp.float32)
    targets = jnp.concatenate([ids[:, 1:], jnp.zeros_like(ids[:, :1])], axis=1)
    same = (seg[:, 1:] == seg[:, :-1]) & (seg[:, 1:] != 0)
    weights = jnp.concatenate([same * mask[:, 1:].astype(jnp.float32),
                               jnp.zeros_like(mask[:, :1], jnp.float32)], axis=1)
    return targets, weights


def token_nll(hidden_btd: jax.Array, kernel_dv: jax.Array, targets_bt: jax.Array, *,
              chunk_size: int = 1024) -> tuple[jax.Array, jax.Array]:
    """Per-token negative log-likelihood and log-partition [b, t], chunked over t."""
    b, t, d = hidden_btd.shape
    chunk = min(chunk_size, t)
    pad = -t % chunk
    if pad:
        hidden_btd = jnp.pad(hidden_btd, ((0, 0), (0, pad), (0, 0)))
        targets_bt = jnp.pad(targets_bt, ((0, 0), (0, pad)))
    n = (t + pad) // chunk
    h_cbkd = hidden_btd.reshape(b, n, chunk, d).swapaxes(0, 1)
    y_cbk = targets_bt.reshape(b, n, chunk).swapaxes(0, 1)

    @functools.partial(jax.checkpoint, prevent_cse=False)
    def one(h_bkd, y_bk):
        logits = jnp.einsum("bkd,dv->bkv", h_bkd, kernel_dv.astype(h_bkd.dtype),
                            preferred_element_type=jnp.float32)
        lse = jax.nn.logsumexp(logits, axis=-1)
        target_logit = jnp.take_along_axis(logits, y_bk[..., None], axis=-1)[..., 0]
        return lse - target_logit, lse

    _, (nll, lse) = jax.lax.scan(lambda c, xs: (c, one(*xs)), None, (h_cbkd, y_cbk))
    nll = nll.swapaxes(0, 1).reshape(b, -1)[:, :t]
    lse = lse.swapaxes(0, 1).reshape(b, -1)[:, :t]
    return nll, lse


def lm_loss(config: ModelConfig, params, batch: dict, rng=None, *, z_loss: float = 0.0,
            chunk_size: int = 1024, neftune_alpha: float = 0.0):
    """Mean next-token NLL over trainable targets, plus optional z-loss.

    Returns ``(loss, metrics)``; ``metrics["weight"]`` is the number of target
    tokens the mean is over (used to combine micro-batches exactly).
    """
    hidden = forward_hidden(config, params, batch["input_ids"],
                            segment_ids=batch.get("segment_ids"),
                            positions=batch.get("positions"),
                            neftune=(neftune_alpha, rng) if neftune_alpha else None)
    targets, weights = next_token_targets(batch)
    nll, lse = token_nll(hidden, lm_head_kernel(config, params), targets, chunk_size=chunk_size)
    count = weights.sum()
    denom = jnp.maximum(count, 1.0)
    nll_mean = (nll * weights).sum() / denom
    loss = nll_mean
    metrics = {"nll": nll_mean, "weight": count}
    if z_loss:
        z = (jnp.square(lse) * weights).sum() / denom
        loss = loss + z_loss * z
        metrics["z_loss"] = z
    return loss, metrics
