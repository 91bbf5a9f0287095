"""Mixture-of-experts feed-forward (Mixtral) for the one decoder.

A layer with ``config.num_experts > 0`` has, in place of the dense MLP::

    layers/moe/router     [L, embed, experts]           (HF block_sparse_moe.gate)
    layers/moe/gate_proj  [L, experts, embed, mlp]      (HF experts.{j}.w1)
    layers/moe/up_proj    [L, experts, embed, mlp]      (HF experts.{j}.w3)
    layers/moe/down_proj  [L, experts, mlp, embed]      (HF experts.{j}.w2)

Routing (as transformers' Mixtral): router logits in the compute dtype, softmax in
float32, the top ``experts_per_token`` experts, their weights renormalised to sum to 1;
the output is the weighted sum of those experts' SwiGLU ``down(silu(gate x) * up x)``.

Two implementations of the same function (``config.moe_impl``):
  grouped  dropless: each token's k assignments sorted by expert, one grouped matmul per
           projection (``jax.lax.ragged_dot``), scattered back. With jax 0.10.2 a grouped
           GEMM only where the backend has one: on CPU JAX lowers ragged_dot to one dense
           dot over a group-masked copy of the input ([rows, experts x embed]: ``experts``
           times the grouped GEMM's FLOPs, ``k`` times the dense implementation's), and on
           NVIDIA GPUs XLA's RaggedDotRewriter expands it the same way unless
           ``--xla_gpu_experimental_use_ragged_dot_fusion=true`` (cuDNN >= 9.22) makes the
           forward-shaped ones cuDNN grouped GEMMs. Under a mesh it runs per batch
           shard (``experts_grouped_sharded``: a ``shard_map`` over data x fsdp, each
           device sorting its own tokens, the experts gathered as FSDP gathers a dense
           MLP), so it moves what the dense implementation moves (benchmarks/moe.py
           --part=collectives, RESULTS.md).
  dense    every expert on every token, combined with the routing weights (one-hot):
           ``experts / k`` times the FLOPs, local to each batch shard; the reference for
           tests.

The load-balancing loss is transformers' ``load_balancing_loss_func``: over all layers
and real tokens pooled, ``E * sum_e f_e * P_e`` with ``f_e`` the fraction of top-k
assignments to expert ``e`` and ``P_e`` its mean router probability. Each layer returns
its sums (``stats``); ``aux_loss`` combines them.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

MOE_IMPLS = ("grouped", "dense")


def route(config, router_logits: jax.Array):
    """(top-k expert ids [..., k], renormalised weights [..., k] float32, probs [..., E])."""
    probs = jax.nn.softmax(router_logits.astype(jnp.float32), axis=-1)
    weights, ids = jax.lax.top_k(probs, config.experts_per_token)
    weights = weights / jnp.sum(weights, axis=-1, keepdims=True)
    return ids, weights, probs


def _swiglu_dense(x_btd, gate, up, down, dtype):
    h = jax.nn.silu(jnp.einsum("btd,edf->btef", x_btd, gate.astype(dtype))) * jnp.einsum(
        "btd,edf->btef", x_btd, up.astype(dtype))
    return jnp.einsum("btef,efd->bted", h, down.astype(dtype))


def experts_dense(config, x_btd, ids, weights, gate, up, down):
    """All experts on all tokens, combined by the routing weights (reference)."""
    dt = x_btd.dtype
    combine = jnp.sum(jax.nn.one_hot(ids, config.num_experts, dtype=jnp.float32)
                      * weights[..., None], axis=-2)  # [b, t, E]
    y = _swiglu_dense(x_btd, gate, up, down, dt)  # [b, t, E, d]
    return jnp.einsum("bted,bte->btd", y.astype(jnp.float32), combine).astype(dt)


def experts_grouped(config, x_btd, ids, weights, gate, up, down):
    """Dropless: assignments sorted by expert, ``ragged_dot`` per projection."""
    b, t, d = x_btd.shape
    k, E = config.experts_per_token, config.num_experts
    dt = x_btd.dtype
    x_nd = x_btd.reshape(b * t, d)
    flat = ids.reshape(-1)  # [n*k] expert of each assignment
    order = jnp.argsort(flat, stable=True)
    token = order // k  # the token of each sorted assignment
    sizes = jnp.bincount(flat, length=E).astype(jnp.int32)
    xs = jnp.take(x_nd, token, axis=0)
    h = jax.nn.silu(jax.lax.ragged_dot(xs, gate.astype(dt), sizes)) * jax.lax.ragged_dot(
        xs, up.astype(dt), sizes)
    ys = jax.lax.ragged_dot(h, down.astype(dt), sizes)  # [n*k, d]
    w = jnp.take(weights.reshape(-1), order)[:, None]
    y = jnp.zeros((b * t, d), jnp.float32).at[token].add(ys.astype(jnp.float32) * w)
    return y.astype(dt).reshape(b, t, d)


def experts_grouped_sharded(config, x_btd, ids, weights, gate, up, down):
    """The grouped path per batch shard: under a mesh, a ``shard_map`` over the batch axes
    (data, fsdp) lets each device sort and multiply only its own tokens' assignments, with
    the experts' weights gathered as FSDP gathers a dense MLP's (the ``mlp`` dimension stays
    split over ``tensor``; the partial outputs of the down projection are summed over it).
    Without a mesh (or on one device) it is ``experts_grouped``."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1:
        return experts_grouped(config, x_btd, ids, weights, gate, up, down)
    from jax.sharding import PartitionSpec as P

    from ..parallel.sharding import batch_axes
    batch = batch_axes()
    tensor = "tensor" if "tensor" in mesh.axis_names and mesh.shape["tensor"] > 1 else None
    shards = math.prod(mesh.shape[a] for a in batch)
    if x_btd.shape[0] % shards or (tensor and config.intermediate_size % mesh.shape[tensor]):
        return experts_grouped(config, x_btd, ids, weights, gate, up, down)  # e.g. init
    rows = P(batch or None)

    def local(x, i, w, g, u, d):
        y = experts_grouped(config, x, i, w, g, u, d)
        return jax.lax.psum(y, tensor) if tensor else y

    return jax.shard_map(local, in_specs=(rows, rows, rows, P(None, None, tensor),
                                          P(None, None, tensor), P(None, tensor, None)),
                         out_specs=rows, check_vma=False)(x_btd, ids, weights, gate, up, down)


def stats(config, probs, ids, segment_ids) -> dict:
    """One layer's sums for the load-balancing loss: assignments per expert, router
    probability per expert, over real tokens (``segment_ids != 0``; all without)."""
    E = config.num_experts
    real = (jnp.ones(ids.shape[:2], jnp.float32) if segment_ids is None
            else (segment_ids != 0).astype(jnp.float32))
    counts = jnp.sum(jax.nn.one_hot(ids, E, dtype=jnp.float32) * real[..., None, None],
                     axis=(0, 1, 2))
    return {"assigned": counts, "prob": jnp.sum(probs * real[..., None], axis=(0, 1)),
            "tokens": jnp.sum(real)}


def aux_loss(config, layer_stats: dict) -> tuple[jax.Array, jax.Array]:
    """(transformers' load-balancing loss, each expert's share of the assignments [E]) from
    per-layer sums stacked ``[L, ...]``."""
    tokens = jnp.maximum(jnp.sum(layer_stats["tokens"]), 1.0)
    f = jnp.sum(layer_stats["assigned"], axis=0) / tokens  # sums over k: f_e pooled
    p = jnp.sum(layer_stats["prob"], axis=0) / tokens
    load = f / config.experts_per_token
    return config.num_experts * jnp.sum(f * p), load
