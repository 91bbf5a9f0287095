"""Preference objectives: DPO and its variants, SimPO and ORPO (TRL 1.x definitions).

Batches come from the preference pipeline: arrays ``[pairs, 2, seq_len]`` with
the chosen response at ``[:, 0]`` and the rejected one at ``[:, 1]``; one
forward pass over ``[2 * pairs, seq_len]`` serves both. The reference model's
sequence log-probabilities arrive in the batch as ``ref_logps [pairs, 2]``
(computed by a frozen reference each step, or precomputed once), so the loss
is a pure function of the policy parameters and the batch.

Notation (references section 4): ``cr = logp(chosen) - ref(chosen)``,
``rr = logp(rejected) - ref(rejected)``, ``d = cr - rr``; sequence logps are
sums over response tokens.

The two negative log-likelihood terms follow TRL 1.x (checked against its
``DPOTrainer`` ``loss_type="sft"`` and ``experimental.orpo.ORPOTrainer``): one
token mean over the whole batch, not a mean of per-sequence means.
``sft_weight`` (TRL: ``loss_type=["sigmoid", "sft"]``, ``loss_weights=[1, w]``)
averages over every chosen response token of the batch; ORPO's NLL averages
over every token of the chosen sequences, prompt included, as the ORPO
authors' code and TRL's ``ORPOTrainer`` do.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ..models import ModelConfig, forward_hidden, segments_at_most, lm_head_kernel
from .lm import next_token_targets, token_nll
from .registry import Objective, register

LOSS_TYPES = ("sigmoid", "hinge", "ipo", "robust", "nca_pair", "bco_pair", "sppo_hard",
              "apo_zero", "kto_pair", "simpo", "orpo")
REFERENCE_FREE = ("simpo", "orpo")
log_sigmoid = jax.nn.log_sigmoid


def flatten_pairs(batch: dict) -> dict:
    """``[pairs, 2, L]`` arrays -> ``[2 * pairs, L]`` rows (chosen, rejected, chosen, ...)."""
    return {k: v.reshape(-1, v.shape[-1]) for k, v in batch.items()
            if k in ("input_ids", "segment_ids", "positions", "loss_mask")}


def is_packed(batch: dict) -> bool:
    """A padding-free batch (``data.pack_pairs``): ``[rows, 2 * seq_len]`` rows of whole
    pairs, pair k at segments 2k + 1 (chosen) and 2k + 2 (rejected)."""
    return batch["input_ids"].ndim == 2


def _packed_sequence_logps(config, params, batch, chunk_size, chosen_nll, keep_gb):
    """``sequence_logps`` of a packed batch: ``[rows, seq_len, 2]`` (slot k of a row = its
    pair k; empty slots 0), summed per segment."""
    seg = batch["segment_ids"]
    rows, length = seg.shape
    # each sequence of a packed row is at most seq_len = length / 2 tokens
    hidden = forward_hidden(segments_at_most(config, length // 2), params, batch["input_ids"],
                            segment_ids=seg, positions=batch["positions"])
    targets, weights = next_token_targets(batch)
    computed = weights
    if chosen_nll:
        _, every = next_token_targets({k: v for k, v in batch.items() if k != "loss_mask"})
        every = every * (seg % 2 == 1)  # chosen sequences only
        computed = jnp.maximum(weights, every)
    nll, _ = token_nll(hidden, lm_head_kernel(config, params), targets, chunk_size=chunk_size,
                       weights_bt=computed, keep_gb=keep_gb)
    index = jnp.where(seg > 0, seg - 1, length)  # 2k + side; padding dropped

    def per_sequence(v):  # [rows, length] -> [rows, length // 2, 2]
        summed = jax.vmap(lambda x, i: jax.ops.segment_sum(x, i, num_segments=length))(v, index)
        return summed.reshape(rows, length // 2, 2)

    logps, lengths = per_sequence(-(nll * weights)), per_sequence(weights)
    if chosen_nll:
        return logps, lengths, ((nll * every).sum(), every.sum())
    return logps, lengths


def sequence_logps(config: ModelConfig, params, batch: dict, *, chunk_size: int = 1024,
                   chosen_nll: bool = False, max_completion: int = 0, keep_gb: float = 0.0):
    """Sum of response-token log-probs and response length, both ``[pairs, 2]`` (packed
    batches: ``[rows, seq_len, 2]``, one slot per possible pair of a row).

    With ``chosen_nll``, also the summed NLL and the count of every predicted
    token of the chosen sequences (prompt and response: ORPO's NLL term).
    ``max_completion`` > 0: no response is longer (the pipeline truncated them), so the
    vocabulary projection runs on that many positions per row (``token_nll``).
    ``keep_gb``: the softmax kept for the backward pass when it fits (``token_nll``).
    """
    if is_packed(batch):
        return _packed_sequence_logps(config, params, batch, chunk_size, chosen_nll, keep_gb)
    rows = flatten_pairs(batch)
    hidden = forward_hidden(config, params, rows["input_ids"], segment_ids=rows["segment_ids"],
                            positions=rows["positions"])
    targets, weights = next_token_targets(rows)
    computed = weights
    if chosen_nll:
        _, every = next_token_targets({k: v for k, v in rows.items() if k != "loss_mask"})
        every = every * (jnp.arange(every.shape[0]) % 2 == 0)[:, None]  # chosen rows only
        computed = jnp.maximum(weights, every)
    nll, _ = token_nll(hidden, lm_head_kernel(config, params), targets, chunk_size=chunk_size,
                       weights_bt=computed, max_weighted=0 if chosen_nll else max_completion,
                       keep_gb=keep_gb)
    pairs = batch["input_ids"].shape[0]
    logps = -(nll * weights).sum(-1).reshape(pairs, 2)
    lengths = weights.sum(-1).reshape(pairs, 2)
    if chosen_nll:
        return logps, lengths, ((nll * every).sum(), every.sum())
    return logps, lengths


def pair_losses(loss_type: str, policy: jax.Array, reference: jax.Array | None,
                lengths: jax.Array, *, beta: float, label_smoothing: float = 0.0,
                gamma: float = 0.0, real: jax.Array | None = None
                ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-pair losses and the implicit rewards (chosen, rejected), all ``[pairs]``.

    ``policy`` / ``reference``: summed sequence logps ``[pairs, 2]``; ``lengths``:
    response token counts ``[pairs, 2]``. For ORPO this is the odds-ratio term
    only; ``dpo_loss`` adds its NLL, a token mean over the batch. ``real`` ``[pairs]``
    (1 for a real pair, 0 for padding) weights the batch means of ``kto_pair``.
    """
    eps = label_smoothing
    avg = policy / jnp.maximum(lengths, 1.0)
    if loss_type == "simpo":
        logits = avg[:, 0] - avg[:, 1]
        losses = (-(1 - eps) * log_sigmoid(beta * logits - gamma)
                  - eps * log_sigmoid(-(beta * logits - gamma)))
        return losses, beta * avg[:, 0], beta * avg[:, 1]
    if loss_type == "orpo":
        # log odds of the length-normalised probability p: log p - log(1 - p); an empty
        # sequence (a padding row, an empty slot of a packed batch) gets a finite stand-in
        # so that no inf reaches the gradient through the masked mean
        avg = jnp.where(lengths > 0, avg, -1.0)
        log_odds = (avg[:, 0] - avg[:, 1]) - (jnp.log1p(-jnp.exp(avg[:, 0]))
                                              - jnp.log1p(-jnp.exp(avg[:, 1])))
        losses = -beta * log_sigmoid(log_odds)
        return losses, beta * avg[:, 0], beta * avg[:, 1]

    ratios = policy - reference  # [pairs, 2]: cr, rr
    if loss_type == "ipo":  # per-token averaged log-ratios
        ratios = ratios / jnp.maximum(lengths, 1.0)
    cr, rr = ratios[:, 0], ratios[:, 1]
    d = cr - rr
    if loss_type == "sigmoid":
        losses = -(1 - eps) * log_sigmoid(beta * d) - eps * log_sigmoid(-beta * d)
    elif loss_type == "hinge":
        losses = jax.nn.relu(1 - beta * d)
    elif loss_type == "ipo":
        losses = (d - 1 / (2 * beta)) ** 2
    elif loss_type == "robust":
        losses = ((-(1 - eps) * log_sigmoid(beta * d) + eps * log_sigmoid(-beta * d))
                  / (1 - 2 * eps))
    elif loss_type == "nca_pair":
        losses = (-log_sigmoid(beta * cr) - 0.5 * log_sigmoid(-beta * cr)
                  - 0.5 * log_sigmoid(-beta * rr))
    elif loss_type == "bco_pair":
        losses = -log_sigmoid(beta * cr) - log_sigmoid(-beta * rr)
    elif loss_type == "sppo_hard":
        losses = (cr - 1 / (2 * beta)) ** 2 + (rr + 1 / (2 * beta)) ** 2
    elif loss_type == "apo_zero":
        losses = (1 - jax.nn.sigmoid(beta * cr)) + jax.nn.sigmoid(beta * rr)
    elif loss_type == "kto_pair":
        # TRL 0.7.8-0.9.4 (UltraMedical's; since removed from TRL): each side's KL
        # estimate is the batch mean of the *other* side's log-ratio, clamped at 0 (not
        # detached); the loss is the mean of the 2N terms, i.e. per pair the mean of its
        # chosen and rejected term.
        w = jnp.ones_like(cr) if real is None else real
        n = jnp.maximum(w.sum(), 1.0)
        kl_chosen = jnp.maximum((cr * w).sum() / n, 0.0)
        kl_rejected = jnp.maximum((rr * w).sum() / n, 0.0)
        losses = 0.5 * ((1 - jax.nn.sigmoid(beta * (cr - kl_rejected)))
                        + (1 - jax.nn.sigmoid(beta * (kl_chosen - rr))))
    else:
        raise ValueError(f"objective.loss_type: unknown {loss_type!r} (known: {LOSS_TYPES})")
    raw = policy - reference  # rewards are always on summed log-ratios
    return losses, beta * raw[:, 0], beta * raw[:, 1]


def dpo_loss(config: ModelConfig, params, batch: dict, rng=None, *, loss_type: str = "sigmoid",
             beta: float = 0.1, label_smoothing: float = 0.0, gamma: float = 0.0,
             sft_weight: float = 0.0, chunk_size: int = 1024, max_completion: int = 0,
             keep_gb: float = 0.0):
    """Mean preference loss over the pairs of a batch, with TRL's metrics.

    ``batch["ref_logps"]`` ``[pairs, 2]`` is required unless the loss is
    reference-free (simpo, orpo). ``metrics["weight"]`` counts real pairs
    (padding rows of a short final batch have no response tokens).
    """
    del rng
    if loss_type == "orpo":
        policy, lengths, (nll_sum, nll_count) = sequence_logps(
            config, params, batch, chunk_size=chunk_size, chosen_nll=True, keep_gb=keep_gb)
    else:
        policy, lengths = sequence_logps(config, params, batch, chunk_size=chunk_size,
                                         max_completion=max_completion, keep_gb=keep_gb)
    reference = None if loss_type in REFERENCE_FREE else batch["ref_logps"].reshape(-1, 2)
    policy, lengths = policy.reshape(-1, 2), lengths.reshape(-1, 2)  # packed: every slot
    real = (lengths[:, 0] > 0).astype(jnp.float32)
    losses, r_chosen, r_rejected = pair_losses(loss_type, policy, reference, lengths, beta=beta,
                                               label_smoothing=label_smoothing, gamma=gamma,
                                               real=real)
    n = jnp.maximum(real.sum(), 1.0)

    def mean(x):
        return jnp.where(real > 0, x, 0.0).sum() / n

    loss = mean(losses)
    if loss_type == "orpo":  # TRL: NLL over the chosen sequences' tokens, prompt included
        loss = loss + nll_sum / jnp.maximum(nll_count, 1.0)
    if sft_weight:  # TRL's "sft" loss: NLL over all chosen response tokens of the batch
        loss = loss + sft_weight * (-policy[:, 0].sum() / jnp.maximum(lengths[:, 0].sum(), 1.0))
    metrics = {
        "rewards/chosen": mean(r_chosen),
        "rewards/rejected": mean(r_rejected),
        "rewards/accuracies": mean((r_chosen > r_rejected).astype(jnp.float32)),
        "rewards/margins": mean(r_chosen - r_rejected),
        "logps/chosen": mean(policy[:, 0]),
        "logps/rejected": mean(policy[:, 1]),
        "weight": real.sum(),
    }
    return loss, metrics


# --------------------------------------------------------------------------- unit
def _dpo_config(c) -> None:
    o = c.objective
    # sigmoid | hinge | ipo | robust | nca_pair | bco_pair | sppo_hard | apo_zero | kto_pair
    # (TRL 0.7.8-0.9.4) | simpo | orpo
    o.loss_type = "sigmoid"
    o.beta = 0.1  # for orpo: its lambda
    o.label_smoothing = 0.0
    o.gamma = 0.0  # simpo's margin
    o.sft_weight = 0.0  # adds w x NLL of the chosen responses (TRL loss_type "sft", rpo_alpha)
    o.reference = "frozen"  # frozen | precompute | a model directory | precompute:DIR
    o.loss_chunk_size = 1024
    # Responses truncated to this many tokens (TRL's max_completion_length; 0: what fits in
    # seq_len): the vocabulary projection then runs on that many positions per row only
    o.max_completion_length = 0
    # GiB per device the vocabulary softmax of a step may take to be kept for the backward
    # pass (three vocabulary-sized matmuls instead of four; 0: always recomputed). Off: on
    # the 2-core CPU the medium DPO step ran 0.96x as fast with it (the loss alone 1.1x)
    o.loss_keep_gb = 0.0


def _make_dpo_loss(o, model_config: ModelConfig):
    if o.loss_type not in LOSS_TYPES:
        raise ValueError(f"objective.loss_type={o.loss_type!r}: known {LOSS_TYPES}")
    return functools.partial(dpo_loss, model_config, loss_type=o.loss_type, beta=o.beta,
                             label_smoothing=o.label_smoothing, gamma=o.gamma,
                             sft_weight=o.sft_weight, chunk_size=o.loss_chunk_size,
                             max_completion=o.get("max_completion_length", 0),
                             keep_gb=o.get("loss_keep_gb", 0.0))


register(Objective(
    name="dpo", kind="preference", add_config=_dpo_config, make_loss=_make_dpo_loss,
    metrics=("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
             "logps/chosen", "logps/rejected"),
    references=("frozen", "precompute", "model"),
    needs_reference=lambda o: o.loss_type not in REFERENCE_FREE, title="DPO"))
