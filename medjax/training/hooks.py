"""The loop's hooks: each is a callable ``hook(info)`` run after a step (``Trainer.add_hook``
says how often), with an optional ``close()`` at the end of the run.

  NonFiniteGuard   a NaN/inf loss or gradient norm stops the run (or is skipped, up to N)
  LogMetrics       metrics.jsonl / TensorBoard with throughput, packing and MFU
  ProgressBar      tqdm on process 0
  Evaluate         held-out metrics (``Evaluator``)
  SampleCompletions greedy completions of eval.samples prompts -> samples.jsonl
  Preemption       SIGTERM / Ctrl-C: save at this step boundary and stop
  Checkpoint       Orbax save {state, data iterator, config}

A hook stops the loop by raising ``StopTraining`` (the loop ends cleanly) or another
exception (the run fails, nothing more is saved).
"""

from __future__ import annotations

import logging
import signal
import time

import jax
import numpy as np

log = logging.getLogger(__name__)


def _record(results: dict, step: int, values: dict) -> None:
    """Into the run's results, with the step when they track it (``trainer.Results``)."""
    if hasattr(results, "record"):
        results.record(step, values)
    else:
        results.update(values)


class StopTraining(Exception):
    """Raised by a hook to end the loop after this step (not an error)."""


class NonFiniteError(FloatingPointError):
    """A step's loss or gradient norm was NaN or inf (one line, names the step)."""


class NonFiniteGuard:
    """Reads each step's ``nonfinite`` flag (a NaN/inf loss, gradient norm or update norm:
    the step did not apply that update). Past
    ``skip`` such steps the run stops with ``NonFiniteError``; before that the step is
    skipped and counted as ``nonfinite_skipped`` (in the metrics when ``skip`` > 0).
    ``latest`` gives the newest checkpoint step, for the message."""

    def __init__(self, skip: int = 0, latest=lambda: None):
        self.skip, self.latest, self.skipped = skip, latest, 0

    def __call__(self, info) -> None:
        if int(info.metrics["nonfinite"]):
            values = jax.device_get({k: info.metrics[k]
                                     for k in ("loss", "grad_norm", "update_norm")})
            bad = next(k for k, v in values.items() if not np.isfinite(v))
            self.skipped += 1
            if self.skipped > self.skip:
                latest = self.latest()
                raise NonFiniteError(
                    f"step {info.step}: {bad} is {float(values[bad])}; the update was not "
                    "applied and nothing was saved ("
                    + (f"the newest checkpoint is step {latest}" if latest is not None
                       else "no checkpoint yet")
                    + "); lower optimizer.lr, check the data and tokenizer, or set "
                    "optimizer.skip_nonfinite=N to skip up to N such steps")
            log.warning("step %d: %s is %s; update skipped (%d of at most %d)", info.step,
                        bad, float(values[bad]), self.skipped, self.skip)
        if self.skip:
            info.metrics["nonfinite_skipped"] = self.skipped


class LogMetrics:
    """Every step: counts tokens; when due (``every``, and the last step): writes the
    step's metrics with step time, tokens/s, real (non-padding) fraction and MFU."""

    def __init__(self, writer, *, every: int, last_step: int, flops_per_token: float,
                 peak_flops: float | None, results: dict):
        self.writer, self.every, self.last_step = writer, every, last_step
        self.flops_per_token, self.peak = flops_per_token, peak_flops
        self.results = results  # the last logged values (run() returns them)
        self._reset(time.perf_counter())

    def _reset(self, now):
        self.t0, self.steps, self.tokens, self.real = now, 0, 0, 0

    def __call__(self, info) -> None:
        n = jax.process_count()
        self.steps += 1
        self.tokens += info.local["input_ids"].size * n
        self.real += int(np.sum(info.local["segment_ids"] != 0)) * n
        if info.step % self.every and info.step != self.last_step:
            return
        metrics = jax.device_get(info.metrics)
        now = time.perf_counter()
        dt = now - self.t0
        out = {k: v for k, v in metrics.items() if k not in ("weight", "nonfinite")}
        out.update(step_time=dt / self.steps, tokens_per_second=self.tokens / dt,
                   packing_efficiency=self.real / self.tokens)
        if self.peak:
            out["mfu"] = self.flops_per_token * self.tokens / dt / (
                self.peak * jax.device_count())
        self.writer.write(info.step, out)
        _record(self.results, info.step, out)
        log.info("step %d: loss %.4f, %.0f tokens/s", info.step, out["loss"],
                 out["tokens_per_second"])
        self._reset(now)


class ProgressBar:
    """A tqdm bar on process 0 with the last logged loss, tokens/s and an ETA from the
    measured step time (tqdm's own would count dispatched steps, which run ahead of
    the device). While it is open, medjax's log lines go through ``tqdm.write`` (above
    the bar, never glued onto it)."""

    def __init__(self, total: int, initial: int, results: dict):
        from tqdm import tqdm
        self.results = results
        self.bar = tqdm(total=total, initial=initial, desc="train", unit="step",
                        dynamic_ncols=True,
                        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")
        self.logger = logging.getLogger("medjax")
        self.handler = _TqdmLogHandler(self.bar)
        self.propagate = self.logger.propagate
        self.logger.addHandler(self.handler)
        self.logger.propagate = False

    def __call__(self, info) -> None:
        self.bar.update(1)
        r = self.results
        if "loss" in r:
            left = max(self.bar.total - self.bar.n, 0) * r.get("step_time", 0.0)
            self.bar.set_postfix(loss=f"{r['loss']:.4f}", tok_s=f"{r['tokens_per_second']:.0f}",
                                 **({"eta": self.bar.format_interval(left)}
                                    if "step_time" in r else {}), refresh=False)

    def close(self):
        self.logger.removeHandler(self.handler)
        self.logger.propagate = self.propagate
        self.bar.close()


class _TqdmLogHandler(logging.Handler):
    """Log records written above a tqdm bar, in absl's format."""

    def __init__(self, bar):
        super().__init__()
        from absl.logging import PythonFormatter
        self.bar = bar
        self.setFormatter(PythonFormatter())

    def emit(self, record):
        try:
            self.bar.write(self.format(record), file=self.bar.fp)
        except Exception:  # noqa: BLE001 - logging must never stop training
            self.handleError(record)


class Evaluate:
    """Held-out metrics of the current parameters, written at the step."""

    def __init__(self, evaluator, writer, results: dict):
        self.evaluator, self.writer, self.results = evaluator, writer, results

    def __call__(self, info) -> None:
        self.run(info.step, info.state["params"])

    def run(self, step: int, params) -> dict:
        m = self.evaluator(params)
        self.writer.write(step, m)
        _record(self.results, step, m)
        log.info("step %d: %s", step, m)
        return m


class Benchmarks:
    """Multiple-choice benchmarks of the current parameters (``eval.benchmarks``), scored as
    ``python -m medjax.evaluate`` scores them; ``bench/<task>/acc`` (and ``acc_norm``,
    groups' ``acc``) written at the step."""

    def __init__(self, score, writer, results: dict):
        self.score, self.writer, self.results = score, writer, results

    def __call__(self, info) -> None:
        self.run(info.step, info.state["params"])

    def run(self, step: int, params) -> dict:
        out = self.score(params)
        m = {}
        for name, row in {**out["results"], **out["groups"]}.items():
            for metric in ("acc", "acc_norm"):
                if f"{metric},none" in row:
                    m[f"bench/{name}/{metric}"] = row[f"{metric},none"]
        self.writer.write(step, m)
        _record(self.results, step, m)
        log.info("step %d: %s", step, ", ".join(f"{k} {v:.4f}" for k, v in m.items()))
        return m


class SampleCompletions:
    """Greedy completions of a few prompts with the current parameters, written to
    ``WORKDIR/samples.jsonl`` (``{"step", "prompt", "completion", "finish_reason"}``) and
    as TensorBoard text: what the model says, as it trains (``eval.samples``)."""

    def __init__(self, prompts: list, encode, decode, generate_fn, writer, path: str,
                 resume_step: int = 0):
        self.prompts, self.decode, self.generate_fn = prompts, decode, generate_fn
        self.ids = [encode(p) for p in prompts]  # a bad prompt fails at start, not later
        self.writer, self.path = writer, path
        if jax.process_index() == 0:  # samples past the restored step will be redrawn
            from .metrics import trim_jsonl
            trim_jsonl(path, resume_step)

    def __call__(self, info) -> None:
        self.run(info.step, info.state["params"])

    def run(self, step: int, params) -> None:
        import json
        results = self.generate_fn(params, self.ids)
        if jax.process_index() != 0:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            for prompt, r in zip(self.prompts, results):
                text = self.decode(r)
                f.write(json.dumps({"step": int(step), "prompt": prompt, "completion": text,
                                    "finish_reason": r.finish_reason}) + "\n")
                self.writer.text(step, "samples", f"**{prompt}**\n\n{text}")
        log.info("step %d: %d sample completions in %s", step, len(results), self.path)


class Preemption:
    """SIGTERM or Ctrl-C -> ``save(step)`` at the next step boundary, then stop.

    One process: Python handlers; a second Ctrl-C exits at once (KeyboardInterrupt).
    Several processes: they must all stop at the same step, whichever of them got the
    signal and when. JAX's preemption sync manager (started by ``jax.distributed``)
    catches SIGTERM itself and agrees on that step; no handler is installed (a SIGTERM
    one would replace JAX's, and a Ctrl-C seen by the processes at different steps
    cannot be agreed on without a collective every step): Ctrl-C stops them at once."""

    def __init__(self, save):
        self.save, self.requested, self._old = save, None, {}
        self.stepped = False  # a step finished since this run started (else: nothing to save)
        for sig in [signal.SIGINT, signal.SIGTERM] if jax.process_count() == 1 else []:
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread
                pass

    def _handler(self, signum, frame):
        if not self.stepped:  # still reading data or compiling: nothing new to save
            self.close()
            log.warning("%s received before the first step: nothing new to save; exiting",
                        signal.Signals(signum).name)
            raise SystemExit(128 + signum)
        if signum == signal.SIGINT and self.requested is not None:
            self.close()
            raise KeyboardInterrupt  # the second Ctrl-C: stop now
        self.requested = signal.Signals(signum).name
        log.warning("%s received: saving a checkpoint at the next step boundary (Ctrl-C "
                    "again to stop at once)" if signum == signal.SIGINT else
                    "%s received: saving a checkpoint at the next step boundary",
                    self.requested)

    def stop(self, step: int) -> bool:
        """Whether to save and stop after ``step``; every process calls it every step."""
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            return multihost_utils.reached_preemption_sync_point(step)
        return self.requested is not None

    def __call__(self, info) -> None:
        self.stepped = True
        if self.stop(info.step):
            self.save(info.step, force=True)
            log.warning("checkpoint saved at step %d after %s; exiting", info.step,
                        self.requested or "SIGTERM")
            raise StopTraining(self.requested or "SIGTERM")

    def close(self):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}


class Checkpoint:
    """Saves through ``save(step)`` (the run's Checkpointer over the trainer's state)."""

    def __init__(self, save):
        self.save = save

    def __call__(self, info) -> None:
        self.save(info.step)
