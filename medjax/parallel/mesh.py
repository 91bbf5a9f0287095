"""The device mesh: axes ('data', 'fsdp', 'tensor')."""

from __future__ import annotations

import math
from typing import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

MESH_AXES = ("data", "fsdp", "tensor")


def make_mesh(data: int = 1, fsdp: int = -1, tensor: int = 1,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Builds a Mesh over ``devices`` (default: all) with axes data, fsdp, tensor.

    One size may be -1: it takes the devices the others leave. Sizes that do
    not multiply to the device count are an error. Axes are ``Auto`` (the
    compiler propagates shardings from the annotations medjax places).
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = {"data": data, "fsdp": fsdp, "tensor": tensor}
    for name, s in sizes.items():
        if not isinstance(s, int) or (s < 1 and s != -1):
            raise ValueError(f"mesh.{name} must be a positive integer or -1, got {s!r}")
    fill = [n for n, s in sizes.items() if s == -1]
    if len(fill) > 1:
        raise ValueError(f"only one mesh axis may be -1, got {fill}")
    known = math.prod(s for s in sizes.values() if s != -1)
    if fill:
        if len(devices) % known:
            raise ValueError(f"mesh {sizes}: {len(devices)} devices are not divisible by the "
                             f"fixed axes' product {known}")
        sizes[fill[0]] = len(devices) // known
    if math.prod(sizes.values()) != len(devices):
        raise ValueError(f"mesh {sizes} needs {math.prod(sizes.values())} devices, "
                         f"but {len(devices)} are available")
    shape = tuple(sizes[a] for a in MESH_AXES)
    try:
        from jax.experimental import mesh_utils
        grid = mesh_utils.create_device_mesh(shape, devices=devices)
    except Exception:  # topologies mesh_utils does not know: plain order
        grid = np.asarray(devices, dtype=object).reshape(shape)
    return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))
