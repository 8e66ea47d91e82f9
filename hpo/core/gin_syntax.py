"""The command line's gin conventions that need no configurable: where the built-in gin files
are, and how `--gin.KEY=VALUE` becomes a binding. Importable from a bare checkout (the GPU
benchmark's machine has no installed hpo, so no `hpo.cli`). Importing it also quiets gin's
log line for every search path a file is not in."""

import ast
import logging
import os
import re


# A path, word or URL (user:password@host); anything else, and a leading @ (a gin
# reference) or % (a macro), must be gin syntax.
_BARE_WORD = re.compile(r"[\w./~:+-][\w./~:+@%-]*")
# The checkout: hpo/core/ is two folders below it.
CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")


class _QuietSearch(logging.Filter):
    # gin logs an error for every search path a file is not in; the file is
    # still found in the next one, and a missing file raises anyway.
    def filter(self, record):
        return not record.getMessage().startswith("Path not found")


logging.getLogger().addFilter(_QuietSearch())


def configs_dir() -> str:
    """The built-in gin files: `configs/` of the checkout, or `hpo/configs` when installed."""
    if os.path.isfile(os.path.join(CONFIGS_DIR, "base.gin")):
        return CONFIGS_DIR
    import hpo.configs  # the installed copy (package-dir maps configs/ there)
    return os.path.dirname(hpo.configs.__file__)


def gin_binding(key: str, value: str) -> str:
    """`--gin.KEY=VALUE` as a gin binding. A VALUE that is no gin literal or
    reference (e.g. a bare path) is taken as a string, so `--gin.MODEL_DIR=/tmp/x`
    works as well as T5X's quoted `--gin.MODEL_DIR="'/tmp/x'"`."""
    text = value.strip()
    if _BARE_WORD.fullmatch(text) and text not in ("True", "False", "None"):
        try:
            ast.literal_eval(text)
        except (ValueError, SyntaxError):
            text = repr(text)
    return f"{key} = {text}"


def one_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return " ".join(lines[:2]) if lines else type(error).__name__
