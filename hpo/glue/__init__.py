"""GLUE in T5's text-to-text format: formats, data sources and metrics."""
