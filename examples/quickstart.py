"""Train 784-256-256-10 on real MNIST with exact SGD, compiled to a Dask graph.

    python examples/quickstart.py [--epochs 3] [--max-steps N]
"""

from __future__ import annotations

import argparse

import dagtrain as dt


def main() -> None:
    """Compile, show the graph summary, train, print the history."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=None)
    args = parser.parse_args()
    data = dt.datasets.mnist()
    model = dt.MLP([784, 256, 256, 10], activation="relu", loss="softmax_xent", seed=0)
    plan = dt.compile(model, data, schedule=dt.Sync(), batch_size=128, epochs=args.epochs,
                      lr=0.05, momentum=0.9, max_steps=args.max_steps)
    print(plan.summary())
    result = plan.run()
    for row in result.history:
        print(row)
    print(f"test accuracy {result.test_accuracy:.4f}, {result.samples_per_second:,.0f} samples/s")


if __name__ == "__main__":
    main()
