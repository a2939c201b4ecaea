"""Look at the compiled graph before anything runs: ops, edges, why one op waits for another.

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


if __name__ == "__main__":
    main()
