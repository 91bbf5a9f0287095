"""Each hook of the loop on its own, and the Trainer's steps-plus-hooks generator."""

import os
import signal
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax.parallel import make_mesh
from medjax.training import hooks
from medjax.training.state import batch_sharding_for
from medjax.training.trainer import StepInfo, Trainer


class Writer:
    def __init__(self):
        self.rows = []

    def write(self, step, metrics):
        self.rows.append((step, dict(metrics)))


def info(step, *, loss=1.0, grad_norm=1.0, update_norm=1.0, rows=2, length=4, real=None):
    seg = np.ones((rows, length), np.int32)
    if real is not None:
        seg[:, real:] = 0
    metrics = {"loss": jnp.float32(loss), "grad_norm": jnp.float32(grad_norm),
               "update_norm": jnp.float32(update_norm), "weight": jnp.float32(8),
               "nonfinite": jnp.int32(not all(np.isfinite([loss, grad_norm, update_norm])))}
    return StepInfo(step, {"params": {"w": jnp.ones(2)}}, metrics,
                    {"input_ids": np.zeros((rows, length), np.int32), "segment_ids": seg})


def test_nonfinite_guard_stops_naming_step_and_metric():
    guard = hooks.NonFiniteGuard(0, latest=lambda: 5)
    guard(info(6))  # finite: nothing happens
    with pytest.raises(hooks.NonFiniteError, match=r"step 7: loss is nan.*newest checkpoint "
                                                   r"is step 5"):
        guard(info(7, loss=float("nan")))
    with pytest.raises(hooks.NonFiniteError, match="step 8: grad_norm is inf.*no checkpoint"):
        hooks.NonFiniteGuard(0)(info(8, grad_norm=float("inf")))


def test_nonfinite_guard_skips_up_to_n():
    guard = hooks.NonFiniteGuard(2)
    first = info(1, update_norm=float("inf"))
    guard(first)
    assert first.metrics["nonfinite_skipped"] == 1
    ok = info(2)
    guard(ok)
    assert ok.metrics["nonfinite_skipped"] == 1
    guard(info(3, loss=float("nan")))
    with pytest.raises(hooks.NonFiniteError, match="step 4: update_norm is inf"):
        guard(info(4, update_norm=float("inf")))


def test_log_metrics_counts_tokens_and_writes_when_due():
    w, results = Writer(), {}
    log = hooks.LogMetrics(w, every=3, last_step=4, flops_per_token=10.0, peak_flops=1e12,
                           results=results)
    for step in (1, 2, 3):
        log(info(step, real=3))  # 3 of 4 tokens real
    assert [s for s, _ in w.rows] == [3]
    row = w.rows[0][1]
    assert "weight" not in row and "nonfinite" not in row
    assert row["packing_efficiency"] == pytest.approx(0.75)
    assert row["tokens_per_second"] == pytest.approx(3 * 8 / (row["step_time"] * 3), rel=1e-6)
    assert row["mfu"] == pytest.approx(10.0 * row["tokens_per_second"] / (
        1e12 * jax.device_count()))
    log(info(4))  # the last step is always written, its counters restarted at step 3
    assert [s for s, _ in w.rows] == [3, 4] and w.rows[1][1]["packing_efficiency"] == 1.0
    assert results["loss"] == 1.0


def test_progress_bar_counts_steps_and_shows_the_logged_loss():
    results = {}
    bar = hooks.ProgressBar(total=10, initial=4, results=results)
    bar(info(5))
    results.update(loss=0.5, tokens_per_second=100.0)
    bar(info(6))
    assert bar.bar.n == 6 and "loss=0.5000" in str(bar.bar)
    bar.close()


def test_evaluate_writes_eval_metrics_at_the_step():
    w, results, seen = Writer(), {}, []

    def evaluator(params):
        seen.append(float(params["w"].sum()))
        return {"eval/loss": 2.0}

    hooks.Evaluate(evaluator, w, results)(info(25))
    assert w.rows == [(25, {"eval/loss": 2.0})] and results == {"eval/loss": 2.0}
    assert seen == [2.0]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_preemption_saves_at_the_step_boundary_then_stops(sig):
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when pytest was started with nohup &
    saved = []
    hook = hooks.Preemption(lambda step, force=False: saved.append((step, force)))
    try:
        hook(info(3))
        assert saved == []
        os.kill(os.getpid(), sig)
        with pytest.raises(hooks.StopTraining):
            hook(info(4))
        assert saved == [(4, True)]
        if sig == signal.SIGINT:  # a second Ctrl-C stops at once
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
    finally:
        hook.close()
    assert signal.getsignal(signal.SIGINT) is before  # the handler it found is restored


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_before_the_first_step_exits_at_once(sig):
    """SIGTERM while the data was still being read (no step reached) was only noted for
    the next step boundary, which never came."""
    before = signal.getsignal(signal.SIGINT)
    saved = []
    hook = hooks.Preemption(lambda step, force=False: saved.append(step))
    try:
        with pytest.raises(SystemExit) as e:
            os.kill(os.getpid(), sig)
        assert e.value.code == 128 + sig and saved == []
    finally:
        hook.close()
    assert signal.getsignal(signal.SIGINT) is before


def test_checkpoint_hook_saves_its_step():
    saved = []
    hooks.Checkpoint(lambda step, force=False: saved.append(step))(info(50))
    assert saved == [50]


class Data:
    """An iterator of local batches with a position (like Grain's)."""

    def __init__(self, start=0, stop=100):
        self.i, self.stop = start, stop

    def __iter__(self):
        return self

    def __next__(self):
        if self.i >= self.stop:
            raise StopIteration
        self.i += 1
        return {"x": np.full((8, 2), self.i, np.float32)}

    def get_state(self):
        return {"i": self.i}

    def set_state(self, state):
        self.i = state["i"]


def _fake_trainer(steps=6, epochs=0):
    mesh = make_mesh(1, 1, 1, devices=jax.devices()[:1])

    def step_fn(state, batch):
        return ({"step": state["step"] + 1, "params": state["params"] + batch["x"].sum()},
                {"loss": batch["x"].mean(), "nonfinite": jnp.int32(0)})

    s = types.SimpleNamespace(mesh=mesh, step_fn=jax.jit(step_fn), state={
        "step": jnp.int32(0), "params": jnp.float32(0)},
        batch_sharding=batch_sharding_for(mesh))
    config = types.SimpleNamespace(steps=steps, epochs=epochs, to_dict=lambda: {})
    return Trainer(config, s, Data())


def test_trainer_runs_hooks_when_due_and_can_be_interleaved():
    t = _fake_trainer(steps=7)
    calls = []
    t.add_hook(lambda i: calls.append(("every", i.step)))
    t.add_hook(lambda i: calls.append(("third", i.step)), 3, last=True)
    t.add_hook(lambda i: calls.append(("never", i.step)), 0)
    got = [i.step for i in t.steps(until=4)]  # the caller runs 4 steps ...
    assert got == [1, 2, 3, 4] and float(t.state["params"]) == 8 * 2 * (1 + 2 + 3 + 4)
    t.data = Data(start=100, stop=200)  # ... does other work, brings new data, continues
    got = [(i.step, float(i.metrics["loss"])) for i in t.steps()]
    assert got == [(5, 101.0), (6, 102.0), (7, 103.0)]
    assert [c for c in calls if c[0] == "third"] == [("third", 3), ("third", 6), ("third", 7)]
    assert len([c for c in calls if c[0] == "every"]) == 7 and not any(
        c[0] == "never" for c in calls)


def test_trainer_stops_when_a_hook_says_so_or_the_data_ends():
    t = _fake_trainer(steps=50)

    def stop_at_2(i):
        if i.step == 2:
            raise hooks.StopTraining("test")

    t.add_hook(stop_at_2)
    assert [i.step for i in t.steps()] == [1, 2] and t.stopped == "test"
    t = _fake_trainer(steps=500)
    assert len(list(t.steps())) == 100  # Data ends after 100 batches


def test_a_caller_swaps_the_data_between_steps_and_the_resume_is_exact(tmp_path):
    """The online loop's pattern on the real step: 2 steps on one dataset, new data, 2 more
    (checkpoint at 4), 2 more; a fresh trainer restored from step 4 with the new data
    continues with the same losses and parameters."""
    from conftest import load_config

    from medjax.data.pipeline import pipeline_from_config
    from medjax.data.samples import path as sample_path
    from medjax.training.checkpointing import Checkpointer
    from medjax.training.state import setup

    lines = open(sample_path("pretrain.jsonl")).readlines()
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text("".join(lines[: len(lines) // 2]))
    second.write_text("".join(lines[len(lines) // 2:]))
    config = load_config("pretrain", **{"data.sources": str(first), "steps": 6,
                                        "batch_size": 8, "seq_len": 64, "mesh.fsdp": 4,
                                        "mesh.tensor": 2})

    def trainer(sources):
        s = setup(config)
        with config.unlocked():
            config.data.sources = str(sources)
        t = Trainer(config, s, pipeline_from_config(config, s.tokenizer, None),
                    checkpointer=Checkpointer(str(tmp_path / "ckpt"), keep=3))
        t.add_hook(hooks.Checkpoint(t.save), 4)
        return t

    a = trainer(first)
    losses = {i.step: float(i.metrics["loss"]) for i in a.steps(until=2)}
    with config.unlocked():
        config.data.sources = str(second)
    a.data = pipeline_from_config(config, a.setup.tokenizer, None)  # the caller's new batches
    losses.update({i.step: float(i.metrics["loss"]) for i in a.steps()})
    a.close()
    assert sorted(losses) == [1, 2, 3, 4, 5, 6]

    b = trainer(second)
    assert b.restore() == 4
    again = {i.step: float(i.metrics["loss"]) for i in b.steps()}
    b.close()
    assert again == {5: losses[5], 6: losses[6]}, (again, losses)
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)),
                 a.state["params"], b.state["params"])


def test_a_steps_checkpoint_is_written_before_its_evaluation(tmp_path):
    """With eval.every == checkpoint.every, an evaluation that failed (e.g. an eval file
    gone) ran before the checkpoint of that step, so the step's progress was lost."""
    import types

    from conftest import load_config
    from medjax.models import get_preset
    from medjax.training.loop import add_default_hooks
    added = []
    trainer = types.SimpleNamespace(
        results={}, start=0, save=lambda *a, **k: None,
        ckpt=types.SimpleNamespace(latest_step=lambda: None),
        add_hook=lambda fn, every=1, last=False: added.append(type(fn).__name__))
    c = load_config("sft", **{"eval.every": 50, "checkpoint.every": 50,
                              "logging.progress": False})
    evaluate = hooks.Evaluate(lambda params: {}, None, {})
    from medjax import objectives
    setup = types.SimpleNamespace(model_config=get_preset("llama3_tiny"),
                                  unit=objectives.get("sft"), state={"params": {}})
    add_default_hooks(trainer, c, setup, None, evaluate)
    try:
        assert added.index("Checkpoint") < added.index("Evaluate"), added
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
