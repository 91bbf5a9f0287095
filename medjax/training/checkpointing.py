"""Training checkpoints: Orbax CheckpointManager over {state, data iterator, config}.

Saves are asynchronous; Orbax writes each step into a temporary directory and
renames it when complete, so a run killed at any moment (even mid-save)
restarts from the newest complete checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from typing import Any

import jax
import orbax.checkpoint as ocp

from ..models import ModelConfig
from ..models.load import WORKDIR_META, checkpoint_steps, model_meta

log = logging.getLogger(__name__)

_SHAPE_FIELDS = ("family", "vocab_size", "hidden_size", "intermediate_size", "num_layers",
                 "num_heads", "num_kv_heads", "head_dim", "tie_embeddings")


def check_workdir(workdir: str, config: ModelConfig, objective: str) -> None:
    """A workdir that already holds a run of another model or objective is an error
    (restarting there would try to resume it), never silently reused."""
    if not os.path.exists(os.path.join(workdir, WORKDIR_META)):
        return
    with open(os.path.join(workdir, WORKDIR_META)) as f:
        saved = json.load(f)
    saved_config = saved.get("config", saved)  # the layout of medjax_model.json, or older
    changed = [k for k in _SHAPE_FIELDS if saved_config.get(k) != getattr(config, k)]
    if saved.get("objective", objective) != objective:
        changed.append("objective")
    if changed:
        raise ValueError(f"{workdir}: holds a run of another model or objective (differs in "
                         f"{changed}); use a new --workdir, or model.init_from={workdir} to "
                         "start from it")


def write_model_meta(workdir: str, config: ModelConfig, head: str, *, objective: str,
                     tokenizer: str, template: str | None, **extra) -> None:
    """The workdir's model metadata (``models.load`` reads the workdir with it): the
    layout of a model checkpoint's ``medjax_model.json`` plus the objective."""
    if jax.process_index() == 0:
        if os.path.isdir(tokenizer):
            tokenizer = os.path.abspath(tokenizer)
        meta = model_meta(config, head, tokenizer=tokenizer, template=template,
                          objective=objective, **extra)  # LoRA: lora_base (what it adapts)
        tmp = os.path.join(workdir, WORKDIR_META + ".tmp")
        with open(tmp, "w") as f:
            json.dump(meta, f, indent=2)
        os.replace(tmp, os.path.join(workdir, WORKDIR_META))


def write_config(workdir: str, config) -> None:
    """The run's resolved config as ``WORKDIR/config.json`` (for the user to read; each
    checkpoint holds its own copy)."""
    if jax.process_index() == 0:
        tmp = os.path.join(workdir, "config.json.tmp")
        with open(tmp, "w") as f:
            f.write(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")
        os.replace(tmp, os.path.join(workdir, "config.json"))


def load_run_config(workdir: str) -> dict:
    """The training config (as a dict) saved with the newest checkpoint of a workdir."""
    directory, steps = checkpoint_steps(workdir)
    path = os.path.join(directory, str(steps[-1]), "config")
    with ocp.Checkpointer(ocp.JsonCheckpointHandler()) as ckptr:
        return ckptr.restore(path)


def shard_counts(names) -> list[int]:
    """The data shard counts N in file names ``shard_S-of-N.json`` of a checkpoint."""
    return sorted({int(m.group(1)) for f in names
                   if (m := re.fullmatch(r"shard_\d+-of-(\d+)\.json", f))})


def shard_count_error(directory, names, n: int) -> ValueError:
    saved = shard_counts(names)
    return ValueError(
        f"{directory}: the checkpoint's data iterator has {saved[0] if saved else 'no'} "
        f"data shards, this run {n}; resume with --config.data.shards="
        f"{saved[0] if saved else '...'} (the global batch then stays the same on any number "
        "of processes)")


def saved_data_shards(workdir: str) -> int | None:
    """The number of data shards the newest checkpoint of ``workdir`` was written with
    (None: no checkpoint)."""
    try:
        directory, steps = checkpoint_steps(workdir)
        counts = shard_counts(os.listdir(os.path.join(directory, str(steps[-1]), "data")))
    except (FileNotFoundError, NotADirectoryError):
        return None
    return counts[0] if len(counts) == 1 else None


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
                raise shard_count_error(directory, [f.name for f in directory.iterdir()], n)
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


def _words_sum(x):
    import jax.numpy as jnp
    size = jnp.dtype(x.dtype).itemsize
    if size == 8:
        u = jax.lax.bitcast_convert_type(x, jnp.uint32)
    elif size in (2, 4):
        u = jax.lax.bitcast_convert_type(x, {2: jnp.uint16, 4: jnp.uint32}[size])
    else:
        u = x.astype(jnp.uint8)
    return jnp.sum(u.astype(jnp.uint32), dtype=jnp.uint32)


_checksums = jax.jit(lambda leaves: [_words_sum(x) for x in leaves])


def state_checksums(state: dict) -> dict[str, int]:
    """Per tensor: the sum of its bits as uint32 words, wrapping. Integer addition is
    exact and order-free, so the value does not depend on the mesh or process count a
    state is sharded over; any single flipped bit changes it. Computed on device (one
    read of the state), so saving a 70B state costs a reduction, not a host copy."""
    flat = jax.tree_util.tree_leaves_with_path(state)
    sums = jax.device_get(_checksums([x for _, x in flat]))
    return {jax.tree_util.keystr(p): int(v) for (p, _), v in zip(flat, sums)}


class Checkpointer:
    def __init__(self, directory: str, *, keep: int, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=async_save, create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("state", "data", "config",
                                                         "checksums"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: dict, data_iter, config_dict: dict, *, force=False) -> bool:
        return self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=DataShardsSave(data_iter),
                config=ocp.args.JsonSave(config_dict),
                checksums=ocp.args.JsonSave(state_checksums(state))),
            force=force)

    def problem(self, step: int, data_iter) -> str | None:
        """What makes the checkpoint at ``step`` unreadable, found without reading the
        weights (a missing item, a missing or damaged data-shard file), naming the file;
        None if nothing is. A different data shard count is not damage: an error."""
        root = os.path.join(self.directory, str(step))
        for item in ("state", "data"):
            if not os.path.isdir(os.path.join(root, item)):
                return f"{os.path.join(root, item)}: missing"
        data = os.path.join(root, "data")
        n = data_iter.num_shards
        names = os.listdir(data)
        if shard_counts(names) and n not in shard_counts(names):  # not damage: another count
            raise shard_count_error(data, names, n)
        for shard in data_iter.iterators:
            path = os.path.join(data, f"shard_{shard}-of-{n}.json")
            try:
                with open(path) as f:
                    json.load(f)
            except FileNotFoundError:
                return f"{path}: missing"
            except (ValueError, OSError) as e:
                return f"{path}: damaged ({e})"
        return None

    def restore_newest(self, abstract_state: dict, data_iter, *, fallback: bool = True
                       ) -> tuple[int | None, dict | None]:
        """(step, state) of the newest readable checkpoint, the data iterator set to its
        position; (None, None) if there is none. An unreadable newest checkpoint is
        reported in one line naming the step and file, moved aside (``STEP.damaged``)
        and the previous one used; with ``fallback=False`` it is an error instead."""
        from .batches import all_processes
        for step in sorted(self.manager.all_steps(), reverse=True):
            problem = self.problem(step, data_iter)
            if all_processes(problem is None).all():  # every process reads, or none
                try:
                    state = self.restore(step, abstract_state, data_iter)
                    problem = self.verify(step, state)
                except Exception as e:  # noqa: BLE001 - any failure to read: report it
                    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
                    problem = f"{os.path.join(self.directory, str(step))}: {first}"
                if all_processes(problem is None).all():
                    return step, state
            if not fallback:
                raise ValueError(f"the checkpoint at step {step} is unreadable ({problem}); "
                                 "set checkpoint.fallback=True to resume from the previous "
                                 "one, or move it away")
            log.warning("the checkpoint at step %d is unreadable (%s); moved aside to %d.damaged, "
                        "resuming from the previous one", step, problem or "on another process",
                        step)
            self._move_aside(step)
        if self.manager.all_steps():
            raise ValueError(f"{self.directory}: no readable checkpoint")
        return None, None

    def verify(self, step: int, state: dict) -> str | None:
        """The restored state against the checksums saved with it (checkpoints written
        before checksums existed are not checked); a problem naming the tensor, or None."""
        path = os.path.join(self.directory, str(step), "checksums")
        if not os.path.isdir(path):
            return None
        with ocp.Checkpointer(ocp.JsonCheckpointHandler()) as ckptr:
            saved = ckptr.restore(path)
        now = state_checksums(state)
        bad = [k for k in saved if now.get(k) != saved[k]] + sorted(set(now) - set(saved))
        if bad:
            return (f"{os.path.join(self.directory, str(step), 'state')}: {bad[0]} does not "
                    f"match its checksum" + (f" (and {len(bad) - 1} more)" if len(bad) > 1
                                             else "") + " (damaged)")
        return None

    def _move_aside(self, step: int) -> None:
        """``STEP`` -> ``STEP.damaged`` (kept for inspection; Orbax no longer sees it)."""
        if jax.process_index() == 0:
            src = os.path.join(self.directory, str(step))
            dst, k = f"{src}.damaged", 1
            while os.path.exists(dst):
                k += 1
                dst = f"{src}.damaged{k}"
            os.rename(src, dst)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices(f"medjax_move_aside_{step}")
        self.manager.reload()

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
