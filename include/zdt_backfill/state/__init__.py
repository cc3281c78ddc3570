"""The run's state in the target database: the state machine and lease (:mod:`.runstate`) and
the partition checkpoints (:mod:`.checkpoint`)."""
