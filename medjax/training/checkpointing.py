"""Training checkpoints: Orbax CheckpointManager over {state, data iterator, config}.

Saves are asynchronous; Orbax writes each step into a temporary directory and
renames it when complete, so a run killed at any moment (even mid-save)
restarts from the newest complete checkpoint.
"""

from __future__ import annotations

import os

import grain
import orbax.checkpoint as ocp


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
                data=grain.checkpoint.CheckpointSave(data_iter),
                config=ocp.args.JsonSave(config_dict)),
            force=force)

    def restore(self, step: int, abstract_state: dict, data_iter) -> dict:
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                data=grain.checkpoint.CheckpointRestore(data_iter)))
        return restored["state"]

    def wait(self):
        self.manager.wait_until_finished()

    def close(self):
        self.manager.close()
