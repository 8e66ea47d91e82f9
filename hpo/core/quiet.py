"""Quiet output for `hpo` (the CLI calls `libraries()` unless --verbose): the libraries'
start-up chatter and advice go; their errors, and warnings from hpo's own code, stay."""

import ast
import contextlib
import logging
import os
import re
import sys
import tempfile
import warnings

from hpo.core import progress
from hpo.core.errors import disk_full


def libraries() -> None:
    """Call before anything imports TensorFlow."""
    _import_tensorflow()
    _optuna()
    _orphans_of_a_failed_checkpoint_write()


def _orphans_of_a_failed_checkpoint_write() -> None:
    """A checkpoint write that fails (a full disk: hpo says so in one line) leaves orbax's
    TensorStore writes behind, which report on their own as they end: "Event loop is closed"
    tracebacks (printed through sys.excepthook), asyncio's "exception was never retrieved"
    and orbax's thread errors. They repeat hpo's line, hundreds of times: drop them."""
    previous = sys.excepthook

    def excepthook(kind, value, traceback):
        if not (kind is RuntimeError and str(value) == "Event loop is closed"):
            previous(kind, value, traceback)

    sys.excepthook = excepthook
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    logging.getLogger("absl").addFilter(
        lambda record: not disk_full(record.exc_info[1] if record.exc_info else Exception(record.getMessage())))


@contextlib.contextmanager
def _stderr_held():
    """What the block writes to file descriptor 2, C++ logging included, is dropped, or
    written out after all if the block fails."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if failed:
                held.seek(0)
                sys.stderr.write(held.read().decode(errors="replace"))


def _import_tensorflow() -> None:
    # TensorFlow's libraries log as they load ("Could not find cuda drivers", oneDNN advice),
    # which TF_CPP_MIN_LOG_LEVEL does not silence, and its first GPU probe logs "failed call to
    # cuInit" as an error where there is no CUDA (level 3 would hide that, but also JAX's C++
    # errors: jaxlib reads the same variable). hpo keeps TensorFlow off the accelerators
    # (hpo.data.pipeline; JAX uses them), so neither is news: both happen here, unseen.
    with _stderr_held():
        import tensorflow as tf
        tf.config.list_physical_devices("GPU")


def _optuna() -> None:
    import optuna
    # Advice to hpo's developers about the Optuna APIs hpo uses, not to its users.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message=r".*github\.com/optuna/optuna/releases", category=FutureWarning)
    optuna.logging.disable_default_handler()
    logger = logging.getLogger("optuna")
    if not any(isinstance(handler, _OptunaLines) for handler in logger.handlers):
        logger.addHandler(_OptunaLines())


_FINISHED = re.compile(r"Trial (\d+) finished with value: (\S+) and parameters: (\{.*\})\."
                       r"(?: Best is trial (\d+) with value: (\S+)\.)?$")


class _OptunaLines(logging.Handler):
    """Optuna's log in hpo's words: a line per trial (the only per-trial progress hpo shows)
    and Optuna's warnings (a failed trial, with its traceback); not its bookkeeping
    ("A new study created ...")."""

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        if record.levelno >= logging.WARNING:
            progress.line(f"optuna: {text}")
        elif text.startswith("Trial "):
            progress.line(_trial_line(text))


def _trial_line(text: str) -> str:
    """'Trial 0 finished with value: 0.3477876590866581 and parameters: {'learning_rate':
    1.252065381499947}. Best is trial 0 with value: 0.3477876590866581.' as
    'optuna trial 0: 0.3478  learning_rate=1.252  (best: trial 0, 0.3478)'; others ('Trial 3
    pruned. ...') as they are."""
    match = _FINISHED.match(text)
    if not match:
        return f"optuna: {text}"
    number, value, params, best, best_value = match.groups()
    try:
        params = ", ".join(f"{name}={_short(v)}" for name, v in ast.literal_eval(params).items())
    except (ValueError, SyntaxError):  # a value without a literal repr: Optuna's text
        pass
    best = f"  (best: trial {best}, {_short(best_value)})" if best else ""
    return f"optuna trial {number}: {_short(value)}  {params}{best}"


def _short(value) -> str:
    """A float (or its text) to 4 significant digits; anything else as it is."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return value
    return f"{value:.4g}" if isinstance(value, float) else str(value)
