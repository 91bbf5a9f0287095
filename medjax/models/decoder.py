"""The decoder: Llama-3, Llama-3.1 and Mistral as one implementation.

Layers are Flax Linen modules; the stack is plain JAX: layer parameters are
stacked along a leading ``layers`` axis and run with ``jax.lax.scan`` (one
compiled layer, compile time independent of depth) or, with
``scan_layers=False``, a Python loop over the same stacked parameters, so the
parameter layout never depends on that switch. Remat wraps the layer body.

Parameters (``P`` = logical axes):
  embed/embedding          [vocab, embed]
  layers/attn_norm/scale   [layers, embed]
  layers/attn/q_proj       [layers, embed, heads, head_dim]      'btd,dnh->btnh'
  layers/attn/k_proj       [layers, embed, kv_heads, head_dim]
  layers/attn/v_proj       [layers, embed, kv_heads, head_dim]
  layers/attn/o_proj       [layers, heads, head_dim, embed]      'btnh,nhd->btd'
  layers/mlp_norm/scale    [layers, embed]
  layers/mlp/gate_proj     [layers, embed, mlp]
  layers/mlp/up_proj       [layers, embed, mlp]
  layers/mlp/down_proj     [layers, mlp, embed]
  final_norm/scale         [embed]
  lm_head/kernel           [embed, vocab]   (absent with tied embeddings)

A reward model (``head="reward"``) has ``reward_head/kernel [embed]`` (a scalar
head, see ``medjax.objectives.reward``) in place of ``lm_head``.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, SingleDeviceSharding

from ..parallel.sharding import constrain, logical_to_sharding
from .config import ModelConfig
from . import moe as moe_lib
from .lora import add_delta, adapter_delta

Params = dict[str, Any]
HEADS = ("lm", "reward")  # the output head: next-token logits, or one scalar (reward models)

_REMAT = {
    "full": None,  # jax.checkpoint's default: save only the layer's inputs
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


# ---------------------------------------------------------------------- RoPE
def rope_inv_freq(config: ModelConfig) -> np.ndarray:
    """Inverse frequencies [head_dim // 2] (float32), with Llama-3.1 scaling."""
    dim = config.head_dim
    inv = 1.0 / (np.float32(config.rope_theta) **
                 (np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)))
    inv = inv.astype(np.float32)
    s = config.rope_scaling
    if s is not None:
        old = s.original_max_position_embeddings
        low_wavelen = old / s.low_freq_factor
        high_wavelen = old / s.high_freq_factor
        wavelen = 2 * np.pi / inv
        scaled = np.where(wavelen > low_wavelen, inv / s.factor, inv)
        smooth = (old / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)
        smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        inv = np.where(medium, smoothed, scaled).astype(np.float32)
    return inv


def rope_tables(config: ModelConfig, positions: jax.Array) -> tuple[jax.Array, jax.Array]:
    """cos, sin of shape [batch, length, head_dim] (float32) for integer positions."""
    inv = jnp.asarray(rope_inv_freq(config))
    angles = positions.astype(jnp.float32)[..., None] * inv  # [b, t, h/2]
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x_btnh: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotary embedding in the 'rotate half' layout used by Hugging Face weights."""
    x = x_btnh.astype(jnp.float32)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    out = x * cos[:, :, None, :] + rotated * sin[:, :, None, :]
    return out.astype(x_btnh.dtype)


# ----------------------------------------------------------------- attention
def attention(config: ModelConfig, q_btnh, k_btkh, v_btkh, segment_ids: jax.Array | None):
    """Causal grouped-query attention: ``jax.nn.dot_product_attention`` (``config.attention``
    "xla" or "cudnn") or ``blocked_attention`` ("blocked"; "auto" is blocked on CPU and
    xla elsewhere).

    ``segment_ids`` [batch, length]: a token attends only to earlier tokens of
    its own segment (packed sequences). Mistral's sliding window: a token
    attends to itself and the ``sliding_window - 1`` tokens before it.
    """
    t = q_btnh.shape[1]
    impl = config.attention
    if impl == "auto":
        impl = "blocked" if jax.default_backend() == "cpu" else "xla"
    window = None
    if config.sliding_window is not None and config.sliding_window < t:
        window = config.sliding_window
    if impl == "blocked" and t > 2 * ATTENTION_BLOCK:
        return blocked_attention(q_btnh, k_btkh, v_btkh, segment_ids, window=window,
                                 scale=config.head_dim ** -0.5)
    impl = "xla" if impl == "blocked" else impl
    mask = None
    if segment_ids is not None:
        mask = segment_ids[:, None, :, None] == segment_ids[:, None, None, :]
    if impl == "cudnn":
        if jax.default_backend() != "gpu":
            raise ValueError(f"attention backend 'cudnn' needs a GPU, but JAX runs on "
                             f"{jax.default_backend()!r}; use attention='xla'")
        if q_btnh.dtype not in (jnp.bfloat16, jnp.float16):
            raise ValueError(f"attention backend 'cudnn' needs bfloat16 or float16 compute, got "
                             f"{q_btnh.dtype}; set dtype='bfloat16' or attention='xla'")
    return jax.nn.dot_product_attention(
        q_btnh, k_btkh, v_btkh, mask=mask, is_causal=True,
        local_window_size=None if window is None else (window - 1, 0),
        scale=config.head_dim ** -0.5, implementation=impl)


def segments_at_most(config: ModelConfig, length: int) -> ModelConfig:
    """``config`` for rows whose segments are never longer than ``length`` (packed pairs:
    each sequence of a ``2 x seq_len`` row is at most ``seq_len``): a sliding window of
    ``length`` then masks nothing more, and lets blocked attention skip the key blocks
    further back. The same results, less work."""
    if config.sliding_window is not None and config.sliding_window <= length:
        return config
    return config.replace(sliding_window=length)


# Smallest query block of the "blocked" attention; sequences of up to twice this run dense.
# Measured on CPU (RESULTS.md, "Blocked attention"): no gain at 512 tokens, blocks of 256
# beat 128 and 64 at 2048 (per-block overhead), hence at most 8 blocks.
ATTENTION_BLOCK = 128
MAX_ATTENTION_BLOCKS = 8  # longer sequences get longer blocks


def blocked_attention(q_btnh, k_btkh, v_btkh, segment_ids, *, window: int | None,
                      scale: float, block: int | None = None):
    """Causal grouped-query attention computed per query block, each against only the keys
    it may see: from the sequence start (or ``window - 1`` positions back) to the block's
    end. Key blocks above the diagonal (and, with a window, below it) are never computed,
    so about half of the score matrix is skipped; the result is ``jax.nn.dot_product_
    attention``'s (``tests/models/test_decoder.py``). Static shapes, no control flow: it
    runs alike on any number of devices."""
    b, t, n, h = q_btnh.shape
    k = k_btkh.shape[2]
    if block is None:
        block = max(ATTENTION_BLOCK, -(-t // MAX_ATTENTION_BLOCKS))
    q = q_btnh.reshape(b, t, k, n // k, h)
    outs = []
    for start in range(0, t, block):
        end = min(start + block, t)
        lo = 0 if window is None else max(0, start - window + 1)
        logits = jnp.einsum("btkgh,bskh->bkgts", q[:, start:end], k_btkh[:, lo:end],
                            preferred_element_type=jnp.float32) * scale
        q_pos = np.arange(start, end)[:, None]
        k_pos = np.arange(lo, end)[None, :]
        allowed = jnp.asarray(k_pos <= q_pos if window is None
                              else (k_pos <= q_pos) & (k_pos > q_pos - window))[None]
        if segment_ids is not None:
            allowed = allowed & (segment_ids[:, start:end, None] == segment_ids[:, None, lo:end])
        logits = jnp.where(allowed[:, None, None], logits, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(logits, axis=-1).astype(v_btkh.dtype)
        outs.append(jnp.einsum("bkgts,bskh->btkgh", probs, v_btkh[:, lo:end]))
    return jnp.concatenate(outs, axis=1).reshape(b, t, n, h)


# ------------------------------------------------------------------- modules
def project(x: jax.Array, w: jax.Array, contract: int = 1,
            preferred_element_type=None) -> jax.Array:
    """``x`` ``[..., *in]`` times ``w`` ``[*in, *out]`` (``contract`` = how many ``in`` axes)
    as one 2-D matmul: ``[tokens, in] @ [in, out]``, reshaped back to ``[..., *out]``
    (accumulated in ``preferred_element_type`` when given).

    The same product as ``jnp.einsum("btd,df->btf", ...)``, but its gradients are plain
    2-D matmuls too. With ``[batch, length]`` kept as two axes the weight gradient
    contracts over both, and XLA's CPU backend then transposed the activations before
    each weight-gradient matmul: the medium MLP's forward and backward ran 1.6x slower
    (RESULTS.md, "2-D projections")."""
    lead, tail = x.shape[:x.ndim - contract], w.shape[contract:]
    k = math.prod(w.shape[:contract])
    out = jnp.matmul(x.reshape(-1, k), w.reshape(k, -1),
                     preferred_element_type=preferred_element_type)
    return out.reshape(*lead, *tail)


def _kernel_init():
    return nn.initializers.normal(stddev=0.02)


def _weight(module: nn.Module, name: str, shape, axes, cast: bool = True):
    """A normal(0.02) parameter of ``module`` with logical ``axes`` (in the compute dtype
    when ``cast``, else in the parameter dtype)."""
    c = module.config
    w = module.param(name, nn.with_logical_partitioning(_kernel_init(), axes), shape,
                     jnp.dtype(c.param_dtype))
    return w.astype(jnp.dtype(c.dtype)) if cast else w


class RMSNorm(nn.Module):
    eps: float
    dtype: Any
    param_dtype: Any

    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                           (x.shape[-1],), self.param_dtype)
        xf = x.astype(jnp.float32)
        y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
        return y.astype(self.dtype) * scale.astype(self.dtype)


def cached_attention(config: ModelConfig, q_btnh, k_cache_bkhs, v_cache_bksh, q_pos_bt):
    """Attention of queries at positions ``q_pos_bt`` over a KV cache indexed by position:
    keys ``[batch, kv_heads, head_dim, cache_len]``, values ``[batch, kv_heads, cache_len,
    head_dim]``. Slot ``s`` is seen iff ``s <= position`` (and, with Mistral's window,
    ``s > position - sliding_window``). Slots past a row's own tokens are never seen (they
    lie after it).

    Both products are plain matmuls per (row, KV head) on the cache as stored (keys
    transposed so the scores are ``q @ K``, not ``q @ K.T``), their outputs in
    ``dot_general``'s own order; the grouped query heads sharing a KV head are the rows of
    the left operand (no repeat of the cache). Scores and softmax in float32. Profiled on
    the 2-core CPU at batch 16 (``benchmarks/decode_ablation.py --profile``, RESULTS.md),
    keys stored ``[.., cache_len, head_dim]`` took 1.8 ms a step for the scores (0.8 now)
    and an output in ``[batch, t, kv, group, head_dim]`` order sent the values' product to
    a plain dot at 3.1 ms (0.65 now)."""
    b, t, n, h = q_btnh.shape
    kv = k_cache_bkhs.shape[1]
    q_bktgh = q_btnh.reshape(b, t, kv, n // kv, h).transpose(0, 2, 1, 3, 4)
    # [b, kv, t, g, h] x [b, kv, h, s] -> [b, kv, t, g, s]
    scores = jax.lax.dot_general(q_bktgh, k_cache_bkhs, (((4,), (2,)), ((0, 1), (0, 1))),
                                 preferred_element_type=jnp.float32) * (config.head_dim ** -0.5)
    s_pos = jnp.arange(k_cache_bkhs.shape[3])
    mask = s_pos[None, None, :] <= q_pos_bt[:, :, None]
    if config.sliding_window is not None:
        mask &= s_pos[None, None, :] > q_pos_bt[:, :, None] - config.sliding_window
    # A finite fill: a row whose every slot is masked (a padded prompt position) gets
    # uniform weights over finite values instead of NaN.
    scores = jnp.where(mask[:, None, :, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v_cache_bksh.dtype)
    # [b, kv, t, g, s] x [b, kv, s, h] -> [b, kv, t, g, h]
    out = jax.lax.dot_general(probs, v_cache_bksh, (((4,), (2,)), ((0, 1), (0, 1))))
    return out.transpose(0, 2, 1, 3, 4).reshape(b, t, n, h)


def write_cache(cache, new_btkh, start_b, layer=None, *, keys: bool = False):
    """Writes each row's ``new`` tokens into its cache from slot ``start_b[row]``, in place:
    ``cache`` is one layer's values ``[batch, kv_heads, cache_len, head_dim]`` (keys, with
    ``keys``: ``[batch, kv_heads, head_dim, cache_len]``) or, with ``layer``, the stacked
    cache with a leading ``layers`` axis."""
    b, t = new_btkh.shape[:2]
    rows = jnp.arange(b)[:, None]
    slots = start_b[:, None] + jnp.arange(t)[None, :]
    new_btkh = new_btkh.astype(cache.dtype)
    at = (rows, slice(None), slice(None), slots) if keys else (rows, slice(None), slots)
    if layer is not None:
        at = (layer,) + at
    return cache.at[at].set(new_btkh, mode="drop")


class Attention(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self, x_btd, cos, sin, segment_ids, cache=None, lora_rng=None):
        c = self.config
        d, n, k, h = c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim
        param = functools.partial(_weight, self)
        lora = functools.partial(adapter_delta, self, rng=lora_rng)  # LoRA, where present

        q_proj_dnh = param("q_proj", (d, n, h), ("embed", "heads", "head_dim"))
        k_proj_dkh = param("k_proj", (d, k, h), ("embed", "kv_heads", "head_dim"))
        v_proj_dkh = param("v_proj", (d, k, h), ("embed", "kv_heads", "head_dim"))
        o_proj_nhd = param("o_proj", (n, h, d), ("heads", "head_dim", "embed"))

        q_btnh = add_delta(project(x_btd, q_proj_dnh), lora("q_proj", x_btd, index=0))
        k_btkh = add_delta(project(x_btd, k_proj_dkh), lora("k_proj", x_btd, index=1))
        v_btkh = add_delta(project(x_btd, v_proj_dkh), lora("v_proj", x_btd, index=2))
        q_btnh = constrain(apply_rope(q_btnh, cos, sin), ("batch", "length", "heads", "head_dim"))
        k_btkh = constrain(apply_rope(k_btkh, cos, sin), ("batch", "length", "kv_heads", "head_dim"))
        v_btkh = constrain(v_btkh, ("batch", "length", "kv_heads", "head_dim"))
        def out_proj(out_btnh):
            return add_delta(project(out_btnh, o_proj_nhd, 2),
                             lora("o_proj", out_btnh, index=3))

        if cache is None:
            return out_proj(attention(c, q_btnh, k_btkh, v_btkh, segment_ids))
        # Generation (forward_cached): this layer's cache (keys [batch, kv_heads, head_dim,
        # cache_len], values [batch, kv_heads, cache_len, head_dim]), or the stacked one and
        # this layer's index inside a layer scan.
        k_cache, v_cache, layer, start_b = cache
        k_cache = write_cache(k_cache, k_btkh, start_b, layer, keys=True)
        v_cache = write_cache(v_cache, v_btkh, start_b, layer)
        q_pos_bt = start_b[:, None] + jnp.arange(x_btd.shape[1])[None, :]
        own = (lambda a: a) if layer is None else (lambda a: a[layer])
        out_btnh = cached_attention(c, q_btnh, own(k_cache), own(v_cache), q_pos_bt)
        # One [n * h, d] matmul (project): as "btnh,nhd->btd" XLA transposed o_proj's
        # [n, h] to [h, n] inside the decode loop, a copy of the weight every step.
        out = project(out_btnh, o_proj_nhd, 2)
        return add_delta(out, lora("o_proj", out_btnh, index=3)), (k_cache, v_cache)


class MLP(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self, x_btd, lora_rng=None):
        c = self.config
        d, f = c.hidden_size, c.intermediate_size
        param = functools.partial(_weight, self)
        lora = functools.partial(adapter_delta, self, rng=lora_rng)  # LoRA, where present

        gate_df = param("gate_proj", (d, f), ("embed", "mlp"))
        up_df = param("up_proj", (d, f), ("embed", "mlp"))
        down_fd = param("down_proj", (f, d), ("mlp", "embed"))
        gate_btf = add_delta(project(x_btd, gate_df), lora("gate_proj", x_btd, index=4))
        up_btf = add_delta(project(x_btd, up_df), lora("up_proj", x_btd, index=5))
        h_btf = constrain(jax.nn.silu(gate_btf) * up_btf, ("batch", "length", "mlp"))
        return add_delta(project(h_btf, down_fd), lora("down_proj", h_btf, index=6))


class MoE(nn.Module):
    """Mixtral's sparse MoE block in place of the MLP (see ``medjax.models.moe``). Returns
    the output and this layer's load-balancing sums (over real tokens)."""
    config: ModelConfig

    @nn.compact
    def __call__(self, x_btd, segment_ids=None, jitter_rng=None):
        c = self.config
        d, f, e = c.hidden_size, c.intermediate_size, c.num_experts
        param = functools.partial(_weight, self, cast=False)
        router_de = param("router", (d, e), ("embed", None))
        gate_edf = param("gate_proj", (e, d, f), ("experts", "embed", "mlp"))
        up_edf = param("up_proj", (e, d, f), ("experts", "embed", "mlp"))
        down_efd = param("down_proj", (e, f, d), ("experts", "mlp", "embed"))
        if jitter_rng is not None and c.router_jitter > 0:  # training only, as transformers
            noise = jax.random.uniform(jitter_rng, x_btd.shape, jnp.float32,
                                       1.0 - c.router_jitter, 1.0 + c.router_jitter)
            x_btd = (x_btd.astype(jnp.float32) * noise).astype(x_btd.dtype)
        logits = project(x_btd, router_de.astype(x_btd.dtype))
        ids, weights, probs = moe_lib.route(c, logits)
        run = (moe_lib.experts_grouped_sharded if c.moe_impl == "grouped"
               else moe_lib.experts_dense)
        y = run(c, x_btd, ids, weights, gate_edf, up_edf, down_efd)
        return constrain(y, ("batch", "length", "embed")), moe_lib.stats(c, probs, ids,
                                                                         segment_ids)


class DecoderLayer(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self, x_btd, cos, sin, segment_ids, cache=None):
        c = self.config
        dt, pdt = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
        # LoRA dropout in training: one key per layer (lora.attach puts it there)
        rng = self.get_variable("params", "lora_rng") if self.has_variable(
            "params", "lora_rng") else None
        h = RMSNorm(c.rms_norm_eps, dt, pdt, name="attn_norm")(x_btd)
        attn = Attention(c, name="attn")(h, cos, sin, segment_ids, cache, lora_rng=rng)
        if cache is not None:
            attn, cache = attn
        x_btd = x_btd + attn
        h = RMSNorm(c.rms_norm_eps, dt, pdt, name="mlp_norm")(x_btd)
        if c.num_experts:  # the layer's routing sums: forward_hidden(moe_stats=True) reads them
            jitter = self.get_variable("params", "moe_rng") if self.has_variable(
                "params", "moe_rng") else None
            y, stats = MoE(c, name="moe")(h, segment_ids, jitter)
            self.sow("intermediates", "moe_stats", stats)
            x_btd = x_btd + y
        else:
            x_btd = x_btd + MLP(c, name="mlp")(h, lora_rng=rng)
        x_btd = constrain(x_btd, ("batch", "length", "embed"))
        return x_btd if cache is None else (x_btd, cache)


class Embed(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self, ids):
        c = self.config
        table = _weight(self, "embedding", (c.vocab_size, c.hidden_size), ("vocab", "embed"),
                        cast=False)
        return jnp.take(table, ids, axis=0).astype(jnp.dtype(c.dtype))


class FinalNorm(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self, x):
        c = self.config
        return RMSNorm(c.rms_norm_eps, jnp.dtype(c.dtype), jnp.dtype(c.param_dtype),
                       name="final_norm")(x)


class LMHead(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self, x):
        c = self.config
        return _weight(self, "kernel", (c.hidden_size, c.vocab_size), ("embed", "vocab"),
                       cast=False)


# ------------------------------------------------------- init and axes
def _dummy_inputs(config: ModelConfig):
    x = jnp.zeros((1, 1, config.hidden_size), jnp.dtype(config.dtype))
    cs = jnp.zeros((1, 1, config.head_dim), jnp.float32)
    return x, cs, cs, None


def _boxed_init(config: ModelConfig, rng: jax.Array) -> dict:
    """Boxed (logically partitioned) parameters; layer 0 stands for the stack."""
    config = config.replace(attention="xla")  # init traces no kernel-specific path
    k_emb, k_layer, k_head = jax.random.split(rng, 3)
    ids = jnp.zeros((1, 1), jnp.int32)
    x = jnp.zeros((1, 1, config.hidden_size), jnp.dtype(config.dtype))
    out = {
        "embed": Embed(config).init(k_emb, ids)["params"],
        "layers": DecoderLayer(config).init(k_layer, *_dummy_inputs(config))["params"],
        "final_norm": FinalNorm(config).init(k_head, x)["params"]["final_norm"],
    }
    if not config.tie_embeddings:
        out["lm_head"] = LMHead(config).init(k_head, x)["params"]
    return out


def _is_box(x):
    return isinstance(x, nn.LogicallyPartitioned)


def _with_head(tree: dict, head: str, reward_leaf) -> dict:
    """``tree`` (LM layout) with ``reward_head/kernel = reward_leaf`` in place of ``lm_head``
    for ``head="reward"``."""
    if head == "lm":
        return tree
    if head != "reward":
        raise ValueError(f"head={head!r} is not one of {HEADS}")
    tree = {k: v for k, v in tree.items() if k != "lm_head"}
    tree["reward_head"] = {"kernel": reward_leaf}
    return tree


def head_of(params: Params) -> str:
    """``"reward"`` for a reward model's parameters (a ``reward_head``), else ``"lm"``."""
    return "reward" if "reward_head" in params else "lm"


def param_logical_axes(config: ModelConfig, head: str = "lm") -> dict:
    """Pytree (like the parameters) of logical-axis tuples."""
    boxed = jax.eval_shape(functools.partial(_boxed_init, config), jax.random.key(0))

    def axes(path, box):
        names = tuple(box.names)
        return ("layers",) + names if path[0].key == "layers" else names

    return _with_head(jax.tree_util.tree_map_with_path(axes, boxed, is_leaf=_is_box), head,
                      ("embed",))


def _init_unboxed(config: ModelConfig, rng: jax.Array) -> Params:
    config = config.replace(attention="xla")
    k_rest, k_layers = jax.random.split(rng)
    params = nn.meta.unbox(_boxed_init(config, k_rest))

    def one_layer(k):
        return nn.meta.unbox(DecoderLayer(config).init(k, *_dummy_inputs(config))["params"])

    params["layers"] = jax.vmap(one_layer)(jax.random.split(k_layers, config.num_layers))
    return params


def abstract_params(config: ModelConfig, head: str = "lm") -> Params:
    """ShapeDtypeStructs of the parameters (no allocation)."""
    abstract = jax.eval_shape(functools.partial(_init_unboxed, config), jax.random.key(0))
    return _with_head(abstract, head, jax.ShapeDtypeStruct((config.hidden_size,),
                                                           jnp.dtype(config.param_dtype)))


def param_shardings(config: ModelConfig, mesh: Mesh | None, head: str = "lm") -> dict:
    """NamedShardings of the parameters on ``mesh`` under the current axis rules; without a
    mesh, every parameter on this process's first device (the one place for that fallback)."""
    if mesh is None:
        single = SingleDeviceSharding(jax.local_devices()[0])
        return jax.tree.map(lambda _: single, abstract_params(config, head))
    return logical_to_sharding(param_logical_axes(config, head), mesh,
                               shapes=abstract_params(config, head))


def init_params(config: ModelConfig, rng: jax.Array, *, mesh: Mesh | None = None) -> Params:
    """Random parameters (normal(0.02) kernels, unit norms), born sharded on ``mesh``."""
    shardings = param_shardings(config, mesh) if mesh is not None else None
    fn = jax.jit(functools.partial(_init_unboxed, config), out_shardings=shardings)
    return fn(rng)


# ------------------------------------------------------------------ forward
def forward_hidden(config: ModelConfig, params: Params, input_ids: jax.Array, *,
                   segment_ids: jax.Array | None = None,
                   positions: jax.Array | None = None,
                   neftune: tuple[float, jax.Array] | None = None,
                   moe_stats: bool = False):
    """Final-norm hidden states [batch, length, hidden] in the compute dtype.

    ``moe_stats`` (a mixture-of-experts model): returns (hidden, the layers' routing sums
    stacked ``[layers, ...]``) for ``moe.aux_loss``.

    ``neftune=(alpha, rng)`` adds NEFTune noise to the input embeddings (for
    training only): uniform in ``±alpha / sqrt(L * hidden)`` with ``L`` each
    token's own document length (its segment's, when packed).
    """
    input_ids = jnp.asarray(input_ids)
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be [batch, length], got shape {input_ids.shape}")
    b, t = input_ids.shape
    if positions is None:
        positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    for name, a in (("segment_ids", segment_ids), ("positions", positions)):
        if a is not None and tuple(jnp.shape(a)) != (b, t):
            raise ValueError(f"{name} must have the shape of input_ids {(b, t)}, "
                             f"got {tuple(jnp.shape(a))}")
    cos, sin = rope_tables(config, jnp.asarray(positions))

    x = Embed(config).apply({"params": params["embed"]}, input_ids)
    if neftune is not None and neftune[0]:
        x = _neftune(x, segment_ids, *neftune)
    x = constrain(x, ("batch", "length", "embed"))
    layer = DecoderLayer(config)

    def body(x_btd, layer_params):
        if not config.num_experts:
            return layer.apply({"params": layer_params}, x_btd, cos, sin, segment_ids), None
        x_btd, inter = layer.apply({"params": layer_params}, x_btd, cos, sin, segment_ids,
                                   mutable=["intermediates"])
        return x_btd, inter["intermediates"]["moe_stats"][0]

    if config.remat_policy != "none":
        body = jax.checkpoint(body, policy=_REMAT[config.remat_policy],
                              prevent_cse=not config.scan_layers)
    if config.scan_layers:
        x, stats = jax.lax.scan(body, x, params["layers"])
    else:
        per_layer = []
        for i in range(config.num_layers):
            x, st = body(x, jax.tree.map(lambda p: p[i], params["layers"]))
            per_layer.append(st)
        stats = jax.tree.map(lambda *a: jnp.stack(a), *per_layer) if config.num_experts \
            else None
    h = FinalNorm(config).apply({"params": {"final_norm": params["final_norm"]}}, x)
    return (h, stats) if moe_stats else h


def _neftune(x_btd: jax.Array, segment_ids: jax.Array | None, alpha: float,
             rng: jax.Array) -> jax.Array:
    b, t, d = x_btd.shape
    if segment_ids is None:
        length = jnp.full((b, t), t, jnp.float32)
    else:  # each token's own document length
        counts = jax.vmap(lambda s: jnp.bincount(s, length=t + 1))(segment_ids)
        length = jnp.take_along_axis(counts, segment_ids, axis=1).astype(jnp.float32)
    scale = alpha / jnp.sqrt(length * d)
    noise = jax.random.uniform(rng, x_btd.shape, jnp.float32, -1.0, 1.0) * scale[..., None]
    return (x_btd.astype(jnp.float32) + noise).astype(x_btd.dtype)


def cache_shapes(config: ModelConfig, batch: int,
                 cache_len: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The KV cache of ``forward_cached``: keys ``[layers, batch, kv_heads, head_dim,
    cache_len]`` and values ``[layers, batch, kv_heads, cache_len, head_dim]`` (the layouts
    ``cached_attention`` multiplies without a transpose)."""
    lead = (config.num_layers, batch, config.num_kv_heads)
    return lead + (config.head_dim, cache_len), lead + (cache_len, config.head_dim)


def empty_cache(config: ModelConfig, batch: int, cache_len: int, dtype=None):
    """Zeroed (keys, values) of ``cache_shapes``, in the compute dtype by default."""
    dtype = jnp.dtype(dtype or config.dtype)
    return tuple(jnp.zeros(shape, dtype) for shape in cache_shapes(config, batch, cache_len))


def unstack_layers(params: Params, cache: tuple[jax.Array, jax.Array]):
    """The per-layer form ``forward_cached`` takes for an unrolled decode loop: the layer
    parameters as a list of per-layer trees and the cache as per-layer arrays, split once
    before the loop so that no decode step copies a layer's weights or cache (inside a jit
    the split is a second copy of the weights while generating; ``split_layers`` splits
    them outside without one; ``scan_layers`` keeps them stacked). Parameters already
    split are taken as they are."""
    n = cache[0].shape[0] if not isinstance(cache[0], (list, tuple)) else len(cache[0])
    layers = params["layers"]
    if not isinstance(layers, (list, tuple)):
        layers = [jax.tree.map(lambda p, i=i: p[i], layers) for i in range(n)]
    return dict(params, layers=layers), tuple(
        list(a) if isinstance(a, (list, tuple)) else [a[i] for i in range(n)] for a in cache)


def split_layers(params: Params) -> Params:
    """``params`` with the stacked ``layers`` replaced by a list of per-layer trees, split
    eagerly one leaf at a time, each stacked leaf deleted once split: the unrolled decode
    loop's form (``unstack_layers``) at no more memory than one leaf's copy. The stacked
    arrays are gone afterwards: only for a caller that owns ``params`` (medjax.generate's
    command line)."""
    layers = params["layers"]
    if isinstance(layers, (list, tuple)):
        return params
    leaves, treedef = jax.tree.flatten(layers)
    n = leaves[0].shape[0]
    split = []
    for k in range(len(leaves)):
        leaf, leaves[k] = leaves[k], None
        split.append([leaf[i] for i in range(n)])
        jax.block_until_ready(split[-1])
        if isinstance(leaf, jax.Array):
            leaf.delete()
    return dict(params, layers=[treedef.unflatten([s[i] for s in split]) for i in range(n)])


def forward_cached(config: ModelConfig, params: Params, input_ids: jax.Array,
                   start: jax.Array, cache, logits_at: jax.Array | None = None):
    """Generation: ``input_ids`` [batch, t] at positions ``start[row] + 0..t-1``, their keys
    and values written into ``cache`` = (k, v) at slots ``start[row] + 0..t-1``, attending
    to everything before them there. Returns (logits [batch, t, vocab] float32, the updated
    cache). A prompt (t > 1, start 0) fills the cache; then one token a step (t = 1, start =
    each row's length so far).

    ``cache``: (k, v) as ``cache_shapes`` lays them out (keys with the slots last),
    written in place inside a layer scan (``scan_layers``) or by layer;
    or, with ``params`` and cache from ``unstack_layers``, lists of per-layer arrays.
    ``logits_at`` [batch, k]: the logits of those positions only ([batch, k, vocab]; a
    prefill needs each row's last), so the vocabulary projection skips the rest."""
    b, t = input_ids.shape
    positions = start[:, None] + jnp.arange(t, dtype=jnp.int32)[None, :]
    cos, sin = rope_tables(config, positions)
    x = Embed(config).apply({"params": params["embed"]}, input_ids)
    layer = DecoderLayer(config)

    def run(x_btd, layer_params, k, v, index):
        return layer.apply({"params": layer_params}, x_btd, cos, sin, None, (k, v, index, start))

    k, v = cache
    if isinstance(params["layers"], (list, tuple)):  # unstack_layers: per-layer everything
        k, v = list(k), list(v)
        for i, layer_params in enumerate(params["layers"]):
            x, (k[i], v[i]) = run(x, layer_params, k[i], v[i], None)
    elif config.scan_layers:
        def body(carry, layer_params):
            x_btd, k, v, i = carry
            x_btd, (k, v) = run(x_btd, layer_params, k, v, i)
            return (x_btd, k, v, i + 1), None

        (x, k, v, _), _ = jax.lax.scan(body, (x, k, v, jnp.int32(0)), params["layers"])
    else:
        for i in range(config.num_layers):
            x, (k, v) = run(x, jax.tree.map(lambda p: p[i], params["layers"]), k, v, i)
    if logits_at is not None:
        x = jnp.take_along_axis(x, logits_at[..., None], axis=1)
    h = FinalNorm(config).apply({"params": {"final_norm": params["final_norm"]}}, x)
    kernel = lm_head_kernel(config, params).astype(h.dtype)
    return jnp.einsum("btd,dv->btv", h, kernel, preferred_element_type=jnp.float32), (k, v)


def lm_head_kernel(config: ModelConfig, params: Params) -> jax.Array:
    """The output projection [hidden, vocab] (the embedding, transposed, when tied)."""
    if config.tie_embeddings:
        return params["embed"]["embedding"].T
    return params["lm_head"]["kernel"]


def forward(config: ModelConfig, params: Params, input_ids: jax.Array, *,
            segment_ids: jax.Array | None = None,
            positions: jax.Array | None = None) -> jax.Array:
    """Logits [batch, length, vocab] in float32.

    ``segment_ids`` (0 for padding) keep packed documents apart; ``positions``
    restart at 0 for each packed document (default: 0..length-1).
    """
    h = forward_hidden(config, params, input_ids, segment_ids=segment_ids, positions=positions)
    kernel = lm_head_kernel(config, params).astype(h.dtype)
    logits = jnp.einsum("btd,dv->btv", h, kernel, preferred_element_type=jnp.float32)
    return constrain(logits, ("batch", "length", "vocab"))
