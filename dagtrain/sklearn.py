"""``DagMLPClassifier``: a scikit-learn classifier that trains a dagtrain MLP on Dask.

    from dagtrain.sklearn import DagMLPClassifier
    clf = DagMLPClassifier(hidden=(256, 256), schedule="layerlocal", k=10, epochs=5)
    clf.fit(X, y).score(X_test, y_test)

It follows scikit-learn's conventions (``fit``, ``predict``, ``predict_proba``, ``score``,
``partial_fit``, ``get_params``/``set_params``; it works in ``cross_val_score``, ``Pipeline`` and
``GridSearchCV``) and passes ``sklearn.utils.estimator_checks.check_estimator``.

``X`` may be a numpy array (or anything scikit-learn accepts, such as a DataFrame), a
dask array or a zarr array. ``fit`` writes ``X`` and ``y`` into a scratch zarr store
under the cache directory a block of rows at a time (a dask or zarr ``X`` is never
loaded whole), trains on it with :func:`dagtrain.compile` and ``plan.run``, and deletes
it. ``predict`` on a dask array returns a lazy dask array; on a zarr array it reads a
block of rows at a time. Needs scikit-learn: ``pip install dagtrain[sklearn]``.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError("dagtrain.sklearn needs scikit-learn: pip install 'dagtrain[sklearn]'") from exc

from dagtrain.data.cache import cache_dir
from dagtrain.data.store import BLOCK_BYTES, write_dataset
from dagtrain.errors import ConfigError
from dagtrain.model.functional import Params
from dagtrain.model.mlp import MLP
from dagtrain.plan import compile  # noqa: A004
from dagtrain.result import TrainResult
from dagtrain.schedules import LayerLocal, Schedule, Sync

SCHEDULES = ("sync", "layerlocal")


def _is_lazy(X: Any) -> bool:
    """A dask or zarr array: read a block of rows at a time, never converted whole."""
    module = type(X).__module__
    return (module.startswith("dask.array") or module.startswith("zarr")) and hasattr(X, "shape")


def _row_blocks(X: Any, n_features: int) -> Iterator[np.ndarray]:
    """Rows of a zarr array, a block at a time, as numpy arrays."""
    rows = max(1, BLOCK_BYTES // (max(n_features, 1) * 8))
    for lo in range(0, int(X.shape[0]), rows):
        yield np.asarray(X[lo : lo + rows])


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


class DagMLPClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """A multilayer perceptron classifier trained as a dagtrain task graph on Dask.

    Parameters
    ----------
    hidden : tuple of int, default=(256, 256)
        Sizes of the hidden layers; the input and output sizes come from the data.
        ``()`` is a linear (softmax regression) model.
    activation : {"relu", "tanh", "sigmoid"}, default="relu"
        Activation of the hidden layers. The output layer is a softmax.
    schedule : {"layerlocal", "sync"} or a dagtrain Schedule, default="layerlocal"
        ``"sync"`` is exact minibatch SGD. ``"layerlocal"`` trains each layer in its own
        chain against a snapshot of the others, merged every ``k`` steps (see
        :class:`dagtrain.LayerLocal`). A schedule object, such as
        ``dagtrain.LocalSGD(k=50, replicas=2)``, is used as given.
    k : int, default=10
        LayerLocal's communication interval: steps between syncs. When a call trains fewer
        steps than ``k``, it syncs once at its end (k is lowered to the number of steps).
    data_mode : {"sharded", "shared"}, default="sharded"
        LayerLocal's data mode: the batches are dealt out among the chains, or every chain
        sees every batch. On MNIST, sharded reached the same or better accuracy than shared in
        about half the time (1 or 2 epochs, 6,000 to 50,000 samples, two seeds).
    batch_size : int, default=128
        Samples per step (at most the number of samples).
    epochs : int, default=10
        Passes over the data in ``fit``. ``partial_fit`` makes one pass per call.
    lr : float, default=0.05
        Learning rate of SGD.
    momentum : float, default=0.9
        Momentum of SGD, in [0, 1).
    random_state : int, RandomState instance or None, default=None
        Seeds the initial weights and the batch order. An int gives the same model on every
        run and on every Dask scheduler.
    scheduler : str, distributed.Client or None, default=None
        Where to run: None or ``"threads"`` (Dask's threaded scheduler), ``"sync"``,
        ``"processes"``, a ``distributed.Client`` or a ``"tcp://host:port"`` address. The
        scratch store is written under the cache directory, which a cluster's workers must
        be able to read.
    on_divergence : {"raise", "rollback"}, default="raise"
        What a NaN or inf in the weights or loss does: raise
        :class:`dagtrain.DivergenceError`, or rerun from the last sync at half the lr.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels.
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of shape (n_features,)
        Names of the features, when ``X`` had string column names (a DataFrame).
    coefs_ : list of ndarray
        ``coefs_[i]`` is the weight matrix of layer ``i + 1``, shape (n_in, n_out).
    intercepts_ : list of ndarray
        ``intercepts_[i]`` is the bias vector of layer ``i + 1``.
    n_iter_ : int
        Epochs trained so far.
    t_ : int
        Training samples processed so far.
    loss_curve_ : list of float
        Mean training loss of each epoch.
    result_ : dagtrain.TrainResult
        The last run: history, timings, the Dask task records (``result_.timeline(path)``).
    """

    def __init__(
        self,
        hidden: Sequence[int] = (256, 256),
        *,
        activation: str = "relu",
        schedule: str | Schedule = "layerlocal",
        k: int = 10,
        data_mode: str = "sharded",
        batch_size: int = 128,
        epochs: int = 10,
        lr: float = 0.05,
        momentum: float = 0.9,
        random_state: int | np.random.RandomState | None = None,
        scheduler: Any = None,
        on_divergence: str = "raise",
    ) -> None:
        self.hidden = hidden
        self.activation = activation
        self.schedule = schedule
        self.k = k
        self.data_mode = data_mode
        self.batch_size = batch_size
        self.epochs = epochs
        self.lr = lr
        self.momentum = momentum
        self.random_state = random_state
        self.scheduler = scheduler
        self.on_divergence = on_divergence

    # ----------------------------------------------------------------------------------- fitting

    def fit(self, X: Any, y: Any) -> DagMLPClassifier:
        """Train a new model on ``X`` (n_samples, n_features) and labels ``y`` for ``epochs`` epochs.

        Returns the fitted estimator. Any previous fit is discarded.
        """
        self._check_params()
        X, y = self._validate(X, y, reset=True)
        classes, y_index = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"DagMLPClassifier needs samples of at least 2 classes to learn from; y has only 1 class: "
                             f"{classes[0]!r}")
        self.classes_ = classes
        self._start()
        self._train(X, y_index, epochs=int(self.epochs), init=None)
        return self

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> DagMLPClassifier:
        """One pass over ``X``, ``y``, continuing from the current weights and momentum.

        ``classes`` (every label that will ever be seen) is required on the first call, as in
        scikit-learn's ``SGDClassifier``; later calls may omit it.
        """
        first = not hasattr(self, "classes_")
        if first:
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit: every label that will be "
                                 "seen, e.g. partial_fit(X, y, classes=np.arange(10))")
            self._check_params()
            X, y = self._validate(X, y, reset=True)
            all_classes = np.unique(column_or_1d(classes))
            check_classification_targets(all_classes)
            if len(all_classes) < 2:
                raise ValueError(f"classes={list(all_classes)} must hold at least 2 classes")
            self.classes_ = all_classes
            self._start()
        else:
            if classes is not None and not np.array_equal(np.unique(column_or_1d(classes)), self.classes_):
                raise ValueError(f"classes={list(np.unique(classes))} differs from the first call's {list(self.classes_)}")
            X, y = self._validate(X, y, reset=False)
        unknown = np.setdiff1d(y, self.classes_)
        if len(unknown):
            raise ValueError(f"y holds labels {list(unknown[:5])} that are not in classes_ {list(self.classes_)}")
        self._train(X, np.searchsorted(self.classes_, y), epochs=1, init=None if first else self.result_)
        return self

    def _start(self) -> None:
        """Forget any previous training: a new seed (from random_state), no epochs, no samples, no losses."""
        self._seed = int(check_random_state(self.random_state).randint(2**31 - 1))
        self.n_iter_ = 0
        self.t_ = 0
        self.loss_curve_: list[float] = []

    def _check_params(self) -> None:
        """Check the hyperparameters (here, not in __init__, as scikit-learn asks), naming the bad one."""
        if not isinstance(self.schedule, Schedule) and self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule = {self.schedule!r} is not a schedule; use 'layerlocal', 'sync' or a dagtrain "
                              "Schedule object such as dagtrain.LocalSGD(k=50, replicas=2)")
        for name in ("k", "batch_size", "epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ConfigError(f"{name} = {value!r} must be a positive integer")
        if isinstance(self.hidden, (str, bytes)) or not isinstance(self.hidden, Sequence):
            raise ConfigError(f"hidden = {self.hidden!r} must be a tuple of layer sizes, e.g. hidden=(256, 256)")

    def _validate(self, X: Any, y: Any, *, reset: bool) -> tuple[Any, np.ndarray]:
        """Check ``X`` and ``y`` and record (or check) the number of features. A lazy ``X`` stays lazy."""
        if not _is_lazy(X):
            X, y = validate_data(self, X, y, reset=reset, dtype=np.float32)
            check_classification_targets(y)
            return X, np.asarray(y)
        if len(X.shape) != 2:
            raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {tuple(X.shape)}")
        compute = getattr(y, "compute", None)
        y = column_or_1d(np.asarray(compute() if callable(compute) else y), warn=True)
        check_classification_targets(y)
        if len(y) != X.shape[0]:
            raise ValueError(f"X has {X.shape[0]} samples but y has {len(y)}; they must match")
        if X.shape[0] == 0:
            raise ValueError("X has 0 samples; at least 1 is required")
        self._check_features(int(X.shape[1]), reset=reset)
        return X, y

    def _check_features(self, n_features: int, *, reset: bool) -> None:
        if reset:
            self.n_features_in_ = n_features
            if hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
        elif n_features != self.n_features_in_:
            raise ValueError(f"X has {n_features} features, but DagMLPClassifier is expecting {self.n_features_in_} "
                             "features as input")

    def _sizes(self) -> list[int]:
        return [int(self.n_features_in_), *[int(h) for h in self.hidden], len(self.classes_)]

    def _schedule(self, steps: int) -> Schedule:
        if isinstance(self.schedule, Schedule):
            return self.schedule
        if self.schedule == "sync":
            return Sync()
        return LayerLocal(k=min(int(self.k), steps), data=self.data_mode)

    def _train(self, X: Any, y_index: np.ndarray, *, epochs: int, init: TrainResult | None) -> None:
        """Write X and y to a scratch store, compile, run; keep the weights and the run's record."""
        n = len(y_index)
        batch = min(int(self.batch_size), n)
        steps = epochs * math.ceil(n / batch)
        model = MLP(self._sizes(), activation=self.activation, loss="softmax_xent", seed=self._seed)
        scratch = cache_dir() / "scratch"
        scratch.mkdir(exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="fit-", dir=scratch))
        try:
            data = write_dataset(tmp / "train.zarr", {"train": (X, y_index)}, chunk_size=batch,
                                 n_classes=len(self.classes_), source="DagMLPClassifier.fit")
            plan = compile(model, data, self._schedule(steps), batch_size=batch, epochs=epochs, lr=self.lr,
                           momentum=self.momentum, seed=self._seed + self.n_iter_)
            result = plan.run(self.scheduler, init=init, on_divergence=self.on_divergence)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.result_ = result
        self.coefs_ = [np.asarray(p.W) for p in result.weights]
        self.intercepts_ = [np.asarray(p.b) for p in result.weights]
        self.n_iter_ += epochs
        self.t_ += result.samples
        self.loss_curve_ = [*self.loss_curve_, *(row["train_loss"] for row in result.history
                                                 if row["epoch"] == int(row["epoch"]))]

    # ---------------------------------------------------------------------------------- predicting

    def _proba_block(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities of a block of rows, in float64 (so they do not depend on how rows are batched)."""
        model = MLP(self._sizes(), activation=self.activation, dtype="float64")
        params = [Params(W.astype(np.float64), b.astype(np.float64)) for W, b in zip(self.coefs_, self.intercepts_,
                                                                                      strict=True)]
        return _softmax(model.logits(params, X))

    def _predict_block(self, X: np.ndarray) -> np.ndarray:
        out: np.ndarray = self.classes_[self._proba_block(X).argmax(axis=1)]
        return out

    def _lazy_input(self, X: Any) -> Any:
        """A dask or zarr X checked against the fitted features; dask is rechunked to whole rows."""
        if len(X.shape) != 2:
            raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {tuple(X.shape)}")
        self._check_features(int(X.shape[1]), reset=False)
        if type(X).__module__.startswith("dask.array") and X.numblocks[1] > 1:
            X = X.rechunk({1: -1})
        return X

    def predict_proba(self, X: Any) -> Any:
        """Probability of each class (columns in the order of ``classes_``) for each row of ``X``.

        A dask ``X`` gives a lazy dask array; anything else a numpy array.
        """
        check_is_fitted(self)
        if _is_lazy(X):
            X = self._lazy_input(X)
            if type(X).__module__.startswith("dask.array"):
                return X.map_blocks(self._proba_block, dtype=np.float64, chunks=(X.chunks[0], (len(self.classes_),)))
            return np.concatenate([self._proba_block(b) for b in _row_blocks(X, self.n_features_in_)])
        return self._proba_block(validate_data(self, X, reset=False, dtype=np.float64))

    def predict(self, X: Any) -> Any:
        """The most likely class of each row of ``X`` (a lazy dask array for a dask ``X``)."""
        check_is_fitted(self)
        if _is_lazy(X):
            X = self._lazy_input(X)
            if type(X).__module__.startswith("dask.array"):
                return X.map_blocks(self._predict_block, drop_axis=1, dtype=self.classes_.dtype)
            return np.concatenate([self._predict_block(b) for b in _row_blocks(X, self.n_features_in_)])
        return self._predict_block(validate_data(self, X, reset=False, dtype=np.float64))

    def predict_log_proba(self, X: Any) -> Any:
        """Log of :meth:`predict_proba`."""
        proba = self.predict_proba(X)
        return np.log(proba) if isinstance(proba, np.ndarray) else proba.map_blocks(np.log)

