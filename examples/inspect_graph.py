"""Look at the compiled graph before anything runs: ops, edges, why one op waits for another, predicted time.

    python examples/inspect_graph.py
"""

from __future__ import annotations

import networkx as nx
import numpy as np

import dagtrain as dt
from dagtrain.graph import inputs_of


def main() -> None:
    """Build a tiny plan on generated data and print what its graph says."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(256, 8)).astype(np.float32), rng.integers(0, 3, 256)
    data = dt.to_zarr(x, y, dt.data.cache_dir() / "examples" / "tiny.zarr", batch_size=32, overwrite=True)
    plan = dt.compile(dt.MLP([8, 16, 3], seed=0), data, batch_size=32, epochs=1)
    print(plan.summary())
    g = plan.graph(0)
    print("fwd:L2:s1 reads:", inputs_of(g, "fwd:L2:s1"))
    print("why upd:L2:s1 waits for upd:L2:s0:", " -> ".join(nx.shortest_path(g, "upd:L2:s0", "upd:L2:s1")))
    print("fwd:L1:s1 waits for upd:L2:s0?", nx.has_path(g, "upd:L2:s0", "fwd:L1:s1"))
    # Predicted wall time on two threads: an ideal machine, then a cost model measured here (the
    # model's own steps on Dask's threaded scheduler: flops rate, contention, hand-over), then a run.
    # A model this small is all hand-overs and glue; its run also pays Dask's set-up of each
    # window's graph, which no model of the tasks counts.
    local = dt.compile(dt.MLP([8, 16, 16, 3], seed=0), data, dt.LayerLocal(4), batch_size=32, epochs=1)
    ideal = local.analyze(workers=2).predicted_seconds
    measured = local.analyze(workers=2, cost=local.measure_cost(workers=2)).predicted_seconds
    local.run("threads")  # the first run builds the programs and reads the data
    ran = local.run("threads").wall_time
    print(f"LayerLocal(4) on 2 threads: ideal machine {ideal * 1e3:.2f} ms, "
          f"measured cost model {measured * 1e3:.2f} ms, ran {ran * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
