"""The cell: the rep, the executor and the backends that run containers."""
