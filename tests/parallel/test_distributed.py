"""medjax.parallel.distributed: where a process stands (flags > env > Open MPI > SLURM),
without starting jax.distributed, and the unreachable-coordinator error."""

import socket
import time

import pytest

from medjax.parallel import Cluster, detect, initialize
from medjax.parallel.distributed import first_host

SLURM = {"SLURM_JOB_ID": "123456", "SLURM_STEP_NODELIST": "gpu[003-010]", "SLURM_NTASKS": "16",
         "SLURM_STEP_NUM_TASKS": "16", "SLURM_STEP_NUM_NODES": "2", "SLURM_PROCID": "9",
         "SLURM_LOCALID": "1"}
OMPI = {"OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_RANK": "3",
        "OMPI_COMM_WORLD_LOCAL_RANK": "1", "OMPI_COMM_WORLD_LOCAL_SIZE": "2",
        "OMPI_MCA_orte_hnp_uri": "1531576320.0;tcp://10.96.0.1,10.148.0.1:34911"}


def test_single_process_is_none():
    assert detect(env={}) is None
    assert detect(env={"MEDJAX_NUM_PROCESSES": "1"}) is None
    assert detect(num_processes=1, env={}) is None
    # the batch script of a SLURM job (no srun step) and one-task steps: one process
    assert detect(env={k: v for k, v in SLURM.items() if "STEP" not in k}) is None
    assert detect(env={**SLURM, "SLURM_STEP_NUM_TASKS": "1"}) is None
    assert detect(env={**OMPI, "OMPI_COMM_WORLD_SIZE": "1"}) is None
    assert detect(env={"JAX_COORDINATOR_ADDRESS": "h:1"}) is None


def test_explicit_and_environment():
    env = {"MEDJAX_COORDINATOR": "127.0.0.1:5000", "MEDJAX_NUM_PROCESSES": "2",
           "MEDJAX_PROCESS_ID": "1"}
    assert detect(env=env) == Cluster("127.0.0.1:5000", 2, 1, None, "environment")
    # flags win field by field
    assert detect(process_id=0, env=env) == Cluster("127.0.0.1:5000", 2, 0, None, "environment")
    assert detect("h:1", 4, 3, env=env) == Cluster("h:1", 4, 3, None, "flags")
    assert detect(env={**env, "MEDJAX_LOCAL_DEVICE_IDS": "2,3"}).local_device_ids == (2, 3)
    # the explicit launcher variables win over the cluster's
    assert detect(env={**SLURM, **env}).num_processes == 2


def test_slurm():
    c = detect(env=SLURM)
    # 16 tasks on 2 nodes: one per GPU, each takes the GPU of its local rank
    assert c == Cluster(f"gpu003:{61440 + 123456 % 4096}", 16, 9, (1,), "slurm")
    # one task per node keeps all 8 GPUs; a task whose one GPU srun bound has nothing to pick
    per_node = {**SLURM, "SLURM_STEP_NUM_TASKS": "2", "SLURM_NTASKS": "2", "SLURM_PROCID": "1",
                "SLURM_LOCALID": "0"}
    assert detect(env=per_node).local_device_ids is None
    assert detect(env={**SLURM, "CUDA_VISIBLE_DEVICES": "1"}).local_device_ids is None
    # SLURM's allocation-wide CUDA_VISIBLE_DEVICES: still one GPU per task
    assert detect(env={**SLURM, "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7"}
                  ).local_device_ids == (1,)
    assert detect(env={**SLURM, "MEDJAX_COORDINATOR_PORT": "7777"}).coordinator == "gpu003:7777"
    assert detect(coordinator="login1:1234", env=SLURM).coordinator == "login1:1234"


@pytest.mark.parametrize("nodelist,host", [
    ("node001", "node001"), ("node001,node002", "node001"), ("gpu[003-010,012]", "gpu003"),
    ("gpu[07,09],cpu1", "gpu07"), ("a-[1-4]-ib", "a-1-ib"), ("rack[2-3]-n[5-6]", "rack2-n5"),
])
def test_first_host(nodelist, host):
    assert first_host(nodelist) == host


def test_openmpi():
    c = detect(env=OMPI)
    assert c.num_processes == 4 and c.process_id == 3 and c.source == "openmpi"
    assert c.coordinator.startswith("10.96.0.1:") and c.local_device_ids == (1,)
    no_uri = {k: v for k, v in OMPI.items() if k != "OMPI_MCA_orte_hnp_uri"}  # Open MPI 5
    with pytest.raises(ValueError, match="no coordinator address.*mpirun.sh"):
        detect(env=no_uri)
    assert detect(env={**no_uri, "MEDJAX_COORDINATOR": "n1:2000"}).coordinator == "n1:2000"
    # mpirun inside a SLURM allocation: the Open MPI ranks count, not srun's daemons
    assert detect(env={**SLURM, **OMPI}).source == "openmpi"


@pytest.mark.parametrize("kwargs,env,match", [
    ({"process_id": 1}, {}, "number of processes is not"),
    ({"coordinator": "h:1"}, {}, "number of processes is not"),
    ({"num_processes": 2}, {}, "no process id"),
    ({"num_processes": 2, "process_id": 2}, {}, r"not in \[0, 2\)"),
    ({"num_processes": 2, "process_id": 0}, {}, "no coordinator address"),
    ({"num_processes": 2, "process_id": 0, "coordinator": "nohostport"}, {}, "not HOST:PORT"),
    ({}, {"MEDJAX_NUM_PROCESSES": "two"}, "not an integer"),
])
def test_errors(kwargs, env, match):
    with pytest.raises(ValueError, match=match):
        detect(**kwargs, env=env)


def test_unreachable_coordinator_is_a_clear_error_within_the_timeout():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = time.monotonic()
    with pytest.raises(RuntimeError, match=rf"cannot reach the coordinator 127.0.0.1:{port} "
                                           r"within 1.5 s \(.*\)"):
        initialize(f"127.0.0.1:{port}", num_processes=2, process_id=1, timeout_s=1.5)
    assert time.monotonic() - t < 4
