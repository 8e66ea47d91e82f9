"""Gin as the composition root, with T5X's command-line conventions.

Every run parses `base.gin` (the defaults) first, then the user's
`--gin_file`s (or `default.gin` when none is given), then the `--gin.KEY=VALUE`
bindings in order. Files are looked up in the `--gin_search_paths`, the
current directory and the built-in `configs/` directory.
"""

import os
from typing import List, Sequence

import gin

from hpo.core.errors import UserError
from hpo.core.gin_syntax import configs_dir, one_line


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
