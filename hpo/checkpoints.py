"""Orbax checkpoints of the whole training state plus a small JSON of loop metadata, and the
input pipeline's position beside them (a tf.data iterator checkpoint per host)."""

import os
import re
from typing import Any, Optional, Tuple

import jax
import orbax.checkpoint as ocp

from hpo import io as hpo_io


class Checkpointer:
    """Saves and restores (state, metadata) under `directory`, keeping the newest `keep`; the
    data stream's position goes to `data_directory/process<i>/step<N>.*` (each host its own)."""

    def __init__(self, directory: str, keep: int = 2, data_directory: Optional[str] = None):
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
        self._manager = ocp.CheckpointManager(hpo_io.abspath(directory), options=options,
                                              item_names=("state", "meta"))
        self._data_directory = data_directory and hpo_io.abspath(data_directory)

    def latest_step(self) -> Optional[int]:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, meta: dict, data=None) -> None:
        """`data` (with `save(path)`): its position is written first, so that every state
        checkpoint has one (a kill in between leaves an unused position behind)."""
        if data is not None and self._data_directory:
            data.save(self._data_path(step))
        self._manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
        if self._data_directory:
            self._forget_data(keep={step, *self._manager.all_steps()})

    def restore_latest(self, template: Any) -> Optional[Tuple[Any, dict]]:
        """The newest (state, meta), with arrays laid out like `template`; None if none."""
        step = self._manager.latest_step()
        if step is None:
            return None
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        return restored["state"], restored["meta"]

    def restore_data(self, step: int, data) -> None:
        """Puts `data` (a stream from its start) where it was at `step`: from its saved position
        or, for a checkpoint without one (an older run), by reading `step` batches."""
        path = self._data_path(step)
        if self._data_directory and hpo_io.exists(path + ".index"):
            data.restore(path)
        else:
            for _ in range(step):
                next(data)

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

    def _data_path(self, step: int) -> str:
        return os.path.join(self._data_directory, f"process{jax.process_index()}", f"step{step}")

    def _forget_data(self, keep) -> None:
        """Removes this host's positions of the steps that have no state checkpoint any more."""
        directory = os.path.dirname(self._data_path(0))
        if not hpo_io.isdir(directory):
            return
        for name in hpo_io.listdir(directory):
            found = re.match(r"step(\d+)\.", name)
            if found and int(found.group(1)) not in keep:
                hpo_io.remove(os.path.join(directory, name))
