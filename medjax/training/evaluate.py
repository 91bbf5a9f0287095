"""Held-out evaluation during training: built once per run, called with parameters."""

from __future__ import annotations

import jax


class Evaluator:
    """Weighted mean of the objective's metrics over ``eval.batches`` batches of the eval
    set (0: all of it). ``batches`` is a one-pass factory (``batches.one_pass``) over the
    eval dataset, which was built and validated once; ``to_device`` makes a local batch
    a device batch (with the eval reference's log-probs)."""

    def __init__(self, batches, eval_fn, to_device, *, max_batches: int = 0,
                 name: str = "data.eval_sources"):
        self.batches, self.eval_fn, self.to_device = batches, eval_fn, to_device
        self.max_batches, self.name = max_batches, name

    def __call__(self, params) -> dict:
        totals, weight = {}, 0.0
        for i, local in enumerate(self.batches()):
            if self.max_batches and i >= self.max_batches:
                break
            m = jax.device_get(self.eval_fn(params, self.to_device(local)))
            w = float(m["weight"])
            for k, v in m.items():
                if k not in ("weight", "nonfinite"):
                    totals[k] = totals.get(k, 0.0) + float(v) * w
            weight += w
        if not weight:
            raise ValueError(f"{self.name}: no tokens to evaluate")
        return {f"eval/{k}": v / weight for k, v in totals.items()}
