"""Write your own graph pass: freeze a layer, under any schedule.

    python examples/custom_pass.py [--layer 1] [--epochs 1] [--max-steps N]

A schedule is a list of passes over the task graph, and ``extra=((after, pass),)`` adds
yours. ``freeze(layer)`` makes a pass that removes that layer's update ops and points
everything that read an updated version at the version the update started from. Then it
removes the ops whose results no longer reach an output (the layer's backward ops, and so
on). The validator runs after the pass, as after every other, so a broken rewrite fails
here with the rule it broke. The run then shows the layer unchanged, bit for bit, while
the others train.
"""

from __future__ import annotations

import argparse

import networkx as nx
import numpy as np

import dagtrain as dt
from dagtrain.graph.ir import producer_of, repoint


def freeze(layer: int) -> dt.schedules.Pass:
    """A pass that stops ``layer`` from training: its updates go, and their readers read the previous version."""

    def rewrite(g: nx.DiGraph, model: dt.MLP) -> nx.DiGraph:
        updates = sorted((k for k, d in g.nodes(data=True) if d["kind"] == "update" and d["layer"] == layer),
                         key=lambda k: g.nodes[k]["step"])
        for update in updates:  # in step order, so a chain of versions collapses onto the window's input
            for _, reader, edge in list(g.out_edges(update, data=True)):
                for field, port in edge["bind"]:  # "params" or "velocity": read what the update read
                    source, source_field = producer_of(g, update, field)
                    repoint(g, reader, port, source, source_field, made_by=rewrite.__name__)
            g.remove_node(update)
        # Dead-op elimination: keep only what reaches an output or an evaluation.
        sinks = [k for k, d in g.nodes(data=True) if d["kind"] in ("output", "eval")]
        live = set(sinks).union(*(nx.ancestors(g, k) for k in sinks))
        g.remove_nodes_from([k for k in list(g) if k not in live])
        return g

    rewrite.__name__ = f"freeze_L{layer}"
    return rewrite


def main() -> None:
    """Freeze a layer under Sync and under LayerLocal; show the passes, the graph before and after, the weights."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--layer", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=None)
    args = parser.parse_args()
    data = dt.datasets.mnist()
    model = dt.MLP([784, 256, 256, 10], activation="relu", loss="softmax_xent", seed=0)
    frozen = freeze(args.layer)
    for schedule in (dt.Sync(extra=(("build_exact", frozen),)),
                     dt.LayerLocal(10, extra=(("read_stale_snapshots", frozen),))):
        plan = dt.compile(model, data, schedule, batch_size=128, epochs=args.epochs, lr=0.05, momentum=0.9,
                          max_steps=args.max_steps)
        print(f"{schedule}\n  passes: {' -> '.join(plan.passes)}")
        before, after = plan.graph_before(frozen.__name__), plan.graph(0)
        print(f"  window 0: {before.number_of_nodes()} ops before {frozen.__name__}, {after.number_of_nodes()} after")
        result = plan.run()
        start = model.init_params()
        for i, (p, q) in enumerate(zip(result.weights, start, strict=True), start=1):
            state = "unchanged" if np.array_equal(p.W, q.W) and np.array_equal(p.b, q.b) else "trained"
            print(f"  layer {i}: {state}")
        print(f"  test accuracy {result.test_accuracy:.4f}")


if __name__ == "__main__":
    main()
