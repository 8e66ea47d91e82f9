"""Gin for `hpo run --backend=t5x`: the user's T5X gin files, as `python -m t5x.train` reads them.

T5X's model configs (`t5x/examples/t5/t5_1_1/*.gin`) and run configs
(`t5x/configs/runs/pretrain.gin`, ...) are found where T5X is installed;
hpo's own (`t5x/*.gin`: a run config for hpo's tasks, the optax Adafactor)
in its configs directory. Run configs `import __main__ as train_script` and
bind `train_script.train`: that is T5X's `train`, as under `t5x.train`.
"""

import os
import sys
from typing import Sequence

import gin

from hpo.core.gin_syntax import configs_dir, one_line
from hpo.core.errors import UserError

DEFAULT_FILES = ("t5x/default.gin",)


def search_paths(user_paths: Sequence[str] = ()) -> list:
    import t5x
    t5x_root = os.path.dirname(os.path.dirname(os.path.abspath(t5x.__file__)))
    return [*user_paths, os.getcwd(), configs_dir(), t5x_root]


def parse(gin_files: Sequence[str], bindings: Sequence[str], user_search_paths: Sequence[str] = ()) -> str:
    """Parses a T5X configuration; bad syntax, unknown names or files raise UserError."""
    from hpo.t5x_backend import require
    require()
    import t5x.train
    import hpo.cli.configurables  # noqa: F401  (hpo's configurables: tasks, strategies)
    # hpo's T5X-side configurables (T5xExperiment, the optax optimizer, tasks' vocabularies) and partition rules.
    from hpo.t5x_backend import data, experiment, optim  # noqa: F401
    sys.modules["__main__"].train = t5x.train.train  # what `train_script.train` names in T5X run configs
    gin.clear_config()
    for path in search_paths(user_search_paths):
        gin.add_config_file_search_path(path)
    try:
        gin.parse_config_files_and_bindings(list(gin_files or DEFAULT_FILES), list(bindings), finalize_config=False)
    except (ValueError, SyntaxError, KeyError, IOError, TypeError, ImportError, AttributeError, NameError) as e:
        raise UserError(f"gin (T5X): {one_line(e)}") from e
    return gin.config_str()
