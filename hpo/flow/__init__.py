"""What every run does around its training, on either engine: the `Backend` protocol and
`train_and_record` (backend), the record it leaves in comparison.json (records). Imports core."""
