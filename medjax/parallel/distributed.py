"""Multi-process start-up: ``jax.distributed`` from flags, the launcher, or not at all.

``initialize()`` resolves each of coordinator address, process count and
process id separately, first found wins:

1. explicit arguments (``python -m medjax.train --coordinator --num_processes --process_id``);
2. ``MEDJAX_COORDINATOR`` / ``MEDJAX_NUM_PROCESSES`` / ``MEDJAX_PROCESS_ID`` (set by
   ``launch/local.sh`` and ``launch/mpirun.sh``; ``JAX_COORDINATOR_ADDRESS`` also counts);
3. Open MPI, under ``mpirun -n N`` with N > 1 (before SLURM, as in JAX: ``mpirun`` inside a
   SLURM allocation leaves SLURM variables that describe its daemons, not the ranks);
4. SLURM, inside an ``srun`` step of more than one task;

and does nothing when the result is a single process. Failures are bounded:

- a coordinator that cannot be reached within ``timeout_s`` is a ``RuntimeError``
  naming the address and the timeout (checked with a plain TCP connect before JAX
  is asked, because JAX aborts the process instead of raising);
- processes that never all join within ``timeout_s`` end this process with a
  one-line message on stderr and exit status 1 (JAX would abort later anyway);
- once running, a process that dies is noticed by the others through JAX's
  coordination service: a process that sent no heartbeat for ``heartbeat_timeout_s``
  (default ``DEFAULT_HEARTBEAT_TIMEOUT_S``, env ``MEDJAX_HEARTBEAT_TIMEOUT``) makes every
  other process abort with "Terminating process because the JAX distributed service
  detected fatal errors". Heartbeats are sent by a C++ thread of the coordination
  client, not by Python, so a long compilation or checkpoint write does not count as
  silence; raise the value for networks that stall for tens of seconds. Measured on
  CPU with 2 processes (tests/parallel/test_multiprocess.py): after ``kill -9`` of process 1, process 0
  exits 30.0 s later with the default, 9.7 s with ``heartbeat_timeout_s=10``; after
  ``kill -9`` of the coordinator (process 0) the others exit within 0.1 s; a process
  waiting in a gloo collective with the dead one fails at once (0.2 s, "Connection
  reset by peer"), while NCCL on GPUs may block until the heartbeat timeout.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
import socket
import sys
import threading
import time
from typing import Mapping, Sequence

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 300.0  # all processes must connect within this (slow node start-up)
DEFAULT_HEARTBEAT_TIMEOUT_S = 30  # JAX's own default is 100 s


@dataclasses.dataclass(frozen=True)
class Cluster:
    """Where this process stands in a multi-process run."""
    coordinator: str  # host:port of process 0's coordination service
    num_processes: int
    process_id: int
    local_device_ids: tuple[int, ...] | None  # None: every local device
    source: str  # what num_processes came from: flags | environment | slurm | openmpi


def _int(name: str, value) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} is not an integer") from None


def _ids(name: str, value) -> tuple[int, ...] | None:
    if value is None or value == "":
        return None
    if isinstance(value, int):
        return (value,)
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    try:
        return tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} is not a comma-separated list of integers") from None


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: 'gpu[003-010,012],login1' -> 'gpu003'."""
    out, i = [], 0
    while i < len(nodelist):
        ch = nodelist[i]
        if ch == ",":  # the end of the first entry (commas within brackets are skipped below)
            break
        if ch == "[":  # a range list: its first value
            j = nodelist.index("]", i)
            out.append(re.split(r"[,-]", nodelist[i + 1:j])[0])
            i = j + 1
            continue
        out.append(ch)
        i += 1
    return "".join(out).strip()


def _port_from_job(job_id: str) -> int:
    """A port in [61440, 65535] from the job id (what JAX's own SLURM/Open MPI detection uses),
    so that all processes of a job agree on it without talking."""
    digits = re.sub(r"\D", "", job_id) or "0"
    return 65535 - 2 ** 12 + 1 + int(digits) % 2 ** 12


def _env_port(env: Mapping[str, str]) -> str | None:
    return env.get("MEDJAX_COORDINATOR_PORT") or env.get("JAX_COORDINATOR_PORT") or None


def _slurm(env: Mapping[str, str]) -> dict | None:
    """SLURM inside an srun step (the batch script itself is one process: nothing)."""
    nodelist = env.get("SLURM_STEP_NODELIST")
    if not (env.get("SLURM_JOB_ID") and nodelist and env.get("SLURM_PROCID")):
        return None
    n = _int("SLURM_STEP_NUM_TASKS", env.get("SLURM_STEP_NUM_TASKS")) or _int(
        "SLURM_NTASKS", env.get("SLURM_NTASKS"))
    if not n or n < 2:
        return None
    nodes = _int("SLURM_STEP_NUM_NODES", env.get("SLURM_STEP_NUM_NODES")) or _int(
        "SLURM_NNODES", env.get("SLURM_NNODES")) or 1
    port = _env_port(env) or _port_from_job(env["SLURM_JOB_ID"])
    return dict(coordinator=f"{first_host(nodelist)}:{port}", num_processes=n,
                process_id=_int("SLURM_PROCID", env["SLURM_PROCID"]),
                local_rank=_int("SLURM_LOCALID", env.get("SLURM_LOCALID")),
                several_per_node=n > nodes, source="slurm")


def _openmpi(env: Mapping[str, str]) -> dict | None:
    n = _int("OMPI_COMM_WORLD_SIZE", env.get("OMPI_COMM_WORLD_SIZE"))
    if not n or n < 2:
        return None
    coordinator = None
    uri = env.get("OMPI_MCA_orte_hnp_uri")  # Open MPI <= 4; Open MPI 5 (PRRTE) has none
    if uri:
        m = re.search(r"tcp://(.+?)[,:]|tcp6://\[(.+?)[,\]]", uri)
        if m:
            host = next(g for g in m.groups() if g is not None)
            port = _env_port(env) or _port_from_job(str(int(uri.split(".", 1)[0]) // 2 ** 12))
            coordinator = f"{host}:{port}"
    local_size = _int("OMPI_COMM_WORLD_LOCAL_SIZE", env.get("OMPI_COMM_WORLD_LOCAL_SIZE")) or 1
    return dict(coordinator=coordinator, num_processes=n,
                process_id=_int("OMPI_COMM_WORLD_RANK", env.get("OMPI_COMM_WORLD_RANK")),
                local_rank=_int("OMPI_COMM_WORLD_LOCAL_RANK",
                                env.get("OMPI_COMM_WORLD_LOCAL_RANK")),
                several_per_node=local_size > 1, source="openmpi")


def detect(coordinator: str | None = None, num_processes: int | None = None,
           process_id: int | None = None, local_device_ids: Sequence[int] | None = None,
           env: Mapping[str, str] | None = None) -> Cluster | None:
    """This process's place in a multi-process run, or None for a single process.

    Pure: reads ``env`` (default ``os.environ``) and the arguments; starts nothing.
    """
    env = os.environ if env is None else env
    explicit = dict(coordinator=coordinator or None, num_processes=num_processes,
                    process_id=process_id)
    from_env = dict(
        coordinator=env.get("MEDJAX_COORDINATOR") or env.get("JAX_COORDINATOR_ADDRESS") or None,
        num_processes=_int("MEDJAX_NUM_PROCESSES", env.get("MEDJAX_NUM_PROCESSES")),
        process_id=_int("MEDJAX_PROCESS_ID", env.get("MEDJAX_PROCESS_ID")))
    cluster = _openmpi(env) or _slurm(env) or {}
    layers = [("flags", explicit), ("environment", from_env),
              (cluster.get("source", ""), cluster)]

    def pick(key):
        for name, layer in layers:
            if layer.get(key) is not None:
                return layer[key], name
        return None, None

    n, source = pick("num_processes")
    addr, addr_source = pick("coordinator")
    pid, _ = pick("process_id")
    if n is None:
        if pid is not None or explicit["coordinator"] or env.get("MEDJAX_COORDINATOR"):
            raise ValueError("a process id or coordinator is set but the number of processes "
                             "is not: pass --num_processes (or MEDJAX_NUM_PROCESSES)")
        return None
    if n < 1:
        raise ValueError(f"num_processes={n} must be at least 1")
    if n == 1:
        return None
    if pid is None:
        raise ValueError(f"num_processes={n} ({source}) but no process id: pass --process_id "
                         "(or MEDJAX_PROCESS_ID)")
    if not 0 <= pid < n:
        raise ValueError(f"process_id={pid} is not in [0, {n})")
    if not addr:
        hint = (" (Open MPI 5 does not export the launcher's address; launch/mpirun.sh sets "
                "MEDJAX_COORDINATOR)" if source == "openmpi" else "")
        raise ValueError(f"{n} processes ({source}) but no coordinator address: pass "
                         f"--coordinator=HOST:PORT of process 0 (or MEDJAX_COORDINATOR){hint}")
    host, _, port = addr.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"coordinator {addr!r} ({addr_source}) is not HOST:PORT")

    ids = _ids("local_device_ids", local_device_ids)
    if ids is None:
        ids = _ids("MEDJAX_LOCAL_DEVICE_IDS", env.get("MEDJAX_LOCAL_DEVICE_IDS"))
    visible = [d for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    if (ids is None and cluster.get("several_per_node") and cluster.get("local_rank") is not None
            and source == cluster.get("source") and len(visible) != 1):
        # Several processes per node (one per GPU) that each see all of the node's GPUs:
        # this one takes the GPU of its local rank (an index into CUDA_VISIBLE_DEVICES when
        # set). A launcher that bound one GPU per task already (srun --gpus-per-task=1)
        # leaves nothing to choose; one process per node keeps all of its GPUs.
        ids = (cluster["local_rank"],)
    return Cluster(coordinator=addr, num_processes=n, process_id=pid, local_device_ids=ids,
                   source=source)


def wait_for_coordinator(address: str, timeout_s: float) -> None:
    """Returns once ``address`` accepts TCP connections; RuntimeError after ``timeout_s``."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    deadline = time.monotonic() + timeout_s
    last = "no attempt"
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"cannot reach the coordinator {address} within {timeout_s:g} s "
                               f"({last}); is process 0 running, and are the address and port "
                               "right? (--coordinator, --distributed_timeout)")
        try:
            with socket.create_connection((host, int(port)), timeout=min(2.0, max(left, 0.05))):
                return
        except OSError as e:
            last = e.strerror or type(e).__name__
        time.sleep(min(0.25, max(deadline - time.monotonic(), 0)))


def _exit_after(seconds: float, message: str) -> threading.Timer:
    def fire():
        sys.stdout.flush()
        sys.stderr.write(message + "\n")
        sys.stderr.flush()
        os._exit(1)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    return timer


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, local_device_ids: Sequence[int] | None = None,
               timeout_s: float = DEFAULT_TIMEOUT_S,
               heartbeat_timeout_s: int | None = None) -> Cluster | None:
    """Starts ``jax.distributed`` when this is one of several processes; returns the
    resolved :class:`Cluster`, or None (and does nothing) for a single process.

    Must run before anything initialises a JAX backend (``jax.devices()``, any
    computation). See the module docstring for the resolution order and timeouts.
    """
    cluster = detect(coordinator, num_processes, process_id, local_device_ids)
    if cluster is None:
        return None
    import jax
    if jax.distributed.is_initialized():
        return cluster
    if heartbeat_timeout_s is None:
        heartbeat_timeout_s = _int("MEDJAX_HEARTBEAT_TIMEOUT",
                                   os.environ.get("MEDJAX_HEARTBEAT_TIMEOUT"))
    heartbeat_timeout_s = int(heartbeat_timeout_s or DEFAULT_HEARTBEAT_TIMEOUT_S)
    if timeout_s <= 0 or heartbeat_timeout_s <= 0:
        raise ValueError(f"timeouts must be positive: distributed timeout {timeout_s}, "
                         f"heartbeat timeout {heartbeat_timeout_s}")
    where = f"process {cluster.process_id} of {cluster.num_processes}"
    start = time.monotonic()
    if cluster.process_id != 0:
        wait_for_coordinator(cluster.coordinator, timeout_s)
    left = max(timeout_s - (time.monotonic() - start), 1.0)
    # JAX aborts the process (no exception) when not all processes connect in time: our
    # timer fires first with a readable message.
    timer = _exit_after(left, (
        f"medjax: error: not all {cluster.num_processes} processes connected to the "
        f"coordinator {cluster.coordinator} within {timeout_s:g} s ({where}); check that every "
        "process was started with the same coordinator and number of processes"))
    try:
        jax.distributed.initialize(
            cluster.coordinator, cluster.num_processes, cluster.process_id,
            local_device_ids=list(cluster.local_device_ids) if cluster.local_device_ids else None,
            cluster_detection_method="deactivate",  # resolved above, local devices included
            initialization_timeout=math.ceil(left) + 30,
            heartbeat_timeout_seconds=heartbeat_timeout_s)
    except Exception as e:  # noqa: BLE001 - JaxRuntimeError, RuntimeError
        msg = " ".join(str(e).split())
        if cluster.process_id == 0 and "RPC server" in msg:
            raise RuntimeError(f"cannot start the coordinator service on port "
                               f"{cluster.coordinator.rpartition(':')[2]} ({where}): {msg}; "
                               "is the port in use?") from None
        raise RuntimeError(f"jax.distributed.initialize failed ({where}, coordinator "
                           f"{cluster.coordinator}): {msg}") from None
    finally:
        timer.cancel()
    log.info("%s (%s), coordinator %s, heartbeat timeout %d s", where, cluster.source,
             cluster.coordinator, heartbeat_timeout_s)
    return cluster
