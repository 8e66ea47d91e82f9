"""What every stage uses: one-line user errors, files on any filesystem, several hosts,
stops (preemption, fault injection), progress and quiet output. Imports nothing of hpo."""
