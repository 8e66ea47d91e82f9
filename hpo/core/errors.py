"""The one error type that means "the user's input is wrong", checks of configured numbers, and
`Diverged`, a run's result that every engine and strategy names."""

import errno
import math
import numbers
from typing import List


class UserError(Exception):
    """Bad input: the CLI prints the message on one line and exits with status 2."""


class Diverged(FloatingPointError):
    """A run whose loss stopped being finite, at `step` (`reason`: which loss)."""

    def __init__(self, step: int, reason: str):
        super().__init__(f"diverged at step {step}: {reason}")
        self.step, self.reason = step, reason


def positive_int(value, name: str, where: str = "") -> int:
    """`value` if it is an integer > 0, else UserError naming the setting `name` (and `where`
    it is bound, if that is another name)."""
    suffix = f" ({where})" if where else ""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise UserError(f"{name} must be a positive integer, got {value!r}{suffix}")
    if value <= 0:
        raise UserError(f"{name} must be positive, got {value}{suffix}")
    return value


def positive_number(value, name: str) -> float:
    """`value` as a float if it is a finite number > 0, else UserError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < math.inf:
        raise UserError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def non_negative_int(value, name: str) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
        raise UserError(f"{name} must be an integer >= 0, got {value!r}")
    return value


def finite_number(value, name: str) -> float:
    """`value` as a float if it is a finite number, else UserError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise UserError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def comma_list(flag: str, text: str, noun: str) -> List[str]:
    """The items of a comma-separated flag: none empty, none twice (order is the user's)."""
    if not text.strip():
        raise UserError(f"{flag} is empty")
    items = [s.strip() for s in text.split(",")]
    if "" in items:
        raise UserError(f"{flag}: an empty item in '{text}'")
    repeated = next((s for s in items if items.count(s) > 1), None)
    if repeated is not None:
        raise UserError(f"{flag}: {noun} {repeated} is given twice")
    return items


def disk_full(error: BaseException) -> bool:
    """ENOSPC, however the library that met it reports it (an OSError, TensorStore's
    RESOURCE_EXHAUSTED, tf's ResourceExhaustedError), here or in the error it chains."""
    for _ in range(10):  # the chain, not a cycle
        if error is None:
            return False
        if getattr(error, "errno", None) == errno.ENOSPC or "No space left on device" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False
