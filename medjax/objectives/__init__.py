"""Objectives: pure loss functions ``loss_fn(params, batch, rng) -> (loss, metrics)``."""

from .lm import lm_loss, next_token_targets, token_nll

__all__ = ["lm_loss", "next_token_targets", "token_nll"]
