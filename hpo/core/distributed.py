"""Several hosts, one run: JAX's distributed runtime, the leader, and agreeing on values.

Every host runs the same `hpo run --multihost ...`. `initialize` starts JAX's
distributed runtime before anything touches a device (where T5X's own
`train.py` does it), so `jax.devices()` is the global device list and both
backends train over one global mesh. Process 0 is the leader: it alone writes
result files and talks to the Optuna study; `broadcast` hands its decisions
(a trial's values, "stop") to the other hosts.
"""

import json
from typing import Any, Optional

import jax
import numpy as np

from hpo.core.errors import UserError


def initialize(coordinator_address: Optional[str] = None, process_count: Optional[int] = None,
               process_index: Optional[int] = None) -> None:
    """JAX's distributed runtime: explicit (like T5X's --multiprocess_gpu flags) or, with no
    arguments, auto-detected (Cloud TPU VMs, SLURM, ...)."""
    explicit = (coordinator_address, process_count, process_index)
    if any(x is not None for x in explicit) and not all(x is not None for x in explicit):
        raise UserError("--multihost: give all of --coordinator_address, --process_count and --process_index, "
                        "or none of them (auto-detected on Cloud TPU VMs)")
    if coordinator_address is not None:
        host, _, port = coordinator_address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UserError(f"--coordinator_address: expected HOST:PORT, got '{coordinator_address}'")
        if process_count < 1:
            raise UserError(f"--process_count must be at least 1, got {process_count}")
        if not 0 <= process_index < process_count:
            raise UserError(f"--process_index must be in [0, {process_count}) (--process_count), got {process_index}")
    # CPU hosts need a collectives library to reach each other (TPUs and GPUs have their own).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        if coordinator_address is None:
            jax.distributed.initialize()
        else:
            jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=process_count,
                                       process_id=process_index)
    except (ValueError, RuntimeError) as e:
        raise UserError(f"--multihost: JAX's distributed runtime did not start: {str(e).splitlines()[0]}") from e


def is_leader() -> bool:
    return jax.process_index() == 0


def broadcast(value: Any) -> Any:
    """The leader's `value` (anything JSON can carry) on every host; itself on a single host."""
    if jax.process_count() == 1:
        return value
    from jax.experimental import multihost_utils
    data = np.frombuffer(json.dumps(value).encode(), np.uint8) if is_leader() else np.zeros(0, np.uint8)
    size = int(multihost_utils.broadcast_one_to_all(np.int32(len(data))))
    padded = np.zeros(size, np.uint8)
    padded[: len(data)] = data[:size]
    received = np.asarray(multihost_utils.broadcast_one_to_all(padded))
    return json.loads(received.astype(np.uint8).tobytes().decode())


class Stopped(Exception):
    """The leader stopped this run (Optuna pruned its trial); raised on the other hosts."""


def call_on_leader(hook, *args) -> None:
    """Runs `hook` (e.g. Optuna's pruning check) on the leader; if it raises, every host stops:
    the leader with the hook's exception, the others with `Stopped`. The other hosts' own
    hook is not called, but they must pass one, so that all of them reach this point."""
    error = None
    if is_leader():
        try:
            hook(*args)
        except Exception as e:  # noqa: BLE001  (re-raised below, on every host)
            error = e
    stop_everywhere(error)


def stop_everywhere(error: Optional[BaseException]) -> None:
    """Raises on every host if the leader has `error`: it there, `Stopped` elsewhere."""
    if broadcast(error is not None):
        raise error if is_leader() else Stopped()
