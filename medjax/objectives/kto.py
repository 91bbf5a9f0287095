"""KTO: unpaired desirable / undesirable completions (TRL's definition).

Batches come from the KTO pipeline: ``[rows, 2, seq_len]`` with each example
at ``[:, 0]`` and a mismatched prompt/completion pair at ``[:, 1]`` (for the KL
estimate), ``label [rows]`` and ``ref_logps [rows, 2]``. The KL estimate

    z = max(0, mean over the global batch of (logp - ref) on mismatched pairs)

is detached and, because the loss is computed on the global (sharded) batch
inside one jitted step, averaged over every device's rows.

Padding-free batches (``data.pack_pairs``): ``[rows, 2 * seq_len]`` rows holding several
examples, each followed by its KL sequence (segments 2k + 1 and 2k + 2), ``label [rows,
seq_len]`` and ``ref_logps [rows, seq_len, 2]`` per slot; every slot is an example
(empty slots have no tokens and weigh nothing), so the loss is the same function of the
same examples.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ..models import ModelConfig
from .preference import sequence_logps
from .registry import Objective, register


def kto_losses(policy: jax.Array, reference: jax.Array, label: jax.Array, kl_rows: jax.Array, *,
               beta: float, desirable_weight: float = 1.0,
               undesirable_weight: float = 1.0) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-example losses ``[rows]``, the KL estimate, and the rewards ``beta * r``.

    ``kl_rows [rows]`` marks the rows whose mismatched pair exists (not padding).
    """
    ratios = policy - reference  # [rows, 2]
    r = ratios[:, 0]
    kl = (ratios[:, 1] * kl_rows).sum() / jnp.maximum(kl_rows.sum(), 1)
    z = jax.lax.stop_gradient(jnp.maximum(kl, 0.0))
    desirable = desirable_weight * (1 - jax.nn.sigmoid(beta * (r - z)))
    undesirable = undesirable_weight * (1 - jax.nn.sigmoid(beta * (z - r)))
    return jnp.where(label, desirable, undesirable), z, beta * r


def kto_loss(config: ModelConfig, params, batch: dict, rng=None, *, beta: float = 0.1,
             desirable_weight: float = 1.0, undesirable_weight: float = 1.0,
             chunk_size: int = 1024, keep_gb: float = 0.0):
    del rng
    policy, lengths = sequence_logps(config, params, batch, chunk_size=chunk_size,
                                     keep_gb=keep_gb)
    policy, lengths = policy.reshape(-1, 2), lengths.reshape(-1, 2)  # packed: every slot
    label = batch["label"].reshape(-1)
    real = lengths[:, 0] > 0
    losses, kl, rewards = kto_losses(policy, batch["ref_logps"].reshape(-1, 2), label,
                                     lengths[:, 1] > 0, beta=beta,
                                     desirable_weight=desirable_weight,
                                     undesirable_weight=undesirable_weight)
    realf = real.astype(jnp.float32)
    good = realf * label
    bad = realf * (1 - label.astype(jnp.float32))
    n = jnp.maximum(realf.sum(), 1.0)
    metrics = {
        "kl": kl,
        "rewards/chosen": (rewards * good).sum() / jnp.maximum(good.sum(), 1.0),
        "rewards/rejected": (rewards * bad).sum() / jnp.maximum(bad.sum(), 1.0),
        "logps/chosen": (policy[:, 0] * good).sum() / jnp.maximum(good.sum(), 1.0),
        "logps/rejected": (policy[:, 0] * bad).sum() / jnp.maximum(bad.sum(), 1.0),
        "weight": realf.sum(),
    }
    return (losses * realf).sum() / n, metrics


# --------------------------------------------------------------------------- unit
def _kto_config(c) -> None:
    o = c.objective
    o.beta = 0.1
    o.desirable_weight = 1.0
    o.undesirable_weight = 1.0
    o.reference = "frozen"  # frozen | a model directory (the KL rows need the model)
    o.loss_chunk_size = 1024
    o.loss_keep_gb = 0.0  # as DPO's: the softmax kept for the backward pass when it fits


def _make_kto_loss(o, model_config: ModelConfig):
    return functools.partial(kto_loss, model_config, beta=o.beta,
                             desirable_weight=o.desirable_weight,
                             undesirable_weight=o.undesirable_weight,
                             chunk_size=o.loss_chunk_size,
                             keep_gb=o.get("loss_keep_gb", 0.0))


register(Objective(
    name="kto", kind="kto", add_config=_kto_config, make_loss=_make_kto_loss,
    metrics=("kl", "rewards/chosen", "rewards/rejected", "logps/chosen", "logps/rejected"),
    references=("frozen", "model"), needs_reference=lambda o: True, title="KTO",
    reference_note="its KL rows pair examples within a batch"))
