"""The numba kernels give the numpy math's bits, on every input, and a run is the same with or without them."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import dagtrain as dt
from dagtrain.errors import ConfigError
from dagtrain.model import kernels
from dagtrain.model.functional import Params, activation_backward, dense_backward, dense_forward, softmax_xent
from tests.conftest import weights_equal

# The tests that run the kernels need numba: the fast extra, which the test extra installs. The others
# (choosing a path, falling back without numba) run anywhere.
needs_numba = pytest.mark.skipif(not kernels.AVAILABLE, reason="needs numba: pip install 'dagtrain[fast]' (in [test])")

SPECIAL = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-45, -1e-45, 3e38, -3e38], dtype=np.float32)


def bits(a: np.ndarray) -> np.ndarray:
    """The raw float32 bits, so that NaN payloads and the sign of zero count too."""
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def sprinkled(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Normal float32 values with a few NaN, infinities, signed zeros, denormals and huge values among them."""
    a = (rng.standard_normal(shape) * scale).astype(np.float32)
    spots = rng.integers(0, a.size, size=min(a.size, 6))
    a.flat[spots] = rng.choice(SPECIAL, size=len(spots))
    return a


def both(fn, *args):  # type: ignore[no-untyped-def]
    """``fn(*args)`` with the numpy code and with the kernels (fresh copies each time: the kernels work in place)."""
    with kernels.using("numpy"), np.errstate(all="ignore"):  # NaN and inf are inputs here, not accidents
        expected = fn(*[np.copy(a) if isinstance(a, np.ndarray) else a for a in args])
    with kernels.using("numba"), np.errstate(all="ignore"):
        assert kernels.enabled()
        got = fn(*[np.copy(a) if isinstance(a, np.ndarray) else a for a in args])
    return expected, got


@needs_numba
@pytest.mark.parametrize("seed", range(12))
def test_relu_forward_and_backward_give_numpys_bits(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, n_in, n_out = (int(v) for v in rng.integers(1, 300, size=3))
    x = sprinkled(rng, (n, n_in), 10.0 ** rng.integers(-3, 3))
    params = Params((rng.standard_normal((n_in, n_out)) * 0.1).astype(np.float32), sprinkled(rng, (1, n_out), 1.0)[0])
    (a_np, _), (a_nb, _) = both(dense_forward, params, x, "relu")
    assert kernels.fits(a_np, params.b)  # the shapes the kernel takes, so the numba run above used it
    assert np.array_equal(bits(a_np), bits(a_nb))
    grad_a = sprinkled(rng, (n, n_out), 1.0)
    dz_np, dz_nb = both(activation_backward, a_np, grad_a, "relu")
    assert np.array_equal(bits(dz_np), bits(dz_nb))
    (g_np, gx_np), (g_nb, gx_nb) = both(dense_backward, params, (x, a_np), grad_a, "relu")
    assert all(np.array_equal(bits(p), bits(q)) for p, q in [(g_np.W, g_nb.W), (g_np.b, g_nb.b), (gx_np, gx_nb)])


@needs_numba
@pytest.mark.parametrize("seed", range(12))
def test_softmax_cross_entropy_gives_numpys_bits(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n, classes = int(rng.integers(1, 200)), int(rng.integers(1, kernels.MAX_CLASSES + 1))
    logits = (rng.standard_normal((n, classes)) * 10.0 ** rng.integers(-2, 3)).astype(np.float32)
    for dtype in (np.int32, np.int64):
        labels = rng.integers(0, classes, size=n).astype(dtype)
        (loss_np, grad_np), (loss_nb, grad_nb) = both(softmax_xent, logits, labels)
        assert np.array_equal(bits(grad_np), bits(grad_nb))
        assert loss_np == loss_nb


@needs_numba
def test_softmax_with_nan_and_infinite_logits_gives_numpys_bits() -> None:
    rng = np.random.default_rng(7)
    logits = sprinkled(rng, (64, 10), 5.0)
    logits[3, :] = np.nan  # a whole row of NaN, a row with +inf, a row with -inf
    logits[5, 2], logits[9, 0] = np.inf, -np.inf
    labels = rng.integers(0, 10, size=64).astype(np.int32)
    (loss_np, grad_np), (loss_nb, grad_nb) = both(softmax_xent, logits, labels)
    assert np.array_equal(bits(grad_np), bits(grad_nb))
    assert np.isnan(loss_np) and np.isnan(loss_nb)


@needs_numba
def test_what_the_kernels_do_not_take_runs_the_numpy_code() -> None:
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((8, kernels.MAX_CLASSES + 1)).astype(np.float32)
    labels = rng.integers(0, logits.shape[1], size=8)
    with kernels.using("numba"):
        assert not kernels.fits(logits.astype(np.float64))  # float64
        assert not kernels.fits(logits[:, ::2])  # not contiguous
        assert not kernels.are_labels(labels, logits)  # more classes than one block of numpy's pairwise sum
        assert not kernels.are_labels(list(labels), logits[:, :10])  # not an array
        assert not kernels.are_labels(labels.astype(np.float32), logits[:, :10])  # not integers
        loss, grad = softmax_xent(logits, labels)  # still right: numpy computes it
    with kernels.using("numpy"):
        assert (loss, grad.tobytes()) == (lambda r: (r[0], r[1].tobytes()))(softmax_xent(logits, labels))


@needs_numba
@pytest.mark.parametrize("choice", ["numpy", "numba"])
def test_a_label_out_of_range_is_an_index_error_either_way(choice: str) -> None:
    logits = np.zeros((4, 3), dtype=np.float32)
    with kernels.using(choice), pytest.raises(IndexError):
        softmax_xent(logits, np.array([0, 1, 3, 2], dtype=np.int32))


@needs_numba
def test_the_environment_chooses_the_path(monkeypatch: pytest.MonkeyPatch) -> None:
    for choice in kernels.CHOICES:
        monkeypatch.setenv(kernels.KERNELS_ENV, choice)
        assert kernels.environment_choice() == choice
    monkeypatch.setenv(kernels.KERNELS_ENV, "fortran")
    with pytest.raises(ConfigError, match=r"DAGTRAIN_KERNELS='fortran' is not a choice; use one of auto, numba, numpy"):
        kernels.environment_choice()
    with pytest.raises(ConfigError, match="'gpu' is not a choice"):
        kernels.using("gpu").__enter__()
    with kernels.using("numpy"):
        assert not kernels.enabled()
        with kernels.using("auto"):
            assert kernels.enabled()
        assert not kernels.enabled()  # each block gives back the path it found


@needs_numba
@pytest.mark.parametrize(("value", "on"), [("numpy", False), ("auto", True), ("numba", True)])
def test_a_new_process_takes_its_path_from_the_environment(value: str, on: bool) -> None:
    code = "import numpy as np; from dagtrain.model import kernels; print(kernels.fits(np.zeros((2, 2), np.float32)))"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, kernels.KERNELS_ENV: value},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(on)


def test_without_numba_auto_is_numpy_and_numba_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernels, "AVAILABLE", False)  # as on a machine without the fast extra
    monkeypatch.setattr(kernels, "_enabled", None)
    monkeypatch.setenv(kernels.KERNELS_ENV, "auto")
    assert not kernels.enabled()
    with pytest.raises(ConfigError, match=r"numba is not installed; pip install 'dagtrain\[fast\]'"):
        kernels.using("numba").__enter__()


@needs_numba
@pytest.mark.parametrize("schedule", [dt.Sync(), dt.LayerLocal(4, "sharded")], ids=["sync", "layerlocal"])
def test_a_run_is_bitwise_the_same_with_and_without_the_kernels(blobs: dt.Dataset, schedule: dt.Schedule) -> None:
    model = dt.MLP([12, 32, 16, 3], seed=2)  # relu and softmax cross-entropy: every kernel runs
    plan = dt.compile(model, blobs, schedule, batch_size=16, epochs=2, lr=0.1)
    with kernels.using("numpy"):
        expected = plan.run("threads")
    with kernels.using("numba"):
        got = plan.run("threads")
    assert weights_equal(expected.weights, got.weights)
    losses = [[(h["train_loss"], h["test_loss"]) for h in r.history] for r in (expected, got)]
    assert losses[0] == losses[1]
    assert expected.test_accuracy == got.test_accuracy and expected.test_accuracy > 0.5
