"""T5X as a training backend (a `flow.backend.Backend`): hpo's strategies on T5X's trainer,
partitioner and checkpoints. Imports core, scoring, data, method, flow and the built-in engine's
scoring (`engine.evaluate`), none of its model, trainer or steps.

Nothing here is imported by the built-in engine; `require()` gives the
one-line error a user without T5X sees for `--backend=t5x`.
"""

from hpo.core.errors import UserError

INSTALL = ("install it with `make setup-t5x` (wheels in ../shared/wheels, or from GitHub at the pinned "
           "commits; see the README's T5X section)")


def require() -> None:
    try:
        import t5x.train  # noqa: F401
    except ImportError as e:
        raise UserError(f"--backend=t5x needs T5X, which is not installed ({e}); {INSTALL}") from None
