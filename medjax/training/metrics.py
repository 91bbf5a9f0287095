"""Metrics: JSONL (process 0), TensorBoard event files, FLOP accounting."""

from __future__ import annotations

import json
import logging
import os

import jax

from ..models import ModelConfig

log = logging.getLogger(__name__)

# Dense bf16 peak FLOP/s per device from datasheets, by device_kind substring.
GPU_PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12}


def device_peak_flops() -> float | None:
    kind = jax.devices()[0].device_kind
    for name, peak in GPU_PEAK_FLOPS.items():
        if name in kind:
            return peak
    return None


def train_flops_per_token(config: ModelConfig, seq_len: int, *, head: str = "lm",
                          trainable: int = 0) -> float:
    """Model FLOPs per trained token: 6 * matmul params + causal attention.

    Matmul parameters exclude the embedding lookup (not a matmul) but include
    the LM head, except for a reward model (``head`` other than "lm": its scalar head is
    one dot on one token a row); a mixture-of-experts layer counts the experts a token
    runs through (``experts_per_token``) and its router. Attention: 6 * layers * heads *
    head_dim * seq_len (QK^T and AV, forward and backward, halved for the causal mask).
    With LoRA (``config.lora``) the base's weight gradients are not computed: 4 x the
    base's matmul params (forward and input gradients) + 6 x the ``trainable`` params.
    """
    n = config.num_params - config.vocab_size * config.hidden_size * (
        0 if config.tie_embeddings else 1)
    if config.num_experts:  # a token runs through experts_per_token experts, not all
        n -= (config.num_layers * 3 * config.hidden_size * config.intermediate_size
              * (config.num_experts - config.experts_per_token))
    if head != "lm":
        n -= config.vocab_size * config.hidden_size
    attn = 6 * config.num_layers * config.num_heads * config.head_dim * seq_len
    if config.lora is not None:
        return 4 * n + 6 * trainable + attn
    return 6 * n + attn


def trim_jsonl(path: str, resume_step: int) -> None:
    """Drops the records of a step-keyed JSONL file (metrics, samples) past the checkpoint
    a run resumes from, since they will be written again (all of them when there is no
    checkpoint to resume from); a line torn by a kill or a full disk is dropped."""
    if not os.path.exists(path):
        return
    kept = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            try:
                row = json.loads(line) if line.strip() else None
            except ValueError:
                log.warning("%s:%d: dropped a damaged line (%r)", path, n, line[:60])
                continue
            if resume_step and isinstance(row, dict) and row.get("step", 0) <= resume_step:
                kept.append(json.dumps(row) + "\n")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(kept)
    os.replace(tmp, path)


class MetricsWriter:
    """Appends one JSON object per logged step to ``metrics.jsonl`` (process 0 only)."""

    def __init__(self, workdir: str, *, resume_step: int = 0, tensorboard: bool = True):
        self.enabled = jax.process_index() == 0
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if not self.enabled:
            return
        trim_jsonl(self.path, resume_step)
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter
                self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
            except ImportError:
                self._tb = None

    def write(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in record.items():
                if k != "step":
                    self._tb.add_scalar(k, v, step)
            self._tb.flush()

    def text(self, step: int, tag: str, text: str) -> None:
        """A text entry in TensorBoard (nothing without it)."""
        if self.enabled and self._tb is not None:
            self._tb.add_text(tag, text, step)
            self._tb.flush()

    def close(self):
        if self._tb is not None:
            self._tb.close()
