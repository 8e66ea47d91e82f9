"""Metrics of predictions: BLEU and chrF (sacrebleu), GLUE's metrics and formats.
Imports core."""
