"""Gin as the composition root, with T5X's command-line conventions.

Every run parses `base.gin` (the defaults) first, then the user's
`--gin_file`s (or `default.gin` when none is given), then the `--gin.KEY=VALUE`
bindings in order. Files are looked up in the `--gin_search_paths`, the
current directory and the built-in `configs/` directory.
"""

import ast
import logging
import os
import re
from typing import List, Sequence

import gin

from hpo.core.errors import UserError

# A path, word or URL (user:password@host); anything else, and a leading @ (a gin
# reference) or % (a macro), must be gin syntax.
_BARE_WORD = re.compile(r"[\w./~:+-][\w./~:+@%-]*")
CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


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


class _QuietSearch(logging.Filter):
    # gin logs an error for every search path a file is not in; the file is
    # still found in the next one, and a missing file raises anyway.
    def filter(self, record):
        return not record.getMessage().startswith("Path not found")


logging.getLogger().addFilter(_QuietSearch())


def parse(gin_files: Sequence[str], bindings: Sequence[str], search_paths: Sequence[str] = ()) -> str:
    """Parses the configuration; bad syntax, unknown names or files raise UserError."""
    import hpo.cli.configurables  # noqa: F401  (every configurable must be known before parsing)
    missing = [p for p in search_paths if "://" not in p and not os.path.isdir(p)]
    if missing:
        raise UserError(f"--gin_search_paths: no such directory: {missing[0]}")
    gin.clear_config()
    for path in [*search_paths, os.getcwd(), configs_dir()]:
        gin.add_config_file_search_path(path)
    files: List[str] = ["base.gin", *(gin_files or ["default.gin"])]
    try:
        gin.parse_config_files_and_bindings(files, list(bindings), finalize_config=False)
    except (ValueError, SyntaxError, KeyError, IOError, TypeError) as e:
        raise UserError(f"gin: {one_line(e)}") from e
    return gin.config_str()


def one_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return " ".join(lines[:2]) if lines else type(error).__name__
