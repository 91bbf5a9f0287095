"""AdamW with warmup + cosine decay to a floor, masked weight decay, clipping."""

from __future__ import annotations

import jax
import optax


def make_schedule(opt, total_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to ``opt.lr``, then cosine decay to ``opt.min_lr``."""
    warmup = int(opt.warmup_steps if opt.warmup_steps >= 1 else opt.warmup_steps * total_steps)
    warmup = min(warmup, max(total_steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=opt.lr, warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1), end_value=opt.min_lr)


def decay_mask(params, decay_embeddings: bool = True):
    """True for parameters that get weight decay: matrices, not norms (or embeddings)."""
    def keep(path, x):
        names = [getattr(k, "key", "") for k in path]
        if "scale" in names:  # RMSNorm scales
            return False
        if "embed" in names and not decay_embeddings:
            return False
        return x.ndim >= 2
    return jax.tree_util.tree_map_with_path(keep, params)


def make_optimizer(opt, total_steps: int) -> optax.GradientTransformation:
    schedule = make_schedule(opt, total_steps)
    parts = []
    if opt.clip_norm:
        parts.append(optax.clip_by_global_norm(opt.clip_norm))
    parts.append(optax.adamw(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps,
                             weight_decay=opt.weight_decay,
                             mask=lambda p: decay_mask(p, opt.decay_embeddings)))
    return optax.chain(*parts)
