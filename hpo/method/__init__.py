"""The tuning method, engine-neutral: hyper-parameter specs and `Tuning` (hyper), parameter
groups and their optax rate scaling (groups), tunable optax optimizers (optim). Imports core."""
