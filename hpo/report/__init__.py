"""The report: records (record_sets) -> rows (row_groups, run_config, bleu_rows, glue_rows,
stats, significance) -> verdicts (claims, claim_stats, claim_text, equal_compute) -> formats
and plots (table, formats, plots). Imports core, scoring and flow; never an engine or strategy."""
