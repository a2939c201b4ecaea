"""The allocator policy of a process that trains: reuse freed arrays rather than hand them back.

A training step allocates and frees the same arrays over and over: a 128 x 784 float32
batch (400 KB), 128 x 256 activations (128 KB), a 784 x 256 weight gradient and the new
weights (800 KB each). glibc's malloc adapts its thresholds as arrays come and go, and
along the way returns the top of its heaps to the kernel whenever more than the trim
threshold lies free there. The next step asks for the same memory again, and the kernel
hands it back one zeroed 4 KB page at a time: 7,000-13,000 minor page faults per epoch of
784-256x3-10 LayerLocal k=100 on one worker, each taken inside a numpy call that holds the
GIL.

:func:`keep_freed_memory` fixes the thresholds where glibc's own adaptive rule tops out on
64-bit Linux: arrays up to 32 MB come from the heap (``M_MMAP_THRESHOLD``), and up to 64 MB
of free heap top is kept (``M_TRIM_THRESHOLD``). Measured on the 2-core machine (k=100,
sharded, interleaved processes, four rounds): the faults drop to under 100 per epoch and
one worker's chain tasks go from 69-73 to 73.6-76.9 GFLOP/s. The cost is that a process keeps
up to 64 MB of freed memory per malloc arena instead of returning it.

Local runs (the synchronous, threaded and process-pool schedulers) set it once per process.
It is left alone where glibc is not the allocator, where ``MALLOC_TRIM_THRESHOLD_`` or
``MALLOC_MMAP_THRESHOLD_`` is already set in the environment (someone chose), and when
``DAGTRAIN_MALLOC=default``. Cluster workers keep their own settings (see
:mod:`dagtrain.execute.cluster`).
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: where its adaptive rule stops
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD  # the adaptive rule keeps the trim threshold at twice the mmap threshold
OPT_OUT = "DAGTRAIN_MALLOC"
ENVIRONMENT = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")

_lock = threading.Lock()
_state: list[bool] = []  # [applied?] once decided for this process


def keep_freed_memory() -> bool:
    """Set glibc's malloc thresholds for training, once per process; True if they are set.

    False (and nothing changed) off glibc, when the environment already sets either
    threshold, or with ``DAGTRAIN_MALLOC=default``. Safe to call from any thread, any number
    of times.
    """
    with _lock:
        if not _state:
            _state.append(_apply())
        return _state[0]


def _apply() -> bool:
    if os.environ.get(OPT_OUT, "").lower() == "default":
        return False
    if platform.libc_ver()[0] != "glibc" or any(name in os.environ for name in ENVIRONMENT):
        return False
    mallopt = ctypes.CDLL(None).mallopt  # the running process's C library
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
