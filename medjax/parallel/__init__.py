"""Device meshes, logical-axis rules and (later) multi-host initialisation."""

from .mesh import MESH_AXES, make_mesh
from .sharding import (DEFAULT_RULES, axis_rules, constrain, current_rules, logical_to_sharding,
                       logical_to_spec)

__all__ = [
    "MESH_AXES", "make_mesh", "DEFAULT_RULES", "axis_rules", "constrain", "current_rules",
    "logical_to_sharding", "logical_to_spec",
]
