"""DagMLPClassifier: scikit-learn's own estimator checks, model selection, numpy/dask/zarr inputs, partial_fit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pytest
import zarr
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import dagtrain as dt
from dagtrain.sklearn import DagMLPClassifier
from tests.conftest import make_blobs


@parametrize_with_checks([DagMLPClassifier(), DagMLPClassifier(hidden=(16,), schedule="sync", scheduler="sync")])
def test_scikit_learn_estimator_checks(estimator: Any, check: Any) -> None:
    """Every check of sklearn.utils.estimator_checks passes; none is skipped on purpose."""
    check(estimator)


@pytest.fixture(scope="module")
def problem() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x, y = make_blobs(700, 10, 4, seed=3)
    return x[:500], y[:500], x[500:], y[500:]


def test_fit_predict_score(problem: tuple[np.ndarray, ...]) -> None:
    x, y, xt, yt = problem
    clf = DagMLPClassifier(hidden=(32, 32), k=5, batch_size=32, epochs=5, random_state=0).fit(x, y)
    assert clf.score(xt, yt) > 0.9
    proba = clf.predict_proba(xt)
    assert proba.shape == (200, 4) and np.allclose(proba.sum(axis=1), 1)
    assert np.array_equal(clf.predict(xt), clf.classes_[proba.argmax(axis=1)])
    assert [W.shape for W in clf.coefs_] == [(10, 32), (32, 32), (32, 4)]
    assert clf.n_iter_ == 5 and clf.t_ == 5 * 500 and len(clf.loss_curve_) == 5
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]
    assert clf.result_.info["schedule"] == "LayerLocal(k=5, data='sharded')"


def test_string_labels_and_binary(problem: tuple[np.ndarray, ...]) -> None:
    x, y, xt, yt = problem
    names = np.array(["cat", "dog", "eel", "fox"])
    clf = DagMLPClassifier(hidden=(16,), epochs=5, batch_size=32, random_state=0).fit(x, names[y])
    assert list(clf.classes_) == ["cat", "dog", "eel", "fox"] and clf.score(xt, names[yt]) > 0.9
    binary = DagMLPClassifier(hidden=(16,), epochs=3, random_state=0).fit(x, y % 2 == 0)
    assert binary.predict_proba(xt).shape == (200, 2) and set(binary.predict(xt)) <= {True, False}


def test_same_random_state_same_model_on_every_input_kind(problem: tuple[np.ndarray, ...], tmp_path: Path) -> None:
    """A numpy, dask or zarr X trains bitwise the same model; predict on dask stays lazy and agrees."""
    x, y, xt, _ = problem
    kwargs: dict[str, Any] = {"hidden": (16,), "k": 4, "epochs": 2, "batch_size": 50, "random_state": 7}
    ref = DagMLPClassifier(**kwargs).fit(x, y)
    store = zarr.create_array(str(tmp_path / "x.zarr"), shape=x.shape, dtype="float32", chunks=(64, 10))
    store[...] = x  # type: ignore[index]
    for X, Y in ((da.from_array(x, chunks=(128, 5)), da.from_array(y, chunks=100)), (store, y)):
        clf = DagMLPClassifier(**kwargs).fit(X, Y)
        for a, b in zip(clf.coefs_ + clf.intercepts_, ref.coefs_ + ref.intercepts_, strict=True):
            assert np.array_equal(a, b)
    lazy = ref.predict(da.from_array(xt, chunks=(64, 10)))
    assert isinstance(lazy, da.Array)
    assert np.array_equal(lazy.compute(), ref.predict(xt))
    assert np.allclose(ref.predict_proba(da.from_array(xt, chunks=(64, 3))).compute(), ref.predict_proba(xt))
    zt = zarr.create_array(str(tmp_path / "xt.zarr"), shape=xt.shape, dtype="float32", chunks=(64, 10))
    zt[...] = xt  # type: ignore[index]
    assert np.array_equal(ref.predict(zt), ref.predict(xt))
    with pytest.raises(ValueError, match="X has 3 features, but DagMLPClassifier is expecting 10"):
        ref.predict(da.zeros((4, 3)))


def test_cross_val_score_and_grid_search(problem: tuple[np.ndarray, ...]) -> None:
    x, y, xt, yt = problem
    scores = cross_val_score(DagMLPClassifier(hidden=(16,), epochs=3, batch_size=32, random_state=0), x, y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.85
    pipe = make_pipeline(StandardScaler(), DagMLPClassifier(hidden=(16,), epochs=3, batch_size=32, random_state=0))
    grid = GridSearchCV(pipe, {"dagmlpclassifier__schedule": ["sync", "layerlocal"], "dagmlpclassifier__k": [1, 8]},
                        cv=2).fit(x, y)
    assert len(grid.cv_results_["params"]) == 4
    assert grid.best_params_["dagmlpclassifier__schedule"] in ("sync", "layerlocal")
    assert grid.score(xt, yt) > 0.9


def test_k_1_layerlocal_is_sync(problem: tuple[np.ndarray, ...]) -> None:
    """The estimator inherits the library's exactness: LayerLocal(k=1) shared trains exactly Sync's model."""
    x, y, _, _ = problem
    kwargs: dict[str, Any] = {"hidden": (16, 16), "epochs": 2, "batch_size": 32, "random_state": 1}
    a = DagMLPClassifier(schedule="sync", **kwargs).fit(x, y)
    b = DagMLPClassifier(schedule="layerlocal", k=1, data_mode="shared", **kwargs).fit(x, y)
    assert all(np.array_equal(p, q) for p, q in zip(a.coefs_, b.coefs_, strict=True))


def test_partial_fit(problem: tuple[np.ndarray, ...]) -> None:
    x, y, xt, yt = problem
    clf = DagMLPClassifier(hidden=(16,), batch_size=32, random_state=0)
    with pytest.raises(ValueError, match="classes must be passed on the first call to partial_fit"):
        clf.partial_fit(x, y)
    clf.partial_fit(x[:250], y[:250], classes=np.arange(4))
    first = clf.score(xt, yt)
    W = clf.coefs_[0].copy()
    for _ in range(3):
        clf.partial_fit(x, y)
    assert clf.n_iter_ == 4 and clf.t_ == 250 + 3 * 500
    assert not np.array_equal(W, clf.coefs_[0]) and clf.score(xt, yt) >= first and clf.score(xt, yt) > 0.9
    with pytest.raises(ValueError, match=r"y holds labels \[np.int64\(9\)\] that are not in classes_"):
        clf.partial_fit(x[:10], np.full(10, 9))
    with pytest.raises(ValueError, match="X has 3 features, but DagMLPClassifier is expecting 10"):
        clf.partial_fit(x[:10, :3], y[:10])
    # Fewer steps than k: the call syncs once, at its end.
    few = DagMLPClassifier(hidden=(8,), k=50, batch_size=32, random_state=0).partial_fit(x[:64], y[:64], classes=range(4))
    assert few.result_.info["schedule"] == "LayerLocal(k=2, data='sharded')"


@pytest.mark.parametrize(("params", "message"), [
    ({"schedule": "fast"}, "schedule = 'fast' is not a schedule; use 'layerlocal', 'sync' or a dagtrain Schedule"),
    ({"k": 0}, "k = 0 must be a positive integer"),
    ({"epochs": 2.5}, "epochs = 2.5 must be a positive integer"),
    ({"hidden": "256"}, r"hidden = '256' must be a tuple of layer sizes, e.g. hidden=\(256, 256\)"),
    ({"hidden": (0,)}, r"MLP sizes\[1\] = 0 must be a positive integer"),
    ({"activation": "gelu"}, "gelu"),
    ({"data_mode": "split"}, "LayerLocal data = 'split' is not a data mode"),
    ({"lr": -1.0}, "lr = -1.0 must be a positive finite number"),
])
def test_bad_hyperparameters_are_named_at_fit(problem: tuple[np.ndarray, ...], params: dict[str, Any],
                                              message: str) -> None:
    x, y, _, _ = problem
    clf = DagMLPClassifier(**params)  # scikit-learn's rule: __init__ only stores
    with pytest.raises(ValueError, match=message):
        clf.fit(x, y)


def test_schedule_object_and_scratch_store_cleanup(problem: tuple[np.ndarray, ...]) -> None:
    x, y, xt, yt = problem
    clf = DagMLPClassifier(hidden=(16,), schedule=dt.LocalSGD(k=4, replicas=2), epochs=3, batch_size=32,
                           random_state=0).fit(x, y)
    assert clf.result_.info["schedule"].startswith("LocalSGD(k=4, replicas=2") and clf.score(xt, yt) > 0.9
    scratch = dt.data.cache_dir() / "scratch"
    assert list(scratch.iterdir()) == []  # the store written for fit is gone
    with pytest.raises(dt.DataError, match="NaN or inf values, the first at sample 3, feature 1"):
        bad = da.from_array(x.copy(), chunks=(100, 10))
        bad[3, 1] = np.nan
        clf.fit(bad, y)
    assert list(scratch.iterdir()) == []  # also after a failed fit


@pytest.mark.cluster
def test_on_a_local_cluster_same_model(problem: tuple[np.ndarray, ...], local_cluster: Any) -> None:
    x, y, _, _ = problem
    kwargs: dict[str, Any] = {"hidden": (16, 16), "k": 4, "epochs": 2, "batch_size": 32, "random_state": 5}
    here = DagMLPClassifier(scheduler="sync", **kwargs).fit(x, y)
    there = DagMLPClassifier(scheduler=local_cluster, **kwargs).fit(x, y)
    assert there.result_.scheduler.startswith("distributed")
    assert all(np.array_equal(p, q) for p, q in zip(here.coefs_, there.coefs_, strict=True))


@pytest.mark.mnist
def test_real_mnist_accuracy(mnist_data: dt.Dataset) -> None:
    """On real MNIST (2 epochs, about 4 s) the default estimator (LayerLocal, k=10) is a good classifier."""
    x, y = mnist_data.read_split("train")
    xt, yt = mnist_data.read_split("test")
    clf = DagMLPClassifier(epochs=2, random_state=0).fit(x, y)
    assert clf.score(xt, yt) > 0.94
