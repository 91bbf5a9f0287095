"""Training: set-up, optimizer, train/eval steps, the loop (steps + hooks), references,
checkpoints and metrics."""

from .loop import run
from .step import eval_step, loss_and_grads, train_step
from .trainer import StepInfo, Trainer

__all__ = ["run", "train_step", "eval_step", "loss_and_grads", "Trainer", "StepInfo"]
