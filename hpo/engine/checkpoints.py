"""Orbax checkpoints of the whole training state plus a small JSON of loop metadata, and the
input pipeline's position beside them (a tf.data iterator checkpoint per host)."""

import contextlib
import errno
import gc
import glob
import json
import os
import re
import shutil
import sys
import warnings
from typing import Any, Dict, Optional, Tuple

import jax
import orbax.checkpoint as ocp
from etils import epath

from hpo.core import faults, io as hpo_io
from hpo.core.errors import UserError, disk_full

# In each local checkpoint directory: {file: size} of what was written (see Checkpointer.close).
MANIFEST = "hpo-files.json"


def _reason(error: Exception) -> str:
    """An orbax or TensorStore error in a few words (without TensorStore's dump of its spec)."""
    text = " ".join(str(error).split()).split(" See full TensorStore details")[0]
    return (text[:157] + "..." if len(text) > 160 else text) or type(error).__name__


def _shapes(tree) -> Dict[str, tuple]:
    """{"encoder.layers_0.mlp.wi.kernel": shape} of a tree of arrays or of orbax's array metadata."""
    def name(path):
        return ".".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)
    return {name(path): tuple(leaf.shape) for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


class Checkpointer:
    """Saves and restores (state, metadata) under `directory`, keeping the newest `keep`; the
    data stream's position goes to `data_directory/process<i>/step<N>.*` (each host its own)."""

    def __init__(self, directory: str, keep: int = 2, data_directory: Optional[str] = None,
                 settings: Optional[Dict[str, Any]] = None):
        """`settings` (e.g. {"TRAIN_STEPS": 1000}) go into every checkpoint's metadata; a
        checkpoint written with other values is not resumed (UserError)."""
        self._directory = hpo_io.abspath(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
        self._manager = ocp.CheckpointManager(self._directory, options=options, item_names=("state", "meta"))
        self._data_directory = data_directory and hpo_io.abspath(data_directory)
        self._settings = dict(settings or {})
        self._abandoned = False  # a save found the disk full: nothing more is written

    def latest_step(self) -> Optional[int]:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, meta: dict, data=None) -> None:
        """`data` (with `save(path)`): its position is written first, so that every state
        checkpoint has one (a kill in between leaves an unused position behind)."""
        self._check_room(step, state)
        try:
            if data is not None and self._data_directory:
                data.save(self._data_path(step))
            meta = {**meta, "settings": self._settings} if self._settings else meta
            self._manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
            faults.point("checkpoint")  # the write begun, not yet committed
        except Exception as e:  # noqa: BLE001  (orbax, TensorStore and tf.data each say it their way)
            if not disk_full(e):
                raise
            self._abandon(e)
        if self._data_directory:
            self._forget_data(keep={step, *self._manager.all_steps()})

    def restore_latest(self, template: Any) -> Optional[Tuple[Any, dict]]:
        """The newest (state, meta), with arrays laid out like `template`; None if none."""
        try:
            return self._restore_latest(template)
        except UserError:
            self._manager.close()  # the run stops here; nothing is written (no manifest: see close)
            raise

    def _restore_latest(self, template: Any) -> Optional[Tuple[Any, dict]]:
        step = self._manager.latest_step()
        if step is None:
            return None
        where = os.path.join(self._directory, str(step))
        advice = (f"remove {where} to resume from an earlier checkpoint, or remove "
                  f"{os.path.dirname(self._directory)} to start this run over, or give another MODEL_DIR")
        self._check_files(step, where, advice)
        self._check_settings(step, where, advice)
        self._check_model(template, where, advice)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        hook = sys.unraisablehook
        # Orbax reads arrays concurrently; when one read fails, the others it abandons report
        # themselves as "Exception ignored" tracebacks and warnings when collected. The failure
        # raised is the one the user needs, once.
        sys.unraisablehook = lambda *_: None
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        except Exception as e:  # noqa: BLE001  (orbax and TensorStore raise many types for a bad checkpoint)
            with warnings.catch_warnings():  # "coroutine ... was never awaited", of the abandoned reads
                warnings.simplefilter("ignore")
                gc.collect()
            reason = _reason(e)
            raise UserError(f"{where}: the checkpoint cannot be restored ({reason}): it is damaged, or "
                            f"was written by another model or optimizer; {advice}") from e
        finally:
            sys.unraisablehook = hook
        return restored["state"], restored["meta"]

    def _check_settings(self, step: int, where: str, advice: str) -> None:
        """UserError if the checkpoint was written with other `settings` than this run's."""
        try:
            meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        except Exception as e:  # noqa: BLE001
            reason = _reason(e)
            raise UserError(f"{where}: the checkpoint cannot be read ({reason}); {advice}") from e
        start_over = (f"give another MODEL_DIR, or remove {os.path.dirname(self._directory)} to start this "
                      f"run over")
        for key, value in self._settings.items():
            saved = (meta.get("settings") or {}).get(key, value)
            if saved != value:
                raise UserError(f"{self._directory}: these checkpoints are of a run with {key} = {saved}, "
                                f"this run has {key} = {value}: {start_over}")
            if key == "TRAIN_STEPS" and step > value:
                raise UserError(f"{where}: a checkpoint of step {step}, past this run's {key} = {value}: "
                                f"{start_over}")

    def _check_files(self, step: int, where: str, advice: str) -> None:
        """UserError if a file listed when the checkpoint was written is missing or has another size."""
        manifest = os.path.join(where, MANIFEST)
        if hpo_io.is_url(where) or not os.path.isfile(manifest):
            return  # written before manifests, or by a process that was killed before it wrote one
        try:
            sizes = hpo_io.read_json(manifest)
        except ValueError:
            sizes = None
        if not isinstance(sizes, dict):
            raise UserError(f"{manifest}: damaged (not a JSON object); {advice}")
        for name, size in sorted(sizes.items()):
            path = os.path.join(where, name)
            if not os.path.isfile(path):
                raise UserError(f"{where}: the checkpoint is incomplete ({name} is missing); {advice}")
            if os.path.getsize(path) != size:
                raise UserError(f"{where}: the checkpoint is damaged ({name} has {os.path.getsize(path)} "
                                f"bytes, {size} were written); {advice}")

    def _check_model(self, template: Any, where: str, advice: str) -> None:
        """UserError if the checkpoint's parameters have other names or shapes than the model's."""
        params = getattr(template, "params", None)
        if params is None:
            return
        try:
            stored = ocp.StandardCheckpointHandler().metadata(epath.Path(where) / "state").tree["params"]
        except Exception as e:  # noqa: BLE001
            reason = _reason(e)
            raise UserError(f"{where}: the checkpoint cannot be read ({reason}); {advice}") from e
        ours, theirs = _shapes(params), _shapes(stored)
        if ours != theirs:
            name = next(iter(sorted(set(ours) ^ set(theirs)))) if set(ours) != set(theirs) else \
                next(k for k in sorted(ours) if ours[k] != theirs[k])
            raise UserError(f"{where}: the checkpoint is of another model (parameter {name}: "
                            f"{theirs.get(name, 'absent')} in the checkpoint, {ours.get(name, 'absent')} in this "
                            f"model); give another MODEL_DIR, or remove {os.path.dirname(self._directory)} "
                            f"to start this run over")

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
        if self._abandoned:
            return
        try:
            self._manager.wait_until_finished()  # an asynchronous save's error surfaces here
        except Exception as e:  # noqa: BLE001
            if not disk_full(e):
                raise
            self._abandon(e)
        self._write_manifests()
        self._manager.close()

    def _check_room(self, step: int, state: Any) -> None:
        """Stops the run before a checkpoint the disk has no room for: a write that fails half
        way leaves orbax's and TensorStore's threads failing on their own. The room needed is
        twice the last checkpoint's size with its data position (the state's bytes before the
        first): the new checkpoint is written in full before the oldest goes, and its writers
        need room of their own on the way."""
        if hpo_io.is_url(self._directory) or not os.path.isdir(self._directory):
            return
        complete = self._complete_steps()
        if complete:
            last = max(complete)
            files = [os.path.join(root, name) for root, _, names in os.walk(os.path.join(self._directory, str(last)))
                     for name in names]
            files += glob.glob(self._data_path(last) + ".*") if self._data_directory else []
            needed = sum(os.path.getsize(f) for f in files)
        else:
            needed = sum(getattr(leaf, "nbytes", 0) for leaf in jax.tree_util.tree_leaves(state))
        free = shutil.disk_usage(self._directory).free
        if free < 2 * needed:
            self._abandon(OSError(errno.ENOSPC, f"{free} bytes free, the checkpoint of step {step} "
                                                f"needs about {needed}"))

    def _complete_steps(self) -> list:
        """The steps of the finished checkpoints on disk (not orbax's temporaries)."""
        return [int(name) for name in os.listdir(self._directory) if name.isdigit()]

    def _abandon(self, error: Exception) -> None:
        """A checkpoint the disk had no room for: its partial files go (orbax's and tf.data's
        temporaries), the complete checkpoints stay, and the run stops with one line."""
        self._abandoned = True
        with contextlib.suppress(Exception):  # orbax re-raises the failed save on the way out
            self._manager.close()
        if not hpo_io.is_url(self._directory):
            partial = glob.glob(os.path.join(self._directory, "*.orbax-checkpoint-tmp*"))
            if self._data_directory:
                partial += glob.glob(os.path.join(os.path.dirname(self._data_path(0)), "step*_temp"))
            for path in partial:
                shutil.rmtree(path, ignore_errors=True)
        complete = [] if hpo_io.is_url(self._directory) else self._complete_steps()
        if self._data_directory:  # positions of steps that have no state checkpoint
            self._forget_data(keep=set(complete))
        resume = f"step {max(complete)}, its last complete checkpoint" if complete else "its start"
        raise UserError(f"{self._directory}: the disk is full (No space left on device); free space and run "
                        f"the same command again: it resumes from {resume}") from error

    def _write_manifests(self) -> None:
        """Beside each finished local checkpoint, the size of every file in it (read before a
        restore: a truncated or missing file is reported as such, not as a TensorStore error)."""
        if hpo_io.is_url(self._directory):
            return
        for step in self._manager.all_steps():
            where = os.path.join(self._directory, str(step))
            if not os.path.isdir(where) or os.path.exists(os.path.join(where, MANIFEST)):
                continue
            sizes = {os.path.relpath(os.path.join(root, name), where): os.path.getsize(os.path.join(root, name))
                     for root, _, names in os.walk(where) for name in names}
            text = json.dumps(sizes, indent=2, sort_keys=True) + "\n"  # as hpo_io.write_json writes
            hpo_io.write_bytes(os.path.join(where, MANIFEST), text.encode(), phase="checkpoint")

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
