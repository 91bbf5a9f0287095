"""The reference model of preference objectives, as values.

``objective.reference`` (the kinds an objective accepts are its unit's ``references``):
  frozen       a copy of the starting policy (``model.init_from`` or the seeded
               random init), in the compute dtype and sharded like the policy;
               never updated and never checkpointed (rebuilt from its source).
  precompute   one pass over the training (and eval) data with the starting
               policy before the first step; the sequence log-probs are stored in
               ``WORKDIR/reference_logps_{train,eval}.npz`` keyed by example id, with
               a fingerprint of what made them (data files, model, tokenisation); a
               table whose fingerprint differs is recomputed, never used. Training
               then holds no reference weights.
  PATH         another model (anything ``models.load`` reads).
  precompute:PATH  a precomputed table made by another model (the online loop's reference
               fixed to the initial policy while each round starts from the last).

Both kinds of reference are values with one method, ``ref_logps(local, batch)``: the
log-probs ``[rows, 2]`` of a process-local numpy batch ``local`` (with its
``example_id``) and its global on-device form ``batch``. No caller checks a mode.
"""

from __future__ import annotations

import json
import logging
import os

import jax
import numpy as np

from .. import models
from ..data.pipeline import pair_real
from ..objectives.preference import sequence_logps
from .batches import all_processes

log = logging.getLogger(__name__)


class FrozenReference:
    """A model whose sequence log-probs are computed for every batch."""

    def __init__(self, config: models.ModelConfig, params, chunk_size: int):
        self.config = config.replace(remat_policy="none")
        self.params = params
        self.fn = jax.jit(lambda p, b: sequence_logps(self.config, p, b,
                                                      chunk_size=chunk_size)[0])

    def ref_logps(self, local: dict, batch: dict) -> jax.Array:
        del local
        return self.fn(self.params, batch)


class ReferenceTable:
    """Precomputed sequence log-probs, looked up by example id."""

    def __init__(self, table: dict[int, np.ndarray], sharding):
        self.table, self.sharding = table, sharding

    def ref_logps(self, local: dict, batch: dict) -> jax.Array:
        del batch
        ids = np.asarray(local["example_id"])  # [pairs], or [rows, slots] when packed
        out = np.zeros(ids.shape + (2,), np.float32)
        flat = out.reshape(-1, 2)
        for r, (i, ok) in enumerate(zip(ids.reshape(-1).tolist(),
                                        pair_real(local).reshape(-1).tolist())):
            if ok:
                flat[r] = self.table[i]
        return jax.make_array_from_process_local_data(self.sharding, out)


def frozen_copy(model_config, start_params, chunk_size: int) -> FrozenReference:
    """The starting policy, copied (new buffers: the policy's are donated to the train
    step) in the compute dtype, sharded like the policy."""
    dt = jax.numpy.dtype(model_config.dtype)
    shardings = jax.tree.map(lambda x: x.sharding, start_params)
    params = jax.jit(lambda p: jax.tree.map(lambda x: x.astype(dt), p),
                     out_shardings=shardings)(start_params)
    return FrozenReference(model_config, params, chunk_size)


def build_reference(config, unit, mesh, model_config, start_params, *, passes=None,
                    workdir: str = "", fingerprint=dict, to_global=None,
                    sharding=None, share: bool = False):
    """The reference ``config`` asks for as ``{"train": ref, "eval": ref}`` (the same
    model for both, or one precomputed table per pass), or None when the objective
    needs none.

    ``passes``: ``{"train" | "eval": () -> batches}`` (one-pass pipelines) for precomputed
    tables, written to ``workdir`` with ``fingerprint()`` (what made them).
    ``share``: ``start_params`` are never updated (LoRA's frozen base, the reference of a
    LoRA run): used as they are, in their stored dtype, with no copy.
    """
    o = config.objective
    if not unit.needs_reference(o):
        return None
    mode = o.reference
    source = None  # the model whose log-probs are precomputed: the starting policy
    if mode.startswith("precompute:"):
        mode, source = "precompute", mode[len("precompute:"):]
        if not os.path.isdir(source):
            raise ValueError(f"objective.reference={o.reference!r}: {source!r} is not a "
                             "model directory")
    kind = mode if mode in ("frozen", "precompute") else "model"
    if kind not in unit.references:
        note = f" ({unit.reference_note})" if unit.reference_note else ""
        raise ValueError(f"objective.reference={mode!r} is not available for "
                         f"{unit.title or unit.name}{note}; it accepts "
                         f"{', '.join(repr(k) if k != 'model' else 'a model directory' for k in unit.references)}")
    chunk = o.loss_chunk_size
    if kind == "model" or source:
        path = source or mode
        if not os.path.isdir(path):
            raise ValueError(f"objective.reference={mode!r}: expected 'frozen', 'precompute' "
                             "or a model directory")
        ref = models.load(path, mesh=mesh, param_dtype=model_config.dtype,
                          dtype=model_config.dtype, scan_layers=model_config.scan_layers,
                          remat_policy="none")
        frozen = FrozenReference(ref.config, ref.params, chunk)
        if kind == "model":
            return {"train": frozen, "eval": frozen}
    elif share:  # computed as the policy computes its base: weights cast per use
        frozen = FrozenReference(model_config, start_params, chunk)
    else:
        frozen = frozen_copy(model_config, start_params, chunk)
    if kind == "frozen":
        return {"train": frozen, "eval": frozen}
    # One table per pass (example ids are unique within a pipeline, not across them);
    # the frozen weights are released once the tables exist.
    return {name: ReferenceTable(precompute(frozen, name, batches, workdir, fingerprint,
                                            to_global), sharding)
            for name, batches in passes.items()}


def precompute(reference: FrozenReference, name: str, batches, workdir: str,
               fingerprint, to_global) -> dict[int, np.ndarray]:
    """``{example id: log-probs}`` from one pass over ``batches()``, or from the saved
    table of an earlier run of the same data and model."""
    path = os.path.join(workdir, f"reference_logps_{name}.npz")
    stamp = json.dumps(fingerprint(), sort_keys=True)
    saved = np.load(path) if os.path.exists(path) else None
    usable = saved is not None and "fingerprint" in saved and str(saved["fingerprint"]) == stamp
    # Every process uses the saved table or none does (the pass below has collectives):
    # a host that sees other file sizes or times than process 0 makes them all recompute.
    if all_processes(usable).all():
        return dict(zip(saved["ids"].tolist(), saved["logps"]))
    if saved is not None:
        log.warning("%s: made from other data, model or settings; recomputing it", path)
    ids_all, logps_all = [], []
    for local in batches():
        real = pair_real(local).reshape(-1)
        ids = local.pop("example_id").reshape(-1)
        logps = reference.fn(reference.params, to_global(local))
        if jax.process_count() > 1:  # every process keeps every process's rows
            from jax.experimental import multihost_utils
            # ids are 64-bit (source << 40 | record): gathered as two 32-bit halves
            hi, lo, logps, real = (
                np.asarray(multihost_utils.process_allgather(x, tiled=True))
                for x in ((ids >> 32).astype(np.int32), (ids & 0xFFFFFFFF).astype(np.uint32),
                          logps, real))
            ids = (hi.astype(np.int64) << 32) | lo.astype(np.int64)
        logps = np.asarray(jax.device_get(logps)).reshape(-1, 2)
        ids_all.append(ids[real])
        logps_all.append(logps[real])
    ids_all = np.concatenate(ids_all)
    logps_all = np.concatenate(logps_all).astype(np.float32)
    if jax.process_index() == 0:  # the whole table, written once
        tmp = path + ".tmp.npz"
        np.savez(tmp, ids=ids_all, logps=logps_all, fingerprint=np.array(stamp))
        os.replace(tmp, path)
    log.info("precomputed reference log-probs of %d %s examples", len(ids_all), name)
    return dict(zip(ids_all.tolist(), logps_all))
