"""Training checkpoints: Orbax CheckpointManager over {state, data iterator, config}.

Saves are asynchronous; Orbax writes each step into a temporary directory and
renames it when complete, so a run killed at any moment (even mid-save)
restarts from the newest complete checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any

import jax
import orbax.checkpoint as ocp
from jax.sharding import Mesh, SingleDeviceSharding

from ..models import ModelConfig, abstract_params, param_shardings

MODEL_CONFIG_FILE = "model_config.json"  # in a training workdir, next to checkpoints/


_SHAPE_FIELDS = ("family", "vocab_size", "hidden_size", "intermediate_size", "num_layers",
                 "num_heads", "num_kv_heads", "head_dim", "tie_embeddings")


def check_workdir(workdir: str, config: ModelConfig, objective: str) -> None:
    """A workdir that already holds a run of another model or objective is an error
    (restarting there would try to resume it), never silently reused."""
    path = os.path.join(workdir, MODEL_CONFIG_FILE)
    if not os.path.exists(path):
        return
    with open(path) as f:
        saved = json.load(f)
    changed = [k for k in _SHAPE_FIELDS if saved.get(k) != getattr(config, k)]
    if saved.get("objective", objective) != objective:
        changed.append("objective")
    if changed:
        raise ValueError(f"{workdir}: holds a run of another model or objective (differs in "
                         f"{changed}); use a new --workdir, or model.init_from={workdir} to "
                         "start from it")


def write_model_config(workdir: str, config: ModelConfig, objective: str = "") -> None:
    if jax.process_index() == 0:
        tmp = os.path.join(workdir, MODEL_CONFIG_FILE + ".tmp")
        with open(tmp, "w") as f:
            json.dump({**config.to_dict(), "objective": objective}, f, indent=2)
        os.replace(tmp, os.path.join(workdir, MODEL_CONFIG_FILE))


def is_training_workdir(path: str) -> bool:
    return (os.path.isfile(os.path.join(path, MODEL_CONFIG_FILE))
            and os.path.isdir(os.path.join(path, "checkpoints")))


def _checkpoint_steps(workdir: str) -> tuple[str, list[int]]:
    directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    steps = sorted(int(d) for d in os.listdir(directory) if d.isdigit())
    if not steps:
        raise FileNotFoundError(f"{directory}: no complete checkpoint to start from")
    return directory, steps


def load_run_config(workdir: str) -> dict:
    """The training config (as a dict) saved with the newest checkpoint of a workdir."""
    directory, steps = _checkpoint_steps(workdir)
    path = os.path.join(directory, str(steps[-1]), "config")
    with ocp.Checkpointer(ocp.JsonCheckpointHandler()) as ckptr:
        return ckptr.restore(path)


def load_trained_params(workdir: str, mesh: Mesh | None = None, **config_overrides):
    """(ModelConfig, params) of the newest checkpoint of a training workdir.

    Only the parameters are read (no optimizer state), straight into their
    shardings on ``mesh`` (default: one device). A reward run's parameters
    hold its ``reward_head`` in place of ``lm_head``.
    """
    with open(os.path.join(workdir, MODEL_CONFIG_FILE)) as f:
        saved = json.load(f)
    head = "reward" if saved.pop("objective", "") == "reward" else "lm"
    saved = ModelConfig.from_dict(saved)
    config = saved.replace(**config_overrides)
    directory, steps = _checkpoint_steps(workdir)
    abstract = abstract_params(saved, head)  # as stored
    if mesh is not None:
        shardings = param_shardings(config, mesh, head)
    else:
        single = SingleDeviceSharding(jax.local_devices()[0])
        shardings = jax.tree.map(lambda _: single, abstract)
    restore_args = jax.tree.map(lambda s: ocp.ArrayRestoreArgs(sharding=s), shardings)
    with ocp.PyTreeCheckpointer() as ckptr:
        state = ckptr.restore(
            os.path.join(directory, str(steps[-1]), "state"),
            args=ocp.args.PyTreeRestore(item={"params": abstract},
                                        restore_args={"params": restore_args},
                                        partial_restore=True))
    params = state["params"]
    dt = jax.numpy.dtype(config.param_dtype)
    params = jax.tree.map(lambda x: x.astype(dt) if x.dtype != dt else x, params)
    return config, params


class DataShardsHandler:
    """Orbax handler for a ``ShardedBatches`` iterator: every process writes the
    Grain state of each data shard it owns as ``shard_S-of-N.json`` into the
    same directory, and reads back the shards it owns now, so a checkpoint
    written by 2 processes restores in 1 (or 4) as long as ``data.shards`` is
    the same."""

    def save(self, directory, item=None, args=None):
        item = item or args.item
        n = item.num_shards
        for s, state in item.get_state().items():
            (directory / f"shard_{s}-of-{n}.json").write_text(json.dumps(state))

    def restore(self, directory, item=None, args=None):
        item = item or args.item
        n = item.num_shards
        states = {}
        for s in item.iterators:
            path = directory / f"shard_{s}-of-{n}.json"
            if not path.exists():
                saved = sorted({int(m.group(1)) for f in directory.iterdir()
                                if (m := re.fullmatch(r"shard_\d+-of-(\d+)\.json", f.name))})
                raise ValueError(
                    f"{directory}: the checkpoint's data iterator has "
                    f"{saved[0] if saved else 'no'} data shards, this run {n}; resume with "
                    f"--config.data.shards={saved[0] if saved else '...'} (the global batch "
                    "then stays the same on any number of processes)")
            states[str(s)] = json.loads(path.read_text())
        item.set_state(states)
        return item

    def structure(self, directory):
        return None

    def metadata(self, directory):
        return None

    def finalize(self, directory):
        pass

    def close(self):
        pass

    @classmethod
    def typestr(cls):
        return f"{cls.__module__}.{cls.__qualname__}"


@ocp.args.register_with_handler(DataShardsHandler, for_save=True)
@dataclasses.dataclass
class DataShardsSave(ocp.args.CheckpointArgs):
    item: Any


@ocp.args.register_with_handler(DataShardsHandler, for_restore=True)
@dataclasses.dataclass
class DataShardsRestore(ocp.args.CheckpointArgs):
    item: Any


class Checkpointer:
    def __init__(self, directory: str, *, keep: int, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=async_save, create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("state", "data", "config"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: dict, data_iter, config_dict: dict, *, force=False) -> bool:
        return self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=DataShardsSave(data_iter),
                config=ocp.args.JsonSave(config_dict)),
            force=force)

    def restore(self, step: int, abstract_state: dict, data_iter) -> dict:
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                data=DataShardsRestore(data_iter)))
        return restored["state"]

    def wait(self):
        self.manager.wait_until_finished()

    def close(self):
        self.manager.close()
