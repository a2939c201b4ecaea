"""dagtrain: neural-network training compiled into an explicit task graph and run on Dask.

    import dagtrain as dt
    data = dt.datasets.mnist()
    model = dt.MLP([784, 256, 256, 10], activation="relu", loss="softmax_xent", seed=0)
    plan = dt.compile(model, data, schedule=dt.Sync(), batch_size=128, epochs=3, lr=0.05, momentum=0.9)
    print(plan.summary())
    result = plan.run()
"""

from dagtrain import datasets, experiments
from dagtrain.data import Dataset, open_dataset, to_zarr
from dagtrain.errors import (
    ConfigError,
    CorruptStoreError,
    DagtrainError,
    DataError,
    DivergenceError,
    GraphError,
    PerformanceWarning,
    StoreNotFoundError,
)
from dagtrain.execute.cluster import local_cluster
from dagtrain.model import MLP, Params
from dagtrain.plan import Plan, compile  # noqa: A004 - dagtrain.compile is the public verb
from dagtrain.result import TrainResult, load_weights
from dagtrain.schedules import Adaptive, DelayedGradient, Hybrid, LayerLocal, LocalSGD, Schedule, Sync

__version__ = "0.2.0"

__all__ = [
    "MLP",
    "Adaptive",
    "ConfigError",
    "CorruptStoreError",
    "DagtrainError",
    "DataError",
    "Dataset",
    "DelayedGradient",
    "DivergenceError",
    "GraphError",
    "Hybrid",
    "LayerLocal",
    "LocalSGD",
    "Params",
    "PerformanceWarning",
    "Plan",
    "Schedule",
    "StoreNotFoundError",
    "Sync",
    "TrainResult",
    "__version__",
    "compile",
    "datasets",
    "experiments",
    "load_weights",
    "local_cluster",
    "open_dataset",
    "to_zarr",
]
