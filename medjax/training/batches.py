"""Host batches -> global device batches, and batch loops every process runs in step.

A process-local batch is a dict of numpy arrays (this process's rows of the global
batch); ``to_global`` makes each a global ``jax.Array`` sharded on its rows. Loops that
run a collective per batch over a process's own data (eval, the reference pre-pass, a
finite epoch) must run the same number of batches on every process: ``synced``.
"""

from __future__ import annotations

import jax
import numpy as np


def to_global(local: dict, sharding) -> dict:
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
            for k, v in local.items()}


def device_batch(local: dict, sharding, reference=None) -> dict:
    """A process-local numpy batch -> the global on-device batch (+ the reference's
    log-probs ``ref_logps`` when there is a reference)."""
    batch = to_global({k: v for k, v in local.items() if k != "example_id"}, sharding)
    if reference is not None:
        batch["ref_logps"] = reference.ref_logps(local, batch)
    return batch


def pad_rows(local: dict, rows: int) -> dict:
    """Pads a short last batch with empty rows (segment 0: no targets, no weight)."""
    return {k: np.pad(v, [(0, rows - len(v))] + [(0, 0)] * (v.ndim - 1))
            for k, v in local.items()}


def all_processes(flag: bool) -> np.ndarray:
    """``flag`` of every process (a host-side all-gather; just ``[flag]`` for one)."""
    return all_processes_values(flag)


def all_processes_values(value: int) -> np.ndarray:
    """``value`` of every process (``[value]`` for one)."""
    if jax.process_count() == 1:
        return np.array([value])
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(np.array(value)))


def synced(batches):
    """This process's batches until every process has run out of its own: a process
    that ran out first feeds empty (all-padding, zero-weight) batches meanwhile, so
    that every process runs the same number of steps (collectives stay matched)."""
    it, last = iter(batches), None
    while True:
        local = next(it, None)
        if not all_processes(local is not None).any():
            return
        if local is None:
            local = {k: np.zeros_like(v) for k, v in last.items()}
        last = local
        yield dict(local)  # a consumer may pop keys; ``last`` keeps them all


def one_pass(dataset, rows: int):
    """``() -> batches``: each call iterates ``dataset`` (a Grain dataset built, and its
    sources validated, once) from the start, short batches padded, in step with the
    other processes."""
    return lambda: synced(pad_rows(local, rows) for local in dataset)
