"""Placement: which worker of a distributed cluster runs which task.

Layer chain ``c`` stays on one worker, so its weights and optimizer state stay resident
there and only the sync moves weights. Chains are spread by the cost model's estimate of
their work (heaviest first, to the least-loaded worker), or round-robin without one. The
tasks without a chain (syncs, evaluation, Sync's segments) go wherever Dask puts them.

The restrictions travel as annotations of a ``HighLevelGraph`` (one layer per task), which
the scheduler turns into ``workers=[addr], allow_other_workers=False`` for each chain task
(strict: loose restrictions let work stealing move chain tasks, measured). If a pinned
worker dies mid-window, :func:`dagtrain.execute.run.run_pinned` resubmits the window
pinned to the workers alive.
"""

from __future__ import annotations

import re
from typing import Any

from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

from dagtrain.errors import ConfigError
from dagtrain.execute.lanes import longest_first

CHAIN_KEY = re.compile(r"chain(\d+)-")


def chain_of_key(key: str) -> int | None:
    """The layer chain a Dask key belongs to (``chain2-3-w0`` -> 2), or None."""
    m = CHAIN_KEY.match(key)
    return int(m.group(1)) if m else None


def chain_workers(workers: list[str], n_chains: int, costs: dict[int, float] | None = None) -> dict[int, str]:
    """Chain -> worker address. Without ``costs``: round-robin over the sorted workers. With the cost model's
    estimate of each chain's work: the heaviest chain first, each to the least-loaded worker (balances the
    unequal chains: chain 1 runs the whole backward pass, chain L almost none of it).
    """
    if not workers:
        raise ConfigError("the cluster has no workers to place the layer chains on; start at least one "
                          "(e.g. `dask worker tcp://SCHEDULER`) or pass scheduler='threads'")
    ordered = sorted(workers)
    if not costs:
        return {c: ordered[(c - 1) % len(ordered)] for c in range(1, n_chains + 1)}
    return longest_first({c: costs.get(c, 0.0) for c in range(1, n_chains + 1)}, ordered)


def placed_graph(dsk: dict[str, Any], placement: dict[int, str]) -> HighLevelGraph | dict[str, Any]:
    """``dsk`` as a HighLevelGraph whose chain tasks are restricted to their workers (``dsk`` if nothing to place).

    One layer per task: layer dependencies are then the task dependencies, so they stay acyclic.
    """
    if not any(chain_of_key(key) for key in dsk):
        return dsk
    layers: dict[str, Any] = {}
    dependencies: dict[str, set[str]] = {}
    for key, task in dsk.items():
        chain = chain_of_key(key)
        annotations = None if chain is None else {"workers": [placement[chain]], "allow_other_workers": False}
        layers[key] = MaterializedLayer({key: task}, annotations=annotations)
        dependencies[key] = {d for d in getattr(task, "dependencies", ()) if d in dsk}
    return HighLevelGraph(layers, dependencies)
