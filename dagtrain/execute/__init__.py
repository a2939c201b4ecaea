"""Execution: fusion into tasks, lowering to Dask graphs, schedulers, the window loop."""
