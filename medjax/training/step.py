"""The train and eval steps: module-level pure functions over plain pytrees.

``state = {"step": int32[], "params": ..., "opt_state": ...}``. A loss function
is ``loss_fn(params, batch, rng) -> (loss, metrics)`` where ``loss`` is a mean
over ``metrics["weight"]`` items (tokens, pairs). Micro-batches are combined by
those weights, so gradient accumulation gives the same update as the whole
batch at once.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax


def split_microbatches(batch: dict, n: int) -> dict:
    """[B, ...] -> [n, B/n, ...]: micro-batch i holds rows i, i + n, i + 2n, ...

    Strided rather than contiguous: a batch sharded on its rows keeps every
    micro-batch spread over all devices, each device using only rows it
    already has (no data moves between devices or hosts), provided each
    device's rows are a multiple of n.
    """
    def one(x):
        if x.shape[0] % n:
            raise ValueError(f"batch of {x.shape[0]} does not split into {n} micro-batches")
        return x.reshape(x.shape[0] // n, n, *x.shape[1:]).swapaxes(0, 1)
    return jax.tree.map(one, batch)


def loss_and_grads(loss_fn, params, batch, rng, grad_accum: int = 1):
    """Weighted mean loss, metrics and gradients over ``grad_accum`` micro-batches."""
    def weighted(p, mb, r):
        loss, metrics = loss_fn(p, mb, r)
        w = metrics["weight"]
        return loss * w, (metrics, w)

    grad_fn = jax.value_and_grad(weighted, has_aux=True)
    if grad_accum == 1:
        (total, (metrics, w)), grads = grad_fn(params, batch, rng)
        metrics = jax.tree.map(lambda m: m * w, metrics)
    else:
        mbs = split_microbatches(batch, grad_accum)
        rngs = jax.random.split(rng, grad_accum)

        def body(carry, xs):
            g_acc, t_acc, m_acc, w_acc = carry
            mb, r = xs
            (t, (m, w)), g = grad_fn(params, mb, r)
            g_acc = jax.tree.map(jnp.add, g_acc, g)
            m_acc = jax.tree.map(lambda a, b: a + b * w, m_acc, m)
            return (g_acc, t_acc + t, m_acc, w_acc + w), None

        m_shape = jax.eval_shape(lambda: loss_fn(params, jax.tree.map(lambda x: x[0], mbs),
                                                 rng)[1])
        init = (jax.tree.map(jnp.zeros_like, params), jnp.zeros((), jnp.float32),
                jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), m_shape),
                jnp.zeros((), jnp.float32))
        (grads, total, metrics, w), _ = jax.lax.scan(body, init, (mbs, rngs))
    denom = jnp.maximum(w, 1e-9)
    grads = jax.tree.map(lambda g: g / denom, grads)
    metrics = jax.tree.map(lambda m: m / denom, metrics)
    metrics["weight"] = w
    return total / denom, metrics, grads


def train_step(state: dict, batch: dict, *, loss_fn, tx: optax.GradientTransformation,
               schedule, base_rng: jax.Array, grad_accum: int = 1):
    """One optimizer update on one global batch. Randomness: fold_in(base_rng, step).

    A step whose loss, gradient norm or update norm is not finite (e.g. a learning rate
    that overflows) leaves the parameters and the optimizer state as they were (the
    step count still advances: its batch was consumed) and reports
    ``metrics["nonfinite"] = 1``; the loop decides whether to stop.
    """
    rng = jax.random.fold_in(base_rng, state["step"])
    loss, metrics, grads = loss_and_grads(loss_fn, state["params"], batch, rng, grad_accum)
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    update_norm = optax.tree.norm(updates)
    params = optax.apply_updates(state["params"], updates)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(update_norm)
    keep = functools.partial(jax.tree.map, lambda new, old: jnp.where(finite, new, old))
    metrics = dict(metrics, loss=loss, grad_norm=grad_norm, update_norm=update_norm,
                   lr=schedule(state["step"]), nonfinite=(~finite).astype(jnp.int32))
    return {"step": state["step"] + 1, "params": keep(params, state["params"]),
            "opt_state": keep(opt_state, state["opt_state"])}, metrics


def eval_step(params, batch: dict, *, loss_fn):
    """Loss and metrics of one batch (no update), with its weight for averaging."""
    loss, metrics = loss_fn(params, batch, jax.random.key(0))
    return dict(metrics, loss=loss)
