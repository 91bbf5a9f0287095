"""The reference model of preference objectives: frozen, precomputed, or another model.

``objective.reference``:
  frozen       a copy of the starting policy (``model.init_from`` or the seeded
               random init), in the compute dtype and sharded like the policy;
               never updated and never checkpointed (rebuilt from its source).
  precompute   one pass over the training (and eval) data with the starting
               policy before the first step; the sequence log-probs are stored in
               ``WORKDIR/reference_logps_{train,eval}.npz`` keyed by example id,
               and training holds no reference weights.
  PATH         another model (Hugging Face directory or medjax model checkpoint).
Each batch gets ``ref_logps [pairs, 2]``; the loss stays a function of the
policy parameters and the batch.
"""

from __future__ import annotations

import logging
import os

import jax
import numpy as np

from .. import models
from ..models.checkpoint import is_model_checkpoint, load_model
from ..objectives.preference import REFERENCE_FREE, sequence_logps

log = logging.getLogger(__name__)


def needs_reference(config) -> bool:
    o = config.objective
    return (o.name == "dpo" and o.loss_type not in REFERENCE_FREE) or o.name == "kto"


class Reference:
    def __init__(self, config, mesh, model_config, start_params, batch_sharding):
        self.mode = config.objective.reference
        if self.mode == "precompute" and config.objective.name == "kto":
            raise ValueError("objective.reference='precompute' is not available for KTO: its "
                             "KL rows pair examples within a batch; use 'frozen' or a model")
        self.batch_sharding = batch_sharding
        self.params = None
        self.tables: dict[str, dict[int, np.ndarray]] = {}
        cfg = model_config
        if self.mode in ("frozen", "precompute"):
            dt = jax.numpy.dtype(model_config.dtype)
            shardings = jax.tree.map(lambda x: x.sharding, start_params)
            # A copy (new buffers: the policy's are donated to the train step).
            self.params = jax.jit(lambda p: jax.tree.map(lambda x: x.astype(dt), p),
                                  out_shardings=shardings)(start_params)
        elif os.path.isdir(self.mode):
            if is_model_checkpoint(self.mode):
                cfg, self.params = load_model(self.mode, mesh=mesh, dtype=model_config.dtype,
                                              scan_layers=model_config.scan_layers,
                                              remat_policy="none")
            else:
                cfg, self.params = models.load_hf(self.mode, dtype=model_config.dtype, mesh=mesh,
                                                  scan_layers=model_config.scan_layers)
        else:
            raise ValueError(f"objective.reference={self.mode!r}: expected 'frozen', "
                             "'precompute' or a model directory")
        self.config = cfg.replace(remat_policy="none")
        chunk = config.objective.loss_chunk_size
        self._fn = jax.jit(lambda p, b: sequence_logps(self.config, p, b, chunk_size=chunk)[0])

    def compute(self, batch: dict) -> jax.Array:
        """Reference log-probs of a (global, on-device) batch."""
        return self._fn(self.params, batch)

    def precompute(self, name: str, pipeline, workdir: str, to_global) -> None:
        """Fills the table ``name`` from one pass over ``pipeline`` (or its saved file)."""
        path = os.path.join(workdir, f"reference_logps_{name}.npz")
        if os.path.exists(path):
            saved = np.load(path)
            self.tables[name] = dict(zip(saved["ids"].tolist(), saved["logps"]))
            return
        ids_all, logps_all = [], []
        for local in pipeline:
            ids = local.pop("example_id")
            real = local["loss_mask"][:, 0].any(-1)
            logps = self.compute(to_global(local))
            if jax.process_count() > 1:  # every process keeps every process's rows
                from jax.experimental import multihost_utils
                # ids are 64-bit (source << 40 | record): gathered as two 32-bit halves
                hi, lo, logps, real = (
                    np.asarray(multihost_utils.process_allgather(x, tiled=True))
                    for x in ((ids >> 32).astype(np.int32), (ids & 0xFFFFFFFF).astype(np.uint32),
                              logps, real))
                ids = (hi.astype(np.int64) << 32) | lo.astype(np.int64)
            logps = np.asarray(jax.device_get(logps))
            ids_all.append(ids[real])
            logps_all.append(logps[real])
        ids_all = np.concatenate(ids_all)
        logps_all = np.concatenate(logps_all).astype(np.float32)
        self.tables[name] = dict(zip(ids_all.tolist(), logps_all))
        if jax.process_index() == 0:  # the whole table, written once
            tmp = path + ".tmp.npz"
            np.savez(tmp, ids=ids_all, logps=logps_all)
            os.replace(tmp, path)
        log.info("precomputed reference log-probs of %d %s examples", len(ids_all), name)

    def lookup(self, name: str, ids: np.ndarray, real: np.ndarray) -> np.ndarray:
        table = self.tables[name]
        out = np.zeros((len(ids), 2), np.float32)
        for r, (i, ok) in enumerate(zip(ids.tolist(), real.tolist())):
            if ok:
                out[r] = table[i]
        return out

    def release_weights(self):
        """After precomputing, training holds no reference weights."""
        self.params = None
