"""Data: seqio tasks (translation, T5 span corruption, GLUE), the corpora and vocabularies
hpo generates, and the batches engines read. Imports core and scoring."""
