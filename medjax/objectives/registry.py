"""Objectives as units, registered once.

An ``Objective`` holds everything the rest of medjax needs to know about a training
objective; ``training/``, ``data/``, ``convert`` and the configs ask the unit and never
compare its name:

  name        ``objective.name`` in a config
  kind        the record kind its data pipeline builds (``text`` | ``chat`` |
              ``preference`` | ``kto``); ``text`` reads no chat template
  head        ``lm`` (the LM head) or ``reward`` (a scalar head in its place)
  add_config  adds its own ``objective.*`` keys (with defaults) to a config; a key of
              another objective is then an error on the command line
  make_loss   ``(objective config, ModelConfig) -> loss_fn(params, batch, rng)``, which
              returns ``(loss, metrics)`` with ``loss`` a mean over ``metrics["weight"]``
  metrics     the metric names its loss returns (besides ``weight``)
  references  the reference kinds it accepts (``frozen``, ``precompute``, ``model``);
              empty: it never uses a reference
  needs_reference  ``(objective config) -> bool`` (e.g. DPO's reference-free losses)
  init_head   ``(ModelConfig, rng) -> head params`` for a head that the LM lacks

Each module of ``medjax/objectives/`` registers its units with ``register``; importing
``medjax.objectives`` imports every module of the package.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

RECORD_KINDS = ("text", "chat", "preference", "kto")
REFERENCE_KINDS = ("frozen", "precompute", "model")


@dataclasses.dataclass(frozen=True)
class Objective:
    name: str
    kind: str
    add_config: Callable
    make_loss: Callable
    metrics: tuple[str, ...]
    head: str = "lm"
    references: tuple[str, ...] = ()
    needs_reference: Callable = lambda o: False
    init_head: Callable | None = None
    title: str = ""  # how messages name it (default: the name)
    reference_note: str = ""  # why some reference kinds are not accepted

    def __post_init__(self):
        if self.kind not in RECORD_KINDS:
            raise ValueError(f"objective {self.name!r}: kind {self.kind!r} not in {RECORD_KINDS}")
        unknown = set(self.references) - set(REFERENCE_KINDS)
        if unknown:
            raise ValueError(f"objective {self.name!r}: unknown reference kinds {unknown}")

    @property
    def uses_template(self) -> bool:
        return self.kind != "text"


_REGISTRY: dict[str, Objective] = {}


def register(objective: Objective) -> Objective:
    if objective.name in _REGISTRY:
        raise ValueError(f"objective {objective.name!r} is registered twice")
    _REGISTRY[objective.name] = objective
    return objective


def get(name: str) -> Objective:
    """The unit registered as ``name`` (``objective.name``)."""
    _load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"objective.name={name!r}: unknown objective (known: "
                         f"{', '.join(names())})") from None


def names() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def _load_all() -> None:
    """Imports every module of ``medjax.objectives`` (each registers its units)."""
    import importlib
    import pkgutil

    from .. import objectives
    for info in pkgutil.iter_modules(objectives.__path__):
        importlib.import_module(f"{objectives.__name__}.{info.name}")
