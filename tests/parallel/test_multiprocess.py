"""Several JAX processes on 127.0.0.1 (CPU, gloo collectives): launch/local.sh, a 2-process
medjax.train run, and bounded failure (a killed peer, an absent coordinator or peer).

Helpers for other multi-process tests: ``launch_local(n, cmd)`` runs ``launch/local.sh``
and returns every rank's output and the run's metrics; ``train_cmd(workdir, ...)``
builds a ``python -m medjax.train`` command with ``--config.key=value`` overrides;
``spawn(n, cmd)`` starts the processes directly (no local.sh), for tests that kill one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOCAL_SH = os.path.join(ROOT, "launch", "local.sh")

# Quick failure detection in tests (medjax's default is 30 s, see medjax/parallel/distributed.py).
HEARTBEAT_S = 10

# Small SFT run: the tiny model on the bundled conversations, 4 steps, one checkpoint at 2.
TINY_SFT = {"steps": 4, "batch_size": 4, "seq_len": 64, "eval.every": 0, "eval.at_start": False,
            "logging.every": 1, "logging.progress": False, "checkpoint.every": 2}


def _env(devices: int | None = None, **extra) -> dict:
    """A subprocess environment without the test process's 8 fake devices."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MEDJAX_", "SLURM_", "OMPI_"))}
    env.pop("XLA_FLAGS", None)
    env.update(JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
    if devices:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env.update({k: str(v) for k, v in extra.items()})
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_cmd(workdir, config: str = "sft", *flags: str, **overrides) -> list[str]:
    """``python -m medjax.train --config=configs/<config>.py --workdir=... --config.k=v``."""
    return [sys.executable, "-m", "medjax.train", f"--config=configs/{config}.py",
            f"--workdir={workdir}", *flags,
            *(f"--config.{k}={v}" for k, v in overrides.items())]


def read_metrics(workdir) -> list[dict]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


@dataclasses.dataclass
class LocalRun:
    returncode: int
    output: str  # local.sh's stdout+stderr: every rank's lines, prefixed "[rank] "
    logs: list[str]  # each rank's own output, unprefixed (MEDJAX_LOG_DIR)
    seconds: float


def launch_local(n: int, cmd: list[str], *, devices: int = 2, log_dir=None,
                 timeout: float = 300, **env) -> LocalRun:
    """Runs ``launch/local.sh n cmd`` (each process on ``devices`` CPU devices) to the end."""
    import tempfile
    log_dir = str(log_dir or tempfile.mkdtemp(prefix="medjax_local_"))
    t = time.monotonic()
    proc = subprocess.run([LOCAL_SH, str(n), *cmd], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout,
                          env=_env(MEDJAX_LOCAL_DEVICES=devices, MEDJAX_LOG_DIR=log_dir, **env))
    logs = []
    for i in range(n):
        path = os.path.join(log_dir, f"rank{i}.log")
        logs.append(open(path).read() if os.path.exists(path) else "")
    return LocalRun(proc.returncode, proc.stdout + proc.stderr, logs, time.monotonic() - t)


def spawn(n: int, cmd: list[str], out_dir, *, devices: int = 2, port: int | None = None,
          **env) -> list[subprocess.Popen]:
    """Starts ``n`` processes of ``cmd`` directly (rank i's output in out_dir/rank<i>.out)."""
    port = port or free_port()
    procs = []
    for i in range(n):
        out = open(os.path.join(out_dir, f"rank{i}.out"), "w")
        procs.append(subprocess.Popen(
            cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            env=_env(devices, MEDJAX_COORDINATOR=f"127.0.0.1:{port}", MEDJAX_NUM_PROCESSES=n,
                     MEDJAX_PROCESS_ID=i, **env)))
    return procs


def _output(out_dir, i) -> str:
    with open(os.path.join(out_dir, f"rank{i}.out")) as f:
        return f.read()


def _wait_for(predicate, timeout: float, procs=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if any(p.poll() is not None for p in procs):
            raise AssertionError(f"a process exited early: {[p.poll() for p in procs]}")
        time.sleep(0.1)
    raise AssertionError("timed out")


def _kill_and_time_survivor(procs, victim: int, limit: float) -> tuple[int, float]:
    """kill -9 procs[victim]; returns (survivor's exit status, seconds until it exited)."""
    survivor = procs[1 - victim]
    procs[victim].send_signal(signal.SIGKILL)
    t = time.monotonic()
    try:
        rc = survivor.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        survivor.kill()
        raise AssertionError(f"the survivor did not exit within {limit} s of the kill")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    return rc, time.monotonic() - t


# A tiny multi-process program: rows of each process must land on its own devices, in
# process order, for the mesh medjax builds; then a cross-process sum every 50 ms.
WORKER = r"""
import sys, time
import numpy as np
from medjax.parallel import initialize, make_mesh
initialize(timeout_s=60, heartbeat_timeout_s=int(sys.argv[1]))
import jax, jax.numpy as jnp
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P
p, n, local = jax.process_index(), jax.process_count(), jax.local_device_count()
for data in (1, n):
    mesh = make_mesh(data=data, fsdp=-1, tensor=1)
    rows = np.full((local * 2, 3), p, np.float32)
    x = jax.make_array_from_process_local_data(NamedSharding(mesh, P(("data", "fsdp"))), rows)
    assert all((s.data == p).all() for s in x.addressable_shards)
    everything = np.asarray(multihost_utils.process_allgather(x, tiled=True))
    assert (everything[:, 0] == np.repeat(np.arange(n), local * 2)).all(), everything[:, 0]
total = jax.jit(jnp.sum, out_shardings=NamedSharding(mesh, P()))
assert float(total(x)) == 3 * local * 2 * sum(range(n))
print("ready", flush=True)
while True:  # "idle": no collectives, only the coordination service's heartbeats
    if sys.argv[2] == "collectives":
        assert float(total(x)) == 3 * local * 2 * sum(range(n))
    time.sleep(0.05)
"""


def test_local_sh_stops_the_others_when_one_fails_and_forwards_signals(tmp_path):
    script = ("echo started $MEDJAX_PROCESS_ID/$MEDJAX_NUM_PROCESSES $MEDJAX_COORDINATOR; "
              "if [ $MEDJAX_PROCESS_ID = 1 ]; then sleep 0.5; exit 7; fi; "
              "trap 'echo terminated; exit 143' TERM; sleep 60 & wait")
    r = launch_local(3, ["bash", "-c", script], log_dir=tmp_path / "fail", timeout=30)
    assert r.returncode == 7, r.output
    assert r.seconds < 15
    assert "process 1 exited with status 7; stopping the others" in r.output
    assert "[0] started 0/3 127.0.0.1:" in r.output and "[2] started 2/3" in r.output
    assert "terminated" in r.logs[0] and "terminated" in r.logs[2]

    # SIGTERM to local.sh reaches every process; all exit 0, so local.sh does too
    proc = subprocess.Popen([LOCAL_SH, "2", "bash", "-c",
                             "trap 'echo got TERM; exit 0' TERM; echo up; sleep 60 & wait"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=_env())
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    assert "[0] got TERM" in out and "[1] got TERM" in out


@pytest.mark.slow  # trained and compared step by step in the equal-one test below (CI)
def test_two_processes_train_end_to_end(tmp_path):
    wd = tmp_path / "wd"
    r = launch_local(2, train_cmd(wd, **TINY_SFT), devices=2, log_dir=tmp_path / "logs")
    assert r.returncode == 0, r.output[-4000:]
    # process 0 alone writes metrics, logs and the final line: one metrics line per step
    assert [m["step"] for m in read_metrics(wd)] == [1, 2, 3, 4]
    assert "step 4: loss" in r.logs[0] and "final:" in r.logs[0]
    assert "step 1: loss" not in r.logs[1] and "final:" not in r.logs[1]
    assert "process 1 of 2" in r.output  # both joined one job
    # every process wrote its part of each checkpoint's state to the same path
    for step in (2, 4):
        state = os.listdir(wd / "checkpoints" / str(step) / "state")
        assert {"ocdbt.process_0", "ocdbt.process_1"} <= set(state), state
    print(f"2-process train run: {r.seconds:.1f} s")


@pytest.mark.slow  # the bounded-time kill tests below (CI) cover the same failure faster
def test_killing_a_worker_during_training_stops_the_coordinator(tmp_path):
    """kill -9 of process 1 in the middle of medjax.train: process 0 exits non-zero instead
    of hanging in a collective (on CPU gloo reports the closed connection at once; where a
    collective would block instead, the heartbeat timeout below ends it)."""
    wd = tmp_path / "wd"
    cmd = train_cmd(wd, "sft", f"--heartbeat_timeout={HEARTBEAT_S}",
                    **{**TINY_SFT, "steps": 10_000, "checkpoint.every": 10_000})
    procs = spawn(2, cmd, tmp_path)
    _wait_for(lambda: len(read_metrics(wd)) >= 2, 240, procs)
    rc, seconds = _kill_and_time_survivor(procs, victim=1, limit=HEARTBEAT_S + 50)
    print(f"train: process 0 exited with status {rc} {seconds:.1f} s after kill -9 of process 1")
    out = _output(tmp_path, 0)
    assert rc != 0, out[-3000:]
    assert seconds < HEARTBEAT_S + 20
    # one line naming what happened, not a Gloo / XLA traceback
    assert "Traceback" not in out and "stopped or became unreachable" in out, out[-3000:]


@pytest.mark.parametrize("victim,mode", [(1, "idle"), (0, "collectives")])
def test_a_killed_process_stops_the_other_in_bounded_time(tmp_path, victim, mode):
    """victim 1, survivor idle (no collective to fail): the coordination service misses
    its heartbeats and stops process 0 after the heartbeat timeout. victim 0 (the
    coordinator): process 1 loses the service and stops at once."""
    procs = spawn(2, [sys.executable, "-c", WORKER, str(HEARTBEAT_S), mode], tmp_path)
    _wait_for(lambda: all("ready" in _output(tmp_path, i) for i in range(2)), 120, procs)
    time.sleep(0.5)
    rc, seconds = _kill_and_time_survivor(procs, victim=victim, limit=HEARTBEAT_S + 50)
    print(f"{mode}: process {1 - victim} exited with status {rc} {seconds:.1f} s after "
          f"kill -9 of process {victim}")
    assert rc != 0, _output(tmp_path, 1 - victim)[-3000:]
    assert seconds < HEARTBEAT_S + 20
    assert "Terminating process because the JAX distributed service detected fatal errors" \
        in _output(tmp_path, 1 - victim)


def test_absent_coordinator_or_peer_is_a_one_line_error(tmp_path):
    """The CLI's message when process 0 cannot be reached (process 1's view) and when
    process 1 never connects (process 0's view): one line, exit status 1, in time."""
    port = free_port()
    base = train_cmd(tmp_path / "wd", "sft", f"--coordinator=127.0.0.1:{port}",
                     "--num_processes=2", "--distributed_timeout=3")
    t = time.monotonic()
    worker = subprocess.Popen(base + ["--process_id=1"], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=_env(2))
    out, err = worker.communicate(timeout=60)
    assert worker.returncode == 1, err
    lines = [x for x in err.splitlines() if x.strip()]
    assert lines == [f"medjax.train: error: cannot reach the coordinator 127.0.0.1:{port} "
                     f"within 3 s ({lines[0].split('(')[1].split(')')[0]}); is process 0 "
                     "running, and are the address and port right? (--coordinator, "
                     "--distributed_timeout)"], err

    coordinator = subprocess.Popen(base + ["--process_id=0"], cwd=ROOT, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, env=_env(2))
    out, err = coordinator.communicate(timeout=60)
    assert coordinator.returncode == 1, err
    assert (f"medjax: error: not all 2 processes connected to the coordinator 127.0.0.1:{port} "
            "within 3 s (process 0 of 2)") in err
    assert "Traceback" not in err and "Check failure" not in err, err
    assert time.monotonic() - t < 60


def _losses(workdir) -> dict[int, float]:
    return {m["step"]: m["loss"] for m in read_metrics(workdir) if "loss" in m}


def test_two_processes_equal_one_and_their_checkpoint_resumes_in_one(tmp_path):
    """2 processes x 2 devices == 1 process x 4 devices, step by step, with data.shards
    left at its default (the same global batches on any process count); then the 2-process checkpoint at step 3 restores in
    1 process on another mesh (2 devices, tensor=2) and continues with the 2-process
    run's losses."""
    import shutil
    run = {**TINY_SFT, "steps": 6, "checkpoint.every": 3}
    two = tmp_path / "two"
    r = launch_local(2, train_cmd(two, **run), devices=2, log_dir=tmp_path / "logs")
    assert r.returncode == 0, r.output[-4000:]
    want = _losses(two)
    assert sorted(want) == [1, 2, 3, 4, 5, 6]

    one = tmp_path / "one"
    p = subprocess.run(train_cmd(one, **run), cwd=ROOT, capture_output=True, text=True,
                       env=_env(4), timeout=300)
    assert p.returncode == 0, p.stderr[-4000:]
    got = _losses(one)
    assert sorted(got) == sorted(want)
    for s in want:
        assert abs(got[s] - want[s]) <= 1e-4 * abs(want[s]), (s, got[s], want[s])
    assert len(set(want.values())) == 6  # the batches differ step to step

    # The 2-process run's workdir as it was at step 3, resumed by 1 process.
    resumed = tmp_path / "resumed"
    os.makedirs(resumed / "checkpoints")
    shutil.copy(two / "model_config.json", resumed)
    shutil.copytree(two / "checkpoints" / "3", resumed / "checkpoints" / "3")
    p = subprocess.run(train_cmd(resumed, **run, **{"mesh.tensor": 2}), cwd=ROOT,
                       capture_output=True, text=True, env=_env(2), timeout=300)
    assert p.returncode == 0, p.stderr[-4000:]
    assert "resuming from the checkpoint at step 3" in p.stdout + p.stderr
    got = _losses(resumed)
    assert sorted(got) == [4, 5, 6]
    for s in got:
        assert abs(got[s] - want[s]) <= 1e-4 * abs(want[s]), (s, got[s], want[s])


def test_two_process_dpo_with_precomputed_reference_and_uneven_eval(tmp_path):
    """9 eval pairs over 2 processes with 4 rows each: process 0 has 2 eval batches,
    process 1 one, so it feeds an empty batch rather than leaving process 0 alone in a
    collective; the precomputed reference table holds every process's examples. Losses
    and eval metrics equal a 1-process run (data.shards at its default)."""
    samples = os.path.join(ROOT, "medjax", "data", "samples")
    with open(os.path.join(samples, "preference_eval.jsonl")) as f:
        (tmp_path / "eval.jsonl").write_text("".join(f.readlines()[:9]))
    run = {"steps": 2, "batch_size": 8, "eval.every": 2, "eval.at_start": True,
           "logging.every": 1, "logging.progress": False, "checkpoint.every": 2,
           "objective.reference": "precompute",
           "data.eval_sources": str(tmp_path / "eval.jsonl")}
    two = tmp_path / "two"
    r = launch_local(2, train_cmd(two, "dpo", **run), devices=2, log_dir=tmp_path / "logs")
    assert r.returncode == 0, r.output[-4000:]
    import numpy as np
    table = np.load(two / "reference_logps_train.npz")
    with open(os.path.join(samples, "preference.jsonl")) as f:
        assert len(set(table["ids"].tolist())) == sum(1 for _ in f)  # all 600, both halves
    one = tmp_path / "one"
    p = subprocess.run(train_cmd(one, "dpo", **run), cwd=ROOT, capture_output=True, text=True,
                       env=_env(4), timeout=300)
    assert p.returncode == 0, p.stderr[-4000:]
    want, got = read_metrics(two), read_metrics(one)
    assert [m["step"] for m in got] == [m["step"] for m in want]
    for a, b in zip(want, got):
        for k in ("loss", "eval/loss", "eval/rewards/accuracies", "eval/logps/chosen"):
            if k in a:
                assert abs(a[k] - b[k]) <= 1e-4 * max(1.0, abs(a[k])), (k, a, b)
    assert sum("eval/loss" in m for m in want) == 2
