"""Device meshes, logical-axis rules and multi-process (multi-host) start-up."""

from .distributed import Cluster, detect, initialize
from .mesh import MESH_AXES, device_grid, make_mesh
from .sharding import (DEFAULT_RULES, axis_rules, constrain, current_rules, logical_to_sharding,
                       logical_to_spec)

__all__ = [
    "MESH_AXES", "make_mesh", "device_grid", "DEFAULT_RULES", "axis_rules", "constrain",
    "current_rules", "logical_to_sharding", "logical_to_spec", "Cluster", "detect", "initialize",
]
