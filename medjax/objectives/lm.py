"""Next-token loss (continued pretraining and SFT), computed in vocabulary-safe chunks.

The logits of a 128k vocabulary at 8k tokens would take 4 GB per sequence in
float32. ``token_nll`` never materialises them: it scans over chunks of
positions, computes each chunk's logits (float32 accumulation), keeps only the
per-token log-likelihood and log-partition, and its custom backward pass
recomputes each chunk's logits, so peak memory is one chunk's logits.

The language-model loss itself (pretraining, SFT) is a weighted sum of per-token
terms whose weights are known before the backward pass, so ``weighted_nll_sums``
goes further: its forward pass computes each chunk's logits once and, right
there, the chunk's contribution to the gradients of the hidden states and of the
output projection; the backward pass only scales them by the incoming cotangent.
The vocabulary projection then costs three matmuls instead of four (no recompute)
and still holds one chunk's logits at a time (``objective.lm_head_grad``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ..models import ModelConfig, forward_hidden, lm_head_kernel
from ..models.decoder import project
from .registry import Objective, register


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


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _chunked_nll(h_cbkd, kernel_dv, y_cbk, active_c, skip: bool, keep: bool):
    return _chunked_nll_fwd(h_cbkd, kernel_dv, y_cbk, active_c, skip, False)[0]


# The chunk's three vocabulary matmuls on [rows * chunk, ...] 2-D operands: with [rows,
# chunk] kept as two axes the kernel's gradient contracts over both, which XLA's CPU
# backend lowered with a transpose of an operand first (decoder.project).
def _chunk_logits(h_bkd, kernel_dv):
    return project(h_bkd, kernel_dv.astype(h_bkd.dtype), preferred_element_type=jnp.float32)


def _hidden_grad(d_bkv, kernel_dv, dtype):
    """d hidden = d logits @ kernel.T, ``[rows, chunk, hidden]`` in float32."""
    return project(d_bkv, kernel_dv.astype(dtype).T, preferred_element_type=jnp.float32)


def _kernel_grad(h_bkd, d_bkv):
    """d kernel = hidden.T @ d logits over the chunk's positions, in float32."""
    b, k, d = h_bkd.shape
    return jnp.einsum("xd,xv->dv", h_bkd.reshape(b * k, d), d_bkv.reshape(b * k, -1),
                      preferred_element_type=jnp.float32)


def _chunked_nll_fwd(h_cbkd, kernel_dv, y_cbk, active_c, skip, keep):
    """Per chunk: nll and lse; with ``keep`` also the softmax, kept for the backward pass
    (no recompute of the logits there; a skipped chunk keeps zeros)."""
    def one(h_bkd, y_bk):
        logits = _chunk_logits(h_bkd, kernel_dv)
        lse = jax.nn.logsumexp(logits, axis=-1)
        target_logit = jnp.take_along_axis(logits, y_bk[..., None], axis=-1)[..., 0]
        out = (lse - target_logit, lse)
        return out + (jnp.exp(logits - lse[..., None]),) if keep else out

    def none(h_bkd, y_bk):
        zeros = jnp.zeros(y_bk.shape, jnp.float32)
        out = (zeros, zeros)
        return out + (jnp.zeros(y_bk.shape + kernel_dv.shape[-1:], jnp.float32),) \
            if keep else out

    def body(c, xs):
        h_bkd, y_bk, act = xs
        return c, (jax.lax.cond(act, one, none, h_bkd, y_bk) if skip else one(h_bkd, y_bk))

    _, (nll, lse, *probs) = jax.lax.scan(body, None, (h_cbkd, y_cbk, active_c))
    return (nll, lse), (h_cbkd, kernel_dv, y_cbk, active_c, lse, probs)


def _chunked_nll_bwd(skip, keep, res, cotangents):
    """d logits = softmax * (g_nll + g_lse) - onehot(target) * g_nll, the softmax kept by
    the forward pass or recomputed from each chunk's logits once. The kernel's gradient
    accumulates in float32."""
    h_cbkd, kernel_dv, y_cbk, active_c, lse_cbk, probs = res
    g_nll, g_lse = cotangents

    def grads(dk, h_bkd, y_bk, lse_bk, gn_bk, gl_bk, *kept):
        p = kept[0] if keep else jnp.exp(_chunk_logits(h_bkd, kernel_dv) - lse_bk[..., None])
        d = p * (gn_bk + gl_bk)[..., None]
        d = d - jax.nn.one_hot(y_bk, p.shape[-1], dtype=d.dtype) * gn_bk[..., None]
        d = d.astype(h_bkd.dtype)
        dh = _hidden_grad(d, kernel_dv, h_bkd.dtype).astype(h_bkd.dtype)
        dk = dk + _kernel_grad(h_bkd, d)
        return dk, dh

    def none(dk, h_bkd, *_):
        return dk, jnp.zeros_like(h_bkd)

    def body(dk, xs):
        act, *rest = xs
        return jax.lax.cond(act, grads, none, dk, *rest) if skip else grads(dk, *rest)

    dk0 = jnp.zeros(kernel_dv.shape, jnp.float32)
    dk, dh = jax.lax.scan(body, dk0, (active_c, h_cbkd, y_cbk, lse_cbk, g_nll, g_lse,
                                      *probs))
    return dh, dk.astype(kernel_dv.dtype), None, None


_chunked_nll.defvjp(_chunked_nll_fwd, _chunked_nll_bwd)


def _one_device() -> bool:
    """Whether the computation being traced runs on a single device."""
    mesh = jax.sharding.get_abstract_mesh()
    return jax.device_count() == 1 if mesh.empty else mesh.size == 1


def _rows_only_split() -> tuple[str, ...]:
    """The batch axes (data, fsdp) when the current mesh splits rows over them and nothing
    else (no tensor split); else ()."""
    from ..parallel.sharding import batch_axes, batch_divisor
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1 or batch_divisor() != mesh.size:
        return ()
    return batch_axes()


def token_nll(hidden_btd: jax.Array, kernel_dv: jax.Array, targets_bt: jax.Array, *,
              chunk_size: int = 1024, weights_bt: jax.Array | None = None,
              skip: bool | None = None, max_weighted: int = 0,
              keep_gb: float = 0.0) -> tuple[jax.Array, jax.Array]:
    """Per-token negative log-likelihood and log-partition [b, t], chunked over t.

    The backward pass recomputes each chunk's logits (a custom VJP), so neither
    pass holds more than one chunk's ``[b, chunk, vocab]`` float32 logits.

    With ``weights_bt``, positions of weight 0 (prompts, padding) get no logits:
    each row's weighted positions are moved to its front, and a chunk in which
    no row has a weighted position is skipped, forward and backward. Results
    at unweighted positions are 0. Rows stay where they are, so a batch
    sharded over devices stays sharded. For preference data, where responses
    are a fraction of each row, this cuts the vocabulary projection (the bulk
    of the work for a 128k vocabulary) to about that fraction.

    ``skip`` None (default): skipping on. On several devices whose mesh splits only rows
    (data, fsdp; tensor 1) each device runs this on its own rows (a ``shard_map``: the
    kernel gathered once before, its gradient summed after), so the skip's branches hold
    no collective and every device skips the chunks its own rows do not need. On a mesh
    that splits anything else (tensor), or rows that do not divide over it, skipping is
    off: XLA's SPMD partitioner put collectives inside the skip's branches and did not
    keep the branch the same on every device, and the train step deadlocked (seen on 8
    CPU devices in the custom backward pass). ``skip=False``: off; results are the same.

    ``max_weighted`` > 0: no row has more weighted positions than that (DPO with
    ``objective.max_completion_length``: responses are truncated to it), so the logits are
    computed for that many sorted positions per row only: a static cut with no control
    flow.

    ``keep_gb`` > 0: when every chunk's float32 softmax fits in that many GiB (per device,
    by the shapes), the forward pass keeps it for the backward pass, which then does not
    recompute the logits (three vocabulary-sized matmuls instead of four; the same
    values).
    """
    batch = _rows_only_split() if skip is None and weights_bt is not None else ()
    if batch and hidden_btd.shape[0] % jax.sharding.get_abstract_mesh().size == 0:
        from jax.sharding import PartitionSpec as P
        rows = P(batch)
        local = functools.partial(_token_nll, chunk_size=chunk_size, skip=True,
                                  max_weighted=max_weighted, keep_gb=keep_gb)
        return jax.shard_map(
            lambda h, k, y, w: local(h, k, y, weights_bt=w),
            in_specs=(rows, P(), rows, rows), out_specs=(rows, rows),
            check_vma=False)(hidden_btd, kernel_dv, targets_bt, weights_bt)
    if skip is None:
        skip = _one_device()
    return _token_nll(hidden_btd, kernel_dv, targets_bt, chunk_size=chunk_size,
                      weights_bt=weights_bt, skip=skip, max_weighted=max_weighted,
                      keep_gb=keep_gb)


def _token_nll(hidden_btd, kernel_dv, targets_bt, *, chunk_size, weights_bt, skip,
               max_weighted, keep_gb=0.0):
    b, t, d = hidden_btd.shape
    full_t = t
    order = None
    active_bt = jnp.ones((b, t), bool)
    if weights_bt is not None:
        order = jnp.argsort(weights_bt <= 0, axis=1, stable=True)  # weighted first
        inverse = jnp.argsort(order, axis=1)
        hidden_btd = _permute_positions(hidden_btd, order, inverse)
        targets_bt = jnp.take_along_axis(targets_bt, order, axis=1)
        active_bt = jnp.take_along_axis(weights_bt, order, axis=1) > 0
        if 0 < max_weighted < t:  # no row has more: a static cut, on any number of devices
            hidden_btd, targets_bt = hidden_btd[:, :max_weighted], targets_bt[:, :max_weighted]
            active_bt = active_bt[:, :max_weighted]
            t = max_weighted
    chunk = min(chunk_size, t)
    pad = -t % chunk
    if pad:
        hidden_btd = jnp.pad(hidden_btd, ((0, 0), (0, pad), (0, 0)))
        targets_bt = jnp.pad(targets_bt, ((0, 0), (0, pad)))
        active_bt = jnp.pad(active_bt, ((0, 0), (0, pad)))
    n = (t + pad) // chunk
    h_cbkd = hidden_btd.reshape(b, n, chunk, d).swapaxes(0, 1)
    y_cbk = targets_bt.reshape(b, n, chunk).swapaxes(0, 1)
    active_c = active_bt.reshape(b, n, chunk).any(axis=(0, 2))
    kept = n * b * chunk * kernel_dv.shape[-1] * 4  # bytes of every chunk's softmax
    nll, lse = _chunked_nll(h_cbkd, kernel_dv, y_cbk, active_c,
                            bool(skip) and order is not None and n > 1,
                            0 < kept <= keep_gb * 2 ** 30)
    nll = nll.swapaxes(0, 1).reshape(b, -1)[:, :t]
    lse = lse.swapaxes(0, 1).reshape(b, -1)[:, :t]
    if order is not None:  # zero where unweighted, then back to the original positions
        nll = jnp.where(active_bt[:, :t], nll, 0.0)
        lse = jnp.where(active_bt[:, :t], lse, 0.0)
        if t < full_t:
            nll = jnp.pad(nll, ((0, 0), (0, full_t - t)))
            lse = jnp.pad(lse, ((0, 0), (0, full_t - t)))
        nll = jnp.take_along_axis(nll, inverse, axis=1)
        lse = jnp.take_along_axis(lse, inverse, axis=1)
    return nll, lse


def _chunks(x_bt, chunk: int):
    """[b, t, ...] -> [t / chunk, b, chunk, ...] (t padded with zeros to a multiple)."""
    b, t = x_bt.shape[:2]
    pad = -t % chunk
    if pad:
        x_bt = jnp.pad(x_bt, [(0, 0), (0, pad)] + [(0, 0)] * (x_bt.ndim - 2))
    return x_bt.reshape((b, (t + pad) // chunk, chunk) + x_bt.shape[2:]).swapaxes(0, 1)


def _sums_chunk(h_bkd, kernel_dv, y_bk, w_bk):
    logits = _chunk_logits(h_bkd, kernel_dv)
    lse = jax.nn.logsumexp(logits, axis=-1)
    target = jnp.take_along_axis(logits, y_bk[..., None], axis=-1)[..., 0]
    return logits, lse, ((lse - target) * w_bk).sum(), (jnp.square(lse) * w_bk).sum()


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _weighted_sums(h_cbkd, kernel_dv, y_cbk, w_cbk, active_c, z_coef: float, skip: bool):
    def one(h_bkd, y_bk, w_bk):
        _, _, nll, z = _sums_chunk(h_bkd, kernel_dv, y_bk, w_bk)
        return nll, z

    def none(*_):
        return jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32)

    def body(acc, xs):
        act, *chunk = xs
        nll, z = jax.lax.cond(act, one, none, *chunk) if skip else one(*chunk)
        return (acc[0] + nll, acc[1] + z), None

    zero = jnp.zeros((), jnp.float32)
    (nll, z), _ = jax.lax.scan(body, (zero, zero), (active_c, h_cbkd, y_cbk, w_cbk))
    return nll + z_coef * z, (nll, z)


def _weighted_sums_fwd(h_cbkd, kernel_dv, y_cbk, w_cbk, active_c, z_coef, skip):
    """Sums and, per chunk, d total / d logits = w * (softmax * (1 + 2 z lse) - onehot)
    pushed through the projection at once: dh per chunk, dk accumulated in float32. With
    ``skip``, a chunk whose ``active_c`` is false (no weighted position) is not computed:
    its dh is 0 and dk unchanged."""
    def grads(h_bkd, y_bk, w_bk, dk):
        logits, lse, n, zz = _sums_chunk(h_bkd, kernel_dv, y_bk, w_bk)
        scale = w_bk * (1.0 + 2.0 * z_coef * lse) if z_coef else w_bk
        d = jnp.exp(logits - lse[..., None]) * scale[..., None]
        d = d - jax.nn.one_hot(y_bk, logits.shape[-1], dtype=d.dtype) * w_bk[..., None]
        d = d.astype(h_bkd.dtype)
        dh = _hidden_grad(d, kernel_dv, h_bkd.dtype)
        dk = dk + _kernel_grad(h_bkd, d)
        return n, zz, dk, dh

    def none(h_bkd, y_bk, w_bk, dk):
        zero = jnp.zeros((), jnp.float32)
        return zero, zero, dk, jnp.zeros(h_bkd.shape, jnp.float32)

    def body(carry, xs):
        nll, z, dk = carry
        act, *chunk = xs
        n, zz, dk, dh = (jax.lax.cond(act, grads, none, *chunk, dk) if skip
                         else grads(*chunk, dk))
        return (nll + n, z + zz, dk), dh

    zero = jnp.zeros((), jnp.float32)
    dk0 = jnp.zeros(kernel_dv.shape, jnp.float32)
    (nll, z, dk), dh = jax.lax.scan(body, (zero, zero, dk0),
                                    (active_c, h_cbkd, y_cbk, w_cbk))
    # dtypes travel as zero-size arrays (residuals are arrays)
    return (nll + z_coef * z, (nll, z)), (dh, dk, jnp.zeros((0,), h_cbkd.dtype),
                                          jnp.zeros((0,), kernel_dv.dtype))


def _weighted_sums_bwd(z_coef, skip, res, cotangents):
    """Only the total is differentiable (the two sums are reported for metrics: callers
    stop their gradient); its gradient was computed forward, scaled here."""
    del z_coef, skip
    dh, dk, h_like, k_like = res
    g = cotangents[0]
    return (dh * g).astype(h_like.dtype), (dk * g).astype(k_like.dtype), None, None, None


_weighted_sums.defvjp(_weighted_sums_fwd, _weighted_sums_bwd)


@jax.custom_vjp
def _permute_positions(x_btd, order_bt, inverse_bt):
    """``x`` with each row's positions in ``order`` (a permutation per row); its gradient
    goes back through the inverse permutation (a gather, not a scatter-add)."""
    return jnp.take_along_axis(x_btd, order_bt[..., None], axis=1)


def _permute_positions_fwd(x_btd, order_bt, inverse_bt):
    return _permute_positions(x_btd, order_bt, inverse_bt), (order_bt, inverse_bt)


def _permute_positions_bwd(res, g_btd):
    order_bt, inverse_bt = res
    zeros = [np.zeros(a.shape, jax.dtypes.float0) for a in (order_bt, inverse_bt)]
    return (jnp.take_along_axis(g_btd, inverse_bt[..., None], axis=1), *zeros)


_permute_positions.defvjp(_permute_positions_fwd, _permute_positions_bwd)


def weighted_nll_sums(hidden_btd: jax.Array, kernel_dv: jax.Array, targets_bt: jax.Array,
                      weights_bt: jax.Array, *, z_coef: float = 0.0, chunk_size: int = 1024,
                      skip: bool = False) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """``sum(w * nll) + z_coef * sum(w * lse^2)`` over every position, and the two sums.

    Differentiable in the total only (the sums are for logging and get no gradient);
    the gradients of the hidden states and of the kernel are computed in the forward
    pass, one chunk of ``[b, chunk, vocab]`` float32 logits at a time, and equal those
    of ``token_nll`` (tests/objectives/test_lm.py).

    ``skip``: positions of weight 0 (an SFT prompt, padding) get no logits: each row's
    weighted positions are moved to its front and a chunk in which no row has one is
    skipped (the vocabulary projection then costs what the trained tokens need, as in
    ``token_nll``). For one device: on a mesh the skip's branches would need the whole LM
    head on each device (``token_nll``'s ``shard_map``), which for SFT cost more memory
    than it saved work (``lm_loss``).
    """
    total, sums = _weighted_nll_sums(hidden_btd, kernel_dv, targets_bt, weights_bt,
                                     z_coef=z_coef, chunk_size=chunk_size, skip=skip)
    return total, jax.lax.stop_gradient(sums)


def _weighted_nll_sums(hidden_btd, kernel_dv, targets_bt, weights_bt, *, z_coef, chunk_size,
                       skip):
    weights_bt = weights_bt.astype(jnp.float32)
    chunk = min(chunk_size, hidden_btd.shape[1])
    if skip:
        order = jnp.argsort(weights_bt == 0, axis=1, stable=True)  # weighted first
        hidden_btd = _permute_positions(hidden_btd, order, jnp.argsort(order, axis=1))
        targets_bt = jnp.take_along_axis(targets_bt, order, axis=1)
        weights_bt = jnp.take_along_axis(weights_bt, order, axis=1)
    w_cbk = _chunks(weights_bt, chunk)
    active_c = (w_cbk != 0).any(axis=(1, 2))
    return _weighted_sums(_chunks(hidden_btd, chunk), kernel_dv, _chunks(targets_bt, chunk),
                          w_cbk, active_c, float(z_coef),
                          bool(skip) and w_cbk.shape[0] > 1)


LM_HEAD_GRADS = ("fused", "recompute")


def lm_loss(config: ModelConfig, params, batch: dict, rng=None, *, z_loss: float = 0.0,
            chunk_size: int = 1024, neftune_alpha: float = 0.0, router_aux: float = -1.0,
            lm_head_grad: str = "fused", skip_untrained: bool = False):
    """Mean next-token NLL over trainable targets, plus optional z-loss and, for a
    mixture-of-experts model, the router's load-balancing loss times ``router_aux``
    (-1: the model's ``router_aux_loss_coef``), as transformers' Mixtral with
    ``output_router_logits=True``. ``lm_head_grad``: "fused" (``weighted_nll_sums``:
    the vocabulary projection's gradients computed in the forward pass) or "recompute"
    (``token_nll``: logits recomputed in the backward pass); the same values.
    ``skip_untrained`` (SFT): on one device, no logits for positions without a target
    (the prompt, padding; see ``weighted_nll_sums``); the same values.

    Returns ``(loss, metrics)``; ``metrics["weight"]`` is the number of target
    tokens the mean is over (used to combine micro-batches exactly).
    """
    if config.num_experts and config.router_jitter and rng is not None:  # training noise
        keys = jax.random.split(jax.random.fold_in(rng, 0x3E), config.num_layers)
        params = dict(params, layers=dict(params["layers"], moe_rng=keys))
    out = forward_hidden(config, params, batch["input_ids"],
                         segment_ids=batch.get("segment_ids"),
                         positions=batch.get("positions"),
                         neftune=(neftune_alpha, rng) if neftune_alpha else None,
                         moe_stats=bool(config.num_experts))
    hidden, stats = out if config.num_experts else (out, None)
    targets, weights = next_token_targets(batch)
    count = weights.sum()
    denom = jnp.maximum(count, 1.0)
    kernel = lm_head_kernel(config, params)
    if lm_head_grad == "fused":
        # One device only: per device on a mesh (a shard_map, as token_nll's) gathered the
        # whole LM head on each; the 70B SFT memory plan grew 3.6 GiB a device for < 1.5%
        # of its FLOPs.
        total, (nll_sum, z_sum) = weighted_nll_sums(
            hidden, kernel, targets, weights, z_coef=z_loss, chunk_size=chunk_size,
            skip=skip_untrained and _one_device())
        loss = total / denom
    elif lm_head_grad == "recompute":
        skip = skip_untrained and _one_device()
        nll, lse = token_nll(hidden, kernel, targets, chunk_size=chunk_size,
                             weights_bt=weights if skip else None, skip=skip)
        nll_sum, z_sum = (nll * weights).sum(), (jnp.square(lse) * weights).sum()
        loss = (nll_sum + z_loss * z_sum) / denom
    else:
        raise ValueError(f"objective.lm_head_grad={lm_head_grad!r}: one of {LM_HEAD_GRADS}")
    metrics = {"nll": nll_sum / denom, "weight": count}
    if z_loss:
        metrics["z_loss"] = z_sum / denom
    if stats is not None:
        from ..models.moe import aux_loss
        aux, load = aux_loss(config, stats)
        coef = config.router_aux_loss_coef if router_aux < 0 else router_aux
        loss = loss + coef * aux
        metrics["moe/aux_loss"] = aux
        metrics.update({f"moe/load/{e}": load[e] for e in range(config.num_experts)})
    return loss, metrics


# --------------------------------------------------------------------------- units
def _lm_config(c, skip_untrained: bool = False) -> None:
    c.objective.z_loss = 0.0
    c.objective.neftune_alpha = 0.0  # NEFTune noise on the embeddings (per packed document)
    c.objective.loss_chunk_size = 1024  # positions per chunk of the vocabulary projection
    # fused: the vocabulary projection's gradients are computed in the forward pass (3
    # matmuls, no logits kept); recompute: the backward recomputes each chunk's logits (4)
    c.objective.lm_head_grad = "fused"
    # No logits for positions without a target (SFT's prompts, padding): each row's trained
    # positions first, chunks with none skipped; the same values (on one device)
    c.objective.skip_untrained = skip_untrained
    # Mixture of experts: the load-balancing loss's weight (-1: the model's
    # router_aux_loss_coef, as transformers with output_router_logits=True; 0: logged only)
    c.objective.router_aux_loss_coef = -1.0


def _make_lm_loss(o, model_config: ModelConfig):
    if o.get("lm_head_grad", "fused") not in LM_HEAD_GRADS:
        raise ValueError(f"objective.lm_head_grad={o.lm_head_grad!r}: one of {LM_HEAD_GRADS}")
    return functools.partial(lm_loss, model_config, z_loss=o.z_loss,
                             neftune_alpha=o.neftune_alpha, chunk_size=o.loss_chunk_size,
                             router_aux=o.get("router_aux_loss_coef", -1.0),
                             lm_head_grad=o.get("lm_head_grad", "fused"),
                             skip_untrained=bool(o.get("skip_untrained", False)))


register(Objective(name="pretrain", kind="text", add_config=_lm_config,
                   make_loss=_make_lm_loss, metrics=("nll", "z_loss"), title="pretraining"))
# SFT trains on the responses only: by default the prompt's positions get no logits.
register(Objective(name="sft", kind="chat",
                   add_config=functools.partial(_lm_config, skip_untrained=True),
                   make_loss=_make_lm_loss, metrics=("nll", "z_loss"), title="SFT"))
