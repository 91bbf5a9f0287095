"""medjax model checkpoints: the parameters in Orbax, the ModelConfig in JSON.

Layout of a model checkpoint directory::

    DIR/medjax_model.json   {"format": "medjax-model", "version": 1, "config": {...},
                             "head": "lm" | "reward", "tokenizer": name | dir | null,
                             "template": name | null}   (without "head": "lm")
    DIR/params/             Orbax StandardCheckpointer tree (sharded arrays)

Restoring reshards onto any mesh: the target shardings come from the config
and the mesh given at load time, not from the mesh that saved.
"""

from __future__ import annotations

import json
import os

import jax
import orbax.checkpoint as ocp
from jax.sharding import Mesh

from .config import ModelConfig, read_json
from .decoder import HEADS, abstract_params, head_of, param_shardings

META_FILE = "medjax_model.json"
FORMAT = "medjax-model"


def is_model_checkpoint(path: str | os.PathLike) -> bool:
    return os.path.isfile(os.path.join(os.fspath(path), META_FILE))


def save_model(config: ModelConfig, params: dict, path: str | os.PathLike, *,
               overwrite: bool = False, tokenizer: str | None = None,
               template: str | None = None) -> None:
    """Saves ``params`` and ``config`` to ``path`` (every process must call this), with the
    tokenizer (name or directory) and chat template the model goes with, if known."""
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and os.listdir(path):
        if not overwrite:
            raise FileExistsError(f"{path}: exists and is not empty; pass overwrite=True "
                                  "(--overwrite) to replace it")
    os.makedirs(path, exist_ok=True)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(os.path.join(path, "params"), params, force=overwrite)
        ckptr.wait_until_finished()
    if jax.process_index() == 0:
        meta = {"format": FORMAT, "version": 1, "config": config.to_dict(),
                "head": head_of(params), "tokenizer": tokenizer, "template": template}
        with open(os.path.join(path, META_FILE), "w") as f:
            json.dump(meta, f, indent=2)


def load_model_config(path: str | os.PathLike) -> ModelConfig:
    return read_meta(os.path.join(os.fspath(path), META_FILE))["config"]


def read_meta(meta_path: str, meta: dict | None = None) -> dict:
    """A model metadata file (``medjax_model.json``, or a workdir's ``model_config.json``)
    as a dict whose ``config`` is a ModelConfig and whose ``head`` is checked."""
    if meta is None:
        meta = read_json(meta_path, "not a medjax model checkpoint")
    if meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path}: field 'format' is {meta.get('format')!r}, "
                         f"expected {FORMAT!r}")
    meta = dict(meta)
    meta.setdefault("head", "lm")
    if meta["head"] not in HEADS:
        raise ValueError(f"{meta_path}: field 'head' is {meta['head']!r}, expected one of "
                         f"{HEADS}")
    try:
        meta["config"] = ModelConfig.from_dict(meta["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{meta_path}: field 'config': {e}") from None
    return meta


def load_model(path: str | os.PathLike, *, mesh: Mesh | None = None,
               **config_overrides) -> tuple[ModelConfig, dict]:
    """Restores ``(config, params)``, sharded for ``mesh`` (default: one device).

    ``config_overrides`` may change execution fields (dtype, remat, scan,
    attention backend); ``param_dtype`` casts the restored parameters. A reward
    model's parameters hold ``reward_head`` in place of ``lm_head``.
    """
    path = os.path.abspath(os.fspath(path))
    meta = read_meta(os.path.join(path, META_FILE))
    saved, head = meta["config"], meta["head"]
    config = saved.replace(**config_overrides)
    # Restore in the dtype that was saved, then cast if asked.
    abstract = abstract_params(saved, head)
    shardings = param_shardings(saved, mesh, head)
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract, shardings)
    with ocp.StandardCheckpointer() as ckptr:
        params = ckptr.restore(os.path.join(path, "params"), target)
    if config.param_dtype != saved.param_dtype:
        dt = jax.numpy.dtype(config.param_dtype)
        params = jax.jit(lambda p: jax.tree.map(lambda x: x.astype(dt), p),
                         out_shardings=shardings)(params)
    return config, params
