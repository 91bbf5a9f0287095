"""The device mesh: axes ('data', 'fsdp', 'tensor'), hybrid across processes.

With one process the mesh is ``mesh_utils.create_device_mesh`` of the sizes.
With several processes (hosts) it is a hybrid mesh
(``mesh_utils.create_hybrid_device_mesh``): each axis size is a product
``across processes x within a process``. ``data`` goes across the processes
(all of them when ``data`` is a multiple of their count, else ``data`` of
them, the others splitting ``fsdp``); ``tensor`` never crosses a process.
So ``data=1, fsdp=-1`` is FSDP over every GPU of every host, and
``data=<hosts>, fsdp=<GPUs per host>`` is data-parallel across hosts with
FSDP within each (gradient reductions are the only traffic between hosts).

Process ``p``'s devices then hold the ``p``-th contiguous block of the batch
rows (sharded over ``('data', 'fsdp')``), so the rows a process reads land
on its own devices, in order (``jax.make_array_from_process_local_data``).
Layouts that would interleave processes' rows are refused.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

MESH_AXES = ("data", "fsdp", "tensor")


def mesh_sizes(data: int, fsdp: int, tensor: int, num_devices: int) -> dict[str, int]:
    """Resolves the one -1 axis against ``num_devices``; errors for sizes that do not fit."""
    sizes = {"data": data, "fsdp": fsdp, "tensor": tensor}
    for name, s in sizes.items():
        if not isinstance(s, int) or (s < 1 and s != -1):
            raise ValueError(f"mesh.{name} must be a positive integer or -1, got {s!r}")
    fill = [n for n, s in sizes.items() if s == -1]
    if len(fill) > 1:
        raise ValueError(f"only one mesh axis may be -1, got {fill}")
    known = math.prod(s for s in sizes.values() if s != -1)
    if fill:
        if num_devices % known:
            raise ValueError(f"mesh {sizes}: {num_devices} devices are not divisible by the "
                             f"fixed axes' product {known}")
        sizes[fill[0]] = num_devices // known
    if math.prod(sizes.values()) != num_devices:
        raise ValueError(f"mesh {sizes} needs {math.prod(sizes.values())} devices, "
                         f"but {num_devices} are available")
    return sizes


def split_across_processes(sizes: dict[str, int],
                           num_processes: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(across-process shape, within-process shape) of the mesh, both in MESH_AXES order.

    ``data`` spans the processes when it is a multiple of their count; else it spans
    ``data`` of them and ``fsdp`` the rest. ``tensor`` stays within a process. Other
    layouts would interleave the processes' batch rows, and are an error.
    """
    data, fsdp, tensor = (sizes[a] for a in MESH_AXES)
    n = num_processes
    if data % n == 0:
        return (n, 1, 1), (data // n, fsdp, tensor)
    if n % data == 0 and fsdp % (n // data) == 0:
        return (data, n // data, 1), (1, fsdp // (n // data), tensor)
    raise ValueError(
        f"mesh {sizes} cannot be laid out over {n} processes: data must be a multiple of "
        f"{n}, or divide {n} with fsdp a multiple of {n} / data (tensor never crosses a "
        "process)")


def device_grid(data: int = 1, fsdp: int = -1, tensor: int = 1,
                devices: Sequence | None = None) -> np.ndarray:
    """The devices as an array of shape (data, fsdp, tensor); see the module docstring.

    Processes are told apart by ``device.process_index``; every process must
    bring the same number of devices.
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = mesh_sizes(data, fsdp, tensor, len(devices))
    shape = tuple(sizes[a] for a in MESH_AXES)
    by_process: dict[int, list] = {}
    for d in devices:
        by_process.setdefault(d.process_index, []).append(d)
    from jax.experimental import mesh_utils
    if len(by_process) == 1:
        try:
            return mesh_utils.create_device_mesh(shape, devices=devices)
        except Exception:  # topologies mesh_utils does not know: plain order
            return np.asarray(devices, dtype=object).reshape(shape)
    counts = {p: len(ds) for p, ds in by_process.items()}
    if len(set(counts.values())) > 1:
        raise ValueError(f"processes have different numbers of devices: {counts}")
    dcn, ici = split_across_processes(sizes, len(by_process))
    return mesh_utils.create_hybrid_device_mesh(ici, dcn, devices, process_is_granule=True)


def make_mesh(data: int = 1, fsdp: int = -1, tensor: int = 1,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Builds a Mesh over ``devices`` (default: all) with axes data, fsdp, tensor.

    One size may be -1: it takes the devices the others leave. Sizes that do
    not multiply to the device count are an error. Axes are ``Auto`` (the
    compiler propagates shardings from the annotations medjax places). Several
    processes: a hybrid mesh (module docstring).
    """
    grid = device_grid(data, fsdp, tensor, devices)
    return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))
