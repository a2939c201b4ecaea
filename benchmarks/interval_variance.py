"""How much LayerLocal's final accuracy depends on the seed, at the seed presentation's scale.

    python -m benchmarks.interval_variance [--seeds 0,1,2,3,4] [--intervals 1000,100]

For each k, data mode and seed (the seed fixes the initial weights and the batch order),
trains 784-100-10 sigmoid / logistic outputs, single-sample steps, lr 0.1, one epoch, with
the plain-loop LayerLocal (bitwise what the compiled graph computes), and records the
test accuracy after the last sync and after each of the last five syncs. Prints median,
min and max over seeds, and the swing within the last five syncs of each run.
"""

from __future__ import annotations

import argparse
import statistics

import dagtrain as dt
from benchmarks.common import machine_line
from dagtrain.execute.ops import evaluate
from dagtrain.reference import train_reference_layerlocal


def last_syncs_accuracy(model: dt.MLP, data: dt.Dataset, schedule: dt.LayerLocal, n_syncs: int) -> list[float]:
    """Test accuracy (%) of the merged weights after each of the last ``n_syncs`` syncs of one epoch."""
    n_steps = data.size("train")
    found: list[float] = []

    def on_sync(step: int, params: list[dt.Params]) -> None:
        if step > n_steps - n_syncs * schedule.k:
            found.append(100 * evaluate(model, params, data, "test")["accuracy"])

    train_reference_layerlocal(model, data, schedule, batch_size=1, lr=0.1, on_sync=on_sync)
    return found


def main() -> None:
    """Run every (k, mode, seed) and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--intervals", default="1000,100")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    data = dt.datasets.mnist()
    print(f"# LayerLocal accuracy over seeds: 784-100-10 sigmoid, batch 1, lr 0.1, 1 epoch\n\n{machine_line()}\n")
    print("| k | data | final acc % median | min | max | seeds | largest swing over the last 5 syncs (points) |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for k in (int(v) for v in args.intervals.split(",")):
        for mode in ("shared", "sharded"):
            finals, swings = [], []
            for seed in seeds:
                model = dt.MLP([784, 100, 10], activation="sigmoid", loss="sigmoid_bce", seed=seed)
                last = last_syncs_accuracy(model, data, dt.LayerLocal(k, mode), n_syncs=5)
                finals.append(last[-1])
                swings.append(max(last) - min(last))
            print(f"| {k} | {mode} | {statistics.median(finals):.2f} | {min(finals):.2f} | {max(finals):.2f} | "
                  f"{len(seeds)} | {max(swings):.1f} |", flush=True)


if __name__ == "__main__":
    main()
