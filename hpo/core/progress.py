"""Rich progress bars for long loops (training, decoding, trials)."""

import contextlib
import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


class _Bar:
    def __init__(self, progress: Progress, task):
        self._progress, self._task = progress, task

    def advance(self, n: int = 1) -> None:
        self._progress.advance(self._task, n)

    def note(self, text: str) -> None:
        self._progress.update(self._task, note=text)


@contextlib.contextmanager
def progress_bar(description: str, total: int, completed: int = 0):
    """A bar on stderr; on a non-terminal it only prints when it finishes."""
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[note]}"),
                        console=console, disable=not sys.stderr.isatty())
    with progress:
        task = progress.add_task(description, total=total, completed=completed, note="")
        yield _Bar(progress, task)


def line(text: str) -> None:
    """A line on stderr, above a live progress bar if there is one."""
    console.print(text, markup=False, highlight=False, emoji=False, soft_wrap=True)
