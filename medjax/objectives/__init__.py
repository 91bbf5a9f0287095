"""Objectives: pure loss functions ``loss_fn(params, batch, rng) -> (loss, metrics)``, each
registered once as an ``Objective`` unit (``registry.py``); ``get(name)`` returns it."""

from .lm import lm_loss, next_token_targets, token_nll
from .registry import Objective, get, names, register

__all__ = ["lm_loss", "next_token_targets", "token_nll", "Objective", "get", "names",
           "register"]
