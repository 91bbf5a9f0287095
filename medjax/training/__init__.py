"""Training: optimizer, train/eval steps, checkpoints, metrics and the loop."""

from .loop import run
from .step import eval_step, loss_and_grads, train_step

__all__ = ["run", "train_step", "eval_step", "loss_and_grads"]
