"""Mesh layout: one process (unchanged) and hybrid layouts over several (fake) processes."""

import dataclasses
import math

import jax
import numpy as np
import pytest

from medjax.parallel import MESH_AXES, device_grid, make_mesh
from medjax.parallel.mesh import split_across_processes


@dataclasses.dataclass(frozen=True)
class FakeDevice:
    id: int
    process_index: int
    platform: str = "cpu"
    device_kind: str = "cpu"


def fake_devices(processes: int, per_process: int):
    return [FakeDevice(p * per_process + i, p) for p in range(processes)
            for i in range(per_process)]


def process_grid(grid):
    return np.vectorize(lambda d: d.process_index)(grid)


def test_one_process_layout_is_unchanged():
    from jax.experimental import mesh_utils
    mesh = make_mesh(data=2, fsdp=-1, tensor=2)
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    expected = mesh_utils.create_device_mesh((2, 2, 2), devices=jax.devices())
    assert (mesh.devices == expected).all()


@pytest.mark.parametrize("processes,per_process,sizes,dcn,ici", [
    (2, 4, (1, -1, 1), (1, 2, 1), (1, 4, 1)),   # pure fsdp: fsdp spans the hosts
    (2, 4, (2, 2, 2), (2, 1, 1), (1, 2, 2)),    # data across hosts, fsdp x tensor within
    (2, 4, (4, 2, 1), (2, 1, 1), (2, 2, 1)),    # more data replicas than hosts
    (4, 2, (2, -1, 1), (2, 2, 1), (1, 2, 1)),   # data < hosts: the rest of the hosts split fsdp
    (8, 8, (1, -1, 8), (1, 8, 1), (1, 1, 8)),   # 70B on 8 nodes: fsdp over nodes, tensor in node
    (8, 8, (8, 8, 1), (8, 1, 1), (1, 8, 1)),    # 8B on 8 nodes: data over nodes, fsdp in node
])
def test_hybrid_layout(processes, per_process, sizes, dcn, ici):
    devices = fake_devices(processes, per_process)
    grid = device_grid(*sizes, devices=devices)
    shape = tuple(d * i for d, i in zip(dcn, ici))
    assert grid.shape == shape
    assert sorted(d.id for d in grid.flat) == list(range(len(devices)))
    procs = process_grid(grid)
    # tensor never crosses a process
    assert (procs == procs[..., :1]).all()
    # each process owns one block: ici-shaped, at its place in the dcn grid
    for p in range(processes):
        where = np.argwhere(procs == p)
        lo, hi = where.min(0), where.max(0) + 1
        assert tuple(hi - lo) == ici
        assert (procs[tuple(slice(a, b) for a, b in zip(lo, hi))] == p).all()
    # batch rows are sharded over (data, fsdp): a process's shards are one contiguous run
    # of rows, in process order, so its local rows land on its own devices
    shard_owner = procs[..., 0].reshape(-1)
    assert list(shard_owner) == sorted(shard_owner)


def test_layout_errors():
    with pytest.raises(ValueError, match="cannot be laid out over 2 processes"):
        device_grid(1, 1, 8, devices=fake_devices(2, 4))  # tensor across hosts
    with pytest.raises(ValueError, match="cannot be laid out over 4 processes"):
        device_grid(6, 2, 1, devices=fake_devices(4, 3))  # would interleave the rows
    with pytest.raises(ValueError, match="different numbers of devices"):
        device_grid(1, -1, 1, devices=fake_devices(2, 4)[:-1])
    with pytest.raises(ValueError, match="needs 16 devices"):
        device_grid(2, 4, 2, devices=fake_devices(2, 4))


def test_split_matches_sizes():
    for processes in (1, 2, 4, 8):
        for data, fsdp in ((1, 8 * processes), (processes, 8), (2 * processes, 4)):
            sizes = dict(zip(MESH_AXES, (data, fsdp, 1)))
            dcn, ici = split_across_processes(sizes, processes)
            assert math.prod(dcn) == processes and math.prod(ici) * processes == data * fsdp
