"""Fused float32 kernels for the elementwise work between the matmuls, bitwise equal to the numpy in functional.py.

:mod:`dagtrain.model.functional` is the math, in numpy. Between its matmuls a training
step makes about 25 small numpy calls (the bias and relu of each layer, relu's backward,
a dozen in the loss). Each is a pass over a small array plus a trip through numpy's
dispatch, and each array of more than 500 elements releases and retakes the GIL, which
two lane threads then hand back and forth. Compiled with numba, the same arithmetic runs
as a handful of loops: the bias and relu in one pass, relu's backward in one, the loss's
shift and normalisation in two around numpy's own ``exp``.

Measured on the 2-core machine (784-256-256-256-10, LayerLocal k=10 sharded, one epoch,
interleaved rounds): chain tasks 0.93-0.99x the time on one thread and 0.91x on two, wall
time 0.91x on two. See ``docs/performance.md``.

The kernels do exactly the float32 operations the numpy code does, in the same order
(a row's sum in numpy's pairwise order, numpy's ``maximum`` for NaN and signed zeros,
numpy's own ``exp`` and ``log``), so results are bitwise the same with and without them;
``tests/test_kernels.py`` checks it. Which path runs is therefore a matter of speed only:

- ``DAGTRAIN_KERNELS=auto`` (the default): the kernels when numba is installed
  (``pip install "dagtrain[fast]"``), numpy otherwise;
- ``numba``: the kernels, or an error at the first step if numba is missing;
- ``numpy``: never the kernels.

A process reads ``DAGTRAIN_KERNELS`` once, at its first step (worker processes when they
start); :func:`using` switches paths for a block of code in one process. Only float32
C-contiguous arrays take the kernels; anything else runs the numpy code. numba is
imported at the first step, and each kernel compiles the first time a process calls it
(about 1.5 s for all of them; numba caches the machine code on disk).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from dagtrain.errors import ConfigError

Array = np.ndarray
KERNELS_ENV = "DAGTRAIN_KERNELS"
CHOICES = ("auto", "numba", "numpy")
AVAILABLE = importlib.util.find_spec("numba") is not None  # the optional extra dagtrain[fast]; imported at first use
MAX_CLASSES = 128  # numpy sums a row of up to 128 in one block of its pairwise summation; longer rows recurse


def check_choice(choice: str) -> str:
    """``choice`` if it names a kernel path that can run here, else a ConfigError that says what to do."""
    if choice not in CHOICES:
        raise ConfigError(f"{KERNELS_ENV}={choice!r} is not a choice; use one of {', '.join(CHOICES)} "
                          "(auto, the default, uses numba when it is installed)")
    if choice == "numba" and not AVAILABLE:
        raise ConfigError(f"{KERNELS_ENV}=numba but numba is not installed; pip install 'dagtrain[fast]', "
                          f"or set {KERNELS_ENV}=auto to fall back to numpy")
    return choice


def environment_choice() -> str:
    """The kernel path ``DAGTRAIN_KERNELS`` asks for (``auto`` when unset), checked."""
    return check_choice(os.environ.get(KERNELS_ENV, "auto"))


_enabled: bool | None = None  # decided from the environment at the first step of a process; `using` sets it for a block


def enabled() -> bool:
    """True when the kernels run in this process: numba is installed and ``DAGTRAIN_KERNELS`` (or :func:`using`) allows them.

    The environment is read once, at the first call: worker processes read it when they start.
    """
    global _enabled
    if _enabled is None:
        _enabled = environment_choice() != "numpy" and AVAILABLE
    return _enabled


@contextlib.contextmanager
def using(choice: str) -> Iterator[None]:
    """Within the block, in this process, run with the kernels ``choice`` (``auto``, ``numba`` or ``numpy``)."""
    global _enabled
    on = check_choice(choice) != "numpy" and AVAILABLE
    before, _enabled = _enabled, on
    try:
        yield
    finally:
        _enabled = before


def fits(*arrays: Array) -> bool:
    """True when the kernels are on and every array is float32 and C-contiguous, the layout they are compiled for."""
    return (_enabled if _enabled is not None else enabled()) and all(
        a.dtype == np.float32 and a.flags.c_contiguous for a in arrays)


def are_labels(labels: Any, logits: Array) -> bool:
    """True when ``labels`` is a 1-D integer array, one label per row of ``logits``, of at most ``MAX_CLASSES`` classes.

    Anything else goes to the numpy code, which handles (or rejects) it.
    """
    return (isinstance(labels, np.ndarray) and labels.dtype.kind in "iu" and labels.shape == logits.shape[:1]
            and 0 < logits.shape[1] <= MAX_CLASSES)


# --- the loops: each line is the float32 operation the numpy code in functional.py does ---
def _bias_relu(z: Array, b: Array) -> None:
    # z += b; np.maximum(z, 0, out=z): NaN stays NaN, -0.0 becomes +0.0, as numpy's maximum does
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            v = z[i, j] + b[j]
            z[i, j] = v if (v > 0 or v != v) else np.float32(0)


def _relu_backward(a: Array, grad_a: Array) -> Array:
    # grad_a * (a > 0): the multiply by 1 or 0 keeps -0.0, and inf * 0 = NaN
    out = np.empty_like(grad_a)
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            out[i, j] = grad_a[i, j] * (np.float32(1) if a[i, j] > 0 else np.float32(0))
    return out


def _shift_rows(logits: Array, labels: Array) -> tuple[Array, Array]:
    # shifted = logits - logits.max(axis=1, keepdims=True); picked = shifted[rows, labels]
    n, c = logits.shape
    shifted = np.empty_like(logits)
    picked = np.empty(n, dtype=logits.dtype)
    for i in range(n):
        top = logits[i, 0]
        for j in range(1, c):
            v = logits[i, j]
            if v > top or v != v:  # a NaN wins, as in numpy's max
                top = v
                if v != v:
                    break
        for j in range(c):
            shifted[i, j] = logits[i, j] - top
        if labels[i] < 0 or labels[i] >= c:  # numpy's indexing would raise; compiled code would read out of bounds
            raise IndexError("a label is out of range for the logits' columns")
        picked[i] = shifted[i, labels[i]]
    return shifted, picked


def _normalise_rows(grad: Array, labels: Array) -> Array:
    # sum_exp = grad.sum(axis=1); grad /= sum_exp; grad[rows, labels] -= 1; grad /= n
    n, c = grad.shape
    sums = np.empty(n, dtype=grad.dtype)
    count = np.float32(n)
    for i in range(n):
        # the row's sum in numpy's pairwise order (what grad.sum(axis=1) does for a row of 8 to 128)
        if c < 8:
            s = np.float32(0)
            for j in range(c):
                s += grad[i, j]
        else:
            r0, r1, r2, r3 = grad[i, 0], grad[i, 1], grad[i, 2], grad[i, 3]
            r4, r5, r6, r7 = grad[i, 4], grad[i, 5], grad[i, 6], grad[i, 7]
            j = 8
            while j < c - c % 8:
                r0 += grad[i, j]
                r1 += grad[i, j + 1]
                r2 += grad[i, j + 2]
                r3 += grad[i, j + 3]
                r4 += grad[i, j + 4]
                r5 += grad[i, j + 5]
                r6 += grad[i, j + 6]
                r7 += grad[i, j + 7]
                j += 8
            s = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
            while j < c:
                s += grad[i, j]
                j += 1
        sums[i] = s
        for j in range(c):
            grad[i, j] = grad[i, j] / s
        grad[i, labels[i]] -= np.float32(1)
        for j in range(c):
            grad[i, j] = grad[i, j] / count
    return sums


@functools.cache
def _compiled() -> dict[str, Callable[..., Any]]:
    """The loops above compiled by numba (imported here, at the first use), releasing the GIL as they run.

    Each compiles at its first call, about a second for all; numba caches the machine code on disk.
    """
    import numba

    jit = numba.njit(nogil=True, cache=True)
    return {fn.__name__: jit(fn) for fn in (_bias_relu, _relu_backward, _shift_rows, _normalise_rows)}


# --- typed entry points, called by functional.py when `fits` ---
def bias_relu(z: Array, b: Array) -> Array:
    """``relu(z + b)``, in place on ``z`` (a fresh matmul product), returned."""
    _compiled()["_bias_relu"](z, b)
    return z


def relu_backward(a: Array, grad_a: Array) -> Array:
    """``grad_a * (a > 0)``: dL/dz from dL/da through a relu whose output is ``a``, as a new array."""
    out: Array = _compiled()["_relu_backward"](a, grad_a)
    return out


def softmax_xent(logits: Array, labels: Array) -> tuple[float, Array]:
    """:func:`dagtrain.model.functional.softmax_xent` in four calls instead of a dozen; the same bits."""
    shifted, picked = _compiled()["_shift_rows"](logits, labels)
    grad = np.exp(shifted, out=shifted)  # numpy's exp: its bits are the reference's
    sum_exp = _compiled()["_normalise_rows"](grad, labels)
    per_sample = np.log(sum_exp)
    per_sample -= picked
    return float(per_sample.sum() / logits.shape[0]), grad
