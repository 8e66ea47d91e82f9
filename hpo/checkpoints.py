"""Orbax checkpoints of the whole training state plus a small JSON of loop metadata."""

from typing import Any, Optional, Tuple

import jax
import orbax.checkpoint as ocp

from hpo import io as hpo_io


class Checkpointer:
    """Saves and restores (state, metadata) under `directory`, keeping the newest `keep`."""

    def __init__(self, directory: str, keep: int = 2):
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
        self._manager = ocp.CheckpointManager(hpo_io.abspath(directory), options=options,
                                              item_names=("state", "meta"))

    def latest_step(self) -> Optional[int]:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, meta: dict) -> None:
        self._manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)

    def restore_latest(self, template: Any) -> Optional[Tuple[Any, dict]]:
        """The newest (state, meta), with arrays laid out like `template`; None if none."""
        step = self._manager.latest_step()
        if step is None:
            return None
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        return restored["state"], restored["meta"]

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
