"""The built-in Flax engine, a `flow.backend.Backend` (experiment): models, trainer, checkpoints,
decoding, the guided step, GLUE fine-tuning. Imports core, scoring, data, method and flow."""
