"""The loop as a generator of steps plus hooks.

``Trainer.steps(until)`` runs the jitted train step on batches from ``trainer.data`` and,
after each, the hooks that are due, then yields a ``StepInfo``. A caller may stop
consuming, do other device work with ``trainer.state`` (sampling, scoring), give the
trainer new data (``trainer.data``: any iterator of process-local batches with
``get_state`` / ``set_state``, which checkpoints record) and call ``steps`` again:
checkpoints and resume stay exact because a checkpoint holds the state and the data
iterator's position at the same step.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable, Iterator

import jax

from .batches import all_processes, device_batch
from .hooks import StopTraining

log = logging.getLogger(__name__)


@dataclasses.dataclass
class StepInfo:
    step: int  # steps done (the state's step count)
    state: dict  # the state after this step
    metrics: dict  # the step's metrics (device arrays; hooks may add host values)
    local: dict  # this process's batch (numpy)


class Results(dict):
    """The last logged value of each metric; ``steps[name]`` is the step it was logged at
    (a run's values come from different steps: the last eval is not the last log)."""

    def __init__(self):
        super().__init__()
        self.steps: dict[str, int] = {}

    def record(self, step: int, values: dict) -> None:
        self.update(values)
        self.steps.update(dict.fromkeys(values, int(step)))

    def summary(self) -> str:
        """``step N: name value, ...`` per step, values with 6 significant digits."""
        by_step: dict = {}
        for k, v in self.items():
            by_step.setdefault(self.steps.get(k), []).append(f"{k} {float(v):.6g}")
        return "; ".join(f"step {s}: " + ", ".join(items) if s is not None else
                         ", ".join(items) for s, items in sorted(
                             by_step.items(), key=lambda x: -1 if x[0] is None else x[0]))


@dataclasses.dataclass
class _Hook:
    fn: Callable
    every: int
    last: bool


class Trainer:
    def __init__(self, config, setup, data, *, references: dict | None = None,
                 checkpointer=None):
        self.config, self.setup, self.data = config, setup, data
        self.state = setup.state
        self.references = references or {}
        self.ckpt = checkpointer
        self.step = self.start = 0
        self.hooks: list[_Hook] = []
        self.results = Results()  # the last logged value of every metric, and its step
        self.stopped: str | None = None  # why a hook stopped the loop
        self._config_dict = config.to_dict()

    def add_hook(self, fn: Callable, every: int = 1, *, last: bool = False) -> None:
        """Runs ``fn(info)`` after every ``every``-th step (0: never), and after the run's
        last step (``config.steps``) when ``last``. Hooks run in the order added."""
        self.hooks.append(_Hook(fn, every, last))

    def device_batch(self, local: dict, split: str = "train") -> dict:
        return device_batch(local, self.setup.batch_sharding, self.references.get(split))

    # ------------------------------------------------------------ checkpoints
    def restore(self) -> int:
        """Resumes from the newest checkpoint, if any (state and data position); returns
        the step the run starts from."""
        if self.ckpt.latest_step() is not None:
            abstract = jax.tree.map(
                lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                self.state)
            step, state = self.ckpt.restore_newest(
                abstract, self.data, fallback=self.config.checkpoint.fallback)
            if step is not None:
                self.state, self.step, self.start = state, step, step
        return self.start

    def save(self, step: int, *, force: bool = False) -> None:
        self.ckpt.save(step, self.state, self.data, self._config_dict, force=force)

    # ------------------------------------------------------------------ steps
    def _next_local(self) -> dict | None:
        local = next(self.data, None)
        exhausted = local is None
        if self.config.epochs and jax.process_count() > 1:  # every process stops together
            exhausted = not all_processes(not exhausted).all()
        return None if exhausted else local

    def steps(self, until: int | None = None) -> Iterator[StepInfo]:
        """Steps until ``until`` (default ``config.steps``), the data's end, or a hook's
        ``StopTraining``."""
        until = self.config.steps if until is None else min(until, self.config.steps)
        while self.step < until and self.stopped is None:
            local = self._next_local()
            if local is None:
                log.info("data exhausted after %d epochs at step %d", self.config.epochs,
                         self.step)
                return
            with jax.set_mesh(self.setup.mesh):
                self.state, metrics = self.setup.step_fn(self.state,
                                                         self.device_batch(local))
                self.step += 1
                info = StepInfo(self.step, self.state, metrics, local)
                try:
                    for h in self.hooks:
                        if (h.every and self.step % h.every == 0) or (
                                h.last and self.step == self.config.steps):
                            h.fn(info)
                except StopTraining as e:
                    self.stopped = str(e)
            yield info

    def finish(self) -> None:
        """After the last step: a final checkpoint unless this step has one."""
        if self.step > self.start and self.ckpt.latest_step() != self.step:
            self.save(self.step, force=True)

    def close(self) -> None:
        """Ends the hooks (signal handlers restored, bars closed) and waits for saves."""
        for h in self.hooks:
            if hasattr(h.fn, "close"):
                h.fn.close()
        if self.ckpt is not None:
            self.ckpt.wait()
            self.ckpt.close()
