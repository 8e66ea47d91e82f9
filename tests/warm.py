"""`hpo` processes that start warm, for tests that need a real process (to kill it, to run
hosts side by side, to give it its own devices) but not a real interpreter start-up.

Each child is forked from one server process per test worker that imported TensorFlow, JAX,
seqio and hpo once: importing them costs ~15 s of CPU a process on these machines, more than
a tiny run itself. The child is a process of its own (its pid, its exit status, SIGKILL ends
it) that runs `hpo.cli.main.main(argv)`, or a test's function, with the environment, working
directory and output files it is given. Tests of what a cold `python -m hpo.cli.main` prints
keep using subprocess.
"""

import atexit
import multiprocessing
import os
import sys
import tempfile
from typing import Callable, Dict, Optional, Sequence

# Imported by the server, not run: nothing here starts TensorFlow's or JAX's runtime, which
# would leave threads a fork cannot copy.
PRELOAD = ["tensorflow", "jax", "seqio", "optuna", "optuna.storages", "sacrebleu", "matplotlib.figure",
           "matplotlib.backends.backend_agg", "hpo.cli.main", "hpo.engine.experiment", "hpo.cli.configurables", "hpo.report.table",
           "hpo.report.plots", "hpo.report.claims", "hpo.run.replays", "hpo.cli.gin_config", "hpo.core.quiet"]
_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(PRELOAD)


def _child(function, args, env, cwd, out_path, err_path):
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    for fd, path in ((1, out_path), (2, err_path)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(target, fd)
        os.close(target)
    try:
        code = function(*args)
    finally:
        atexit._run_exitfuncs()  # as the interpreter would at exit (JAX's distributed shutdown)
        sys.stdout.flush()
        sys.stderr.flush()
    sys.exit(code or 0)


class Process:
    """`function(*args)` in a warm child, its exit status what it returns (None: 0); the parts
    of subprocess.Popen the tests use. The function must be importable (module level)."""

    def __init__(self, function: Callable, *args, env: Optional[Dict[str, str]] = None):
        self._dir = tempfile.TemporaryDirectory(prefix="hpo-warm-")  # removed with this object
        self._out, self._err = (os.path.join(self._dir.name, name) for name in ("stdout", "stderr"))
        self._process = _CONTEXT.Process(target=_child, args=(
            function, args, {**os.environ, **(env or {})}, os.getcwd(), self._out, self._err))
        self._process.start()
        self.pid = self._process.pid
        self.returncode = None

    def poll(self) -> Optional[int]:
        return None if self._process.is_alive() else self.wait()

    def wait(self, timeout: Optional[float] = None) -> int:
        self._process.join(timeout)
        if self._process.exitcode is None:
            raise TimeoutError(f"process {self.pid} still running after {timeout} s")
        self.returncode = self._process.exitcode
        return self.returncode

    def ended(self, timeout: float) -> Optional[int]:
        """The exit status, or None for a process still running at `timeout`, which is then
        killed: a hung worker's stderr can still be shown (communicate)."""
        try:
            return self.wait(timeout)
        except TimeoutError:
            self.kill()
            self.wait()
            return None

    def kill(self) -> None:
        self._process.kill()  # SIGKILL

    def send_signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def communicate(self, timeout: Optional[float] = None):
        """(stdout, stderr) once it has ended."""
        self.wait(timeout)
        with open(self._out) as out, open(self._err) as err:
            return out.read(), err.read()


def _hpo_main(argv):
    from hpo.cli.main import main
    return main(list(argv))


def Hpo(argv: Sequence[str], env: Optional[Dict[str, str]] = None) -> Process:
    """`hpo ARGV` (a process as `python -m hpo.cli.main ARGV` is, but warm)."""
    return Process(_hpo_main, list(argv), env=env)
