"""The interval experiment from Python: LayerLocal accuracy and time against k on real MNIST.

    python examples/interval_sweep.py [--preset seed|deep] [--max-steps N] [--out results/seed]

Prints the table and writes table.md, table.csv, settings.json and plot.png.
"""

from __future__ import annotations

import argparse

import dagtrain as dt
from dagtrain.experiments.report import markdown_table


def main() -> None:
    """Run the sweep, print its table, save its files."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="seed", choices=sorted(dt.experiments.PRESETS))
    parser.add_argument("--intervals", default="1000,100,10,5,1")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    data = dt.datasets.mnist()
    result = dt.experiments.sweep(data, preset=args.preset, intervals=[int(k) for k in args.intervals.split(",")],
                                  max_steps=args.max_steps, progress=print)
    print(markdown_table(result))
    paths = dt.experiments.save(result, args.out or f"results/{args.preset}",
                                command="python examples/interval_sweep.py " + " ".join(
                                    f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None))
    print("wrote", ", ".join(str(p) for p in paths.values()))


if __name__ == "__main__":
    main()
