"""dagtrain as a scikit-learn estimator: fit, score, a grid search over the interval k, dask input.

    python examples/sklearn_estimator.py [--samples 50000] [--epochs 2] [--quick]

Needs the ``sklearn`` extra (``pip install -e .[sklearn]``). ``--quick`` trains on 10,000
samples for two epochs: a first look, and what CI runs.
"""

from __future__ import annotations

import argparse
import time

import dask.array as da
from sklearn.model_selection import GridSearchCV

import dagtrain as dt
from dagtrain.sklearn import DagMLPClassifier


def main() -> None:
    """Fit and score on real MNIST, grid-search k, predict lazily from a dask array."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=50_000, help="training samples to use (MNIST has 50,000)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="10,000 samples, two epochs")
    args = parser.parse_args()
    samples, epochs = (10_000, 2) if args.quick else (args.samples, args.epochs)
    data = dt.datasets.mnist()
    x, y = data.read_split("train")
    x, y = x[:samples], y[:samples]
    x_test, y_test = data.read_split("test")

    clf = DagMLPClassifier(hidden=(256, 256), schedule="layerlocal", k=10, data_mode="sharded", epochs=epochs,
                           random_state=0)
    start = time.perf_counter()
    clf.fit(x, y)
    print(f"{clf}: test accuracy {clf.score(x_test, y_test):.4f} after {clf.n_iter_} epoch(s), "
          f"{time.perf_counter() - start:.1f} s")
    print(f"  training loss per epoch: {[round(v, 4) for v in clf.loss_curve_]}")

    # Model selection as usual: the interval k is a hyperparameter like any other.
    grid = GridSearchCV(DagMLPClassifier(hidden=(128,), epochs=epochs, random_state=0),
                        [{"schedule": ["sync"]}, {"schedule": ["layerlocal"], "k": [1, 10, 50]}], cv=3)
    grid.fit(x, y)
    for params, score in zip(grid.cv_results_["params"], grid.cv_results_["mean_test_score"], strict=True):
        print(f"  {params}: cross-validated accuracy {score:.4f}")
    print(f"best: {grid.best_params_}, test accuracy {grid.score(x_test, y_test):.4f}")

    # A dask array in, a lazy dask array out: nothing is computed until asked.
    lazy = clf.predict(da.from_array(x_test, chunks=(2_000, 784)))
    print(f"lazy predictions: {lazy!r}")
    print(f"accuracy from the dask predictions: {(lazy.compute() == y_test).mean():.4f}")


if __name__ == "__main__":
    main()
