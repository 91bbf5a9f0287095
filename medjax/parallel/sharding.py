"""Logical axis names -> mesh axes.

Model code names logical axes only (``batch``, ``length``, ``embed``, ``heads``,
``kv_heads``, ``head_dim``, ``mlp``, ``vocab``, ``layers``). A rules table maps
each to mesh axes. A logical name may have several rules: the first whose mesh
axes are not already used by another dimension of the same array wins, so
activations ``(batch, length, embed)`` shard batch over (data, fsdp) while
parameters ``(vocab, embed)`` shard embed over fsdp.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Sequence

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

Rules = tuple[tuple[str, Any], ...]

DEFAULT_RULES: Rules = (
    ("batch", ("data", "fsdp")),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("length", None),
    ("head_dim", None),
    ("layers", None),
    ("experts", None),  # expert weights: embed over fsdp, mlp over tensor, like the dense MLP
)

_RULES: contextvars.ContextVar[Rules] = contextvars.ContextVar("medjax_axis_rules",
                                                              default=DEFAULT_RULES)


def current_rules() -> Rules:
    return _RULES.get()


@contextlib.contextmanager
def axis_rules(rules: Sequence[tuple[str, Any]]):
    """Uses ``rules`` for logical-axis resolution inside the block (also at trace time)."""
    token = _RULES.set(tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in rules))
    try:
        yield
    finally:
        _RULES.reset(token)


def _as_tuple(mesh_axes) -> tuple[str, ...]:
    if mesh_axes is None:
        return ()
    return (mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes)


def logical_to_spec(axes: Sequence[str | None], rules: Rules | None = None,
                    mesh_axis_names: Sequence[str] | None = None) -> PartitionSpec:
    """PartitionSpec for an array whose dimensions carry logical ``axes``."""
    rules = current_rules() if rules is None else rules
    used: set[str] = set()
    out = []
    for name in axes:
        chosen = None
        if name is not None:
            for logical, mesh_axes in rules:
                if logical != name:
                    continue
                cand = _as_tuple(mesh_axes)
                if mesh_axis_names is not None:
                    cand = tuple(a for a in cand if a in mesh_axis_names)
                if used.intersection(cand):
                    continue
                chosen = cand
                break
        if chosen:
            used.update(chosen)
            out.append(chosen[0] if len(chosen) == 1 else chosen)
        else:
            out.append(None)
    return PartitionSpec(*out)


def _is_axes(x) -> bool:
    return isinstance(x, tuple) and all(a is None or isinstance(a, str) for a in x)


def logical_to_sharding(axes_tree, mesh: Mesh, rules: Rules | None = None, shapes=None):
    """Maps a pytree of logical-axis tuples to NamedShardings on ``mesh``.

    With ``shapes`` (a matching pytree of arrays or ShapeDtypeStructs), a
    dimension that its mesh axes do not divide is an error naming the array.
    """
    rules = current_rules() if rules is None else rules

    def one(path, axes, shape=None):
        spec = logical_to_spec(axes, rules, mesh.axis_names)
        if shape is not None:
            for dim, (size, part) in enumerate(zip(shape.shape, spec)):
                n = 1
                for a in _as_tuple(part):
                    n *= mesh.shape[a]
                if size % n:
                    raise ValueError(
                        f"cannot shard {jax.tree_util.keystr(path)} of shape {shape.shape}: "
                        f"dimension {dim} ({axes[dim]}={size}) is not divisible by mesh axes "
                        f"{part} of size {n}; change the mesh or the axis rules")
        return NamedSharding(mesh, spec)

    if shapes is None:
        return jax.tree_util.tree_map_with_path(one, axes_tree, is_leaf=_is_axes)
    return jax.tree_util.tree_map_with_path(one, axes_tree, shapes, is_leaf=_is_axes)


def batch_axes() -> tuple[str, ...]:
    """The mesh axes of size > 1 that the logical "batch" axis is split over under the
    current mesh (none off a mesh)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return ()
    spec = logical_to_spec(("batch",), None, mesh.axis_names)[0]
    return tuple(a for a in _as_tuple(spec) if mesh.shape[a] > 1)


def batch_divisor() -> int:
    """How many ways the logical "batch" axis is split under the current mesh (1 off a
    mesh): a batch's rows must be a multiple of it."""
    mesh = jax.sharding.get_abstract_mesh()
    n = 1
    for a in batch_axes():
        n *= mesh.shape[a]
    return n


def constrain(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
    """Sharding constraint by logical names under the current mesh (no-op without one)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    return jax.lax.with_sharding_constraint(x, logical_to_spec(axes, None, mesh.axis_names))


def rules_for(expert_parallel: bool = False) -> Rules:
    """The axis rules of a run: the defaults, with ``expert_parallel`` the ``experts`` axis
    of the MoE weights over ``fsdp`` first (their ``embed`` dimension then stays whole)."""
    if not expert_parallel:
        return current_rules()
    return (("experts", "fsdp"),) + tuple(current_rules())
