"""Pick the Dask scheduler a plan runs on: by name, a ``distributed.Client``, or a get function.

BLAS is pinned to ``blas_threads`` threads per worker while a plan runs, one by default.
One thread keeps results bitwise equal on every scheduler (a second BLAS thread splits
the sums differently) and leaves the cores to concurrent tasks, where LayerLocal's
parallelism comes from. A schedule with one chain (Sync) has no concurrent math to give
the cores to: there ``blas_threads=2`` runs the 784-256-256-10 loop 1.5x faster on an idle
2-core machine (``python -m benchmarks.peer``), and it loses when the machine is busy.

On the threaded scheduler the interpreter's GIL switch interval is lowered from 5 ms to
1 ms for the run. Concurrent layer chains alternate short Python glue with BLAS calls
that release the GIL; at 5 ms a thread coming back from BLAS waits for the other to be
preempted. Measured (4-layer MLP, batch 128, LayerLocal k=10 sharded, 2 threads): chain
work 1.45 s -> 1.02 s, speed-up over one worker 1.44x -> 1.92x.

The local schedulers also set this process's malloc thresholds for training, once
(:func:`dagtrain.execute.memory.keep_freed_memory`; ``DAGTRAIN_MALLOC=default`` opts out).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import dask
import dask.local
import dask.multiprocessing
import dask.threaded
from threadpoolctl import threadpool_limits

from dagtrain.errors import ConfigError
from dagtrain.execute.cluster import warn_if_trimming
from dagtrain.execute.memory import keep_freed_memory
from dagtrain.execute.trace import TaskRecord, trace_distributed, trace_local

GetFunction = Callable[..., Any]
NAMES = ("sync", "synchronous", "threads", "threading", "processes")


@dataclass
class Scheduler:
    """A resolved scheduler: its name, its get function and how many workers it has."""

    name: str
    get: GetFunction
    workers: int
    trace: Callable[[], contextlib.AbstractContextManager[list[TaskRecord]]] = trace_local
    addresses: tuple[str, ...] = ()  # a cluster's worker addresses, where tasks can be pinned
    client: Any = None  # the distributed.Client, when there is one


@contextlib.contextmanager
def _switch_interval(seconds: float) -> Iterator[None]:
    old = sys.getswitchinterval()
    sys.setswitchinterval(seconds)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def _prepare_worker_process(threads: int) -> None:
    threadpool_limits(limits=threads, user_api="blas")
    keep_freed_memory()


ADDRESS_PREFIXES = ("tcp://", "tls://", "inproc://", "ucx://")


@contextlib.contextmanager
def connect(address: str, timeout: float = 10.0) -> Iterator[Any]:
    """A ``distributed.Client`` of the scheduler at ``address``; an error (not a hang) if none answers within ``timeout`` s."""
    from distributed import Client

    try:
        client = Client(address, timeout=f"{timeout}s")  # type: ignore[no-untyped-call]
    except OSError as exc:
        raise ConfigError(f"no dask scheduler answers at {address} within {timeout:g} s ({exc}); start one with "
                          "`dask scheduler` and workers with `dask worker ADDRESS`") from None
    with client:
        yield client


@contextlib.contextmanager
def open_scheduler(scheduler: Any = None, *, num_workers: int | None = None,
                   blas_threads: int = 1) -> Iterator[Scheduler]:
    """Resolve ``scheduler`` for the length of a run (pools opened here are closed after).

    ``None`` or ``"threads"``: dask's threaded scheduler (the default). ``"sync"``: the
    synchronous scheduler, for debugging. ``"processes"``: a process pool. A
    ``distributed.Client``: its cluster (whose workers keep their own BLAS settings). A
    scheduler address (``"tcp://host:8786"``): a client of that cluster for the run, or an
    error within 10 s if nothing answers there. Any other callable: used as a Dask get
    function. ``blas_threads``: BLAS threads per worker.
    """
    if isinstance(blas_threads, bool) or not isinstance(blas_threads, int) or blas_threads < 1:
        raise ConfigError(f"blas_threads must be a positive integer, got {blas_threads!r}; 1 (the default) "
                          "gives the same bits on every scheduler")
    workers = num_workers or multiprocessing.cpu_count()
    if isinstance(scheduler, str) and scheduler.startswith(ADDRESS_PREFIXES):
        with connect(scheduler) as client, open_scheduler(client, blas_threads=blas_threads) as sched:
            yield sched
    elif scheduler is None or scheduler in ("threads", "threading"):
        keep_freed_memory()
        with threadpool_limits(limits=blas_threads, user_api="blas"), _switch_interval(0.001):
            yield Scheduler("threads", lambda dsk, keys: dask.threaded.get(dsk, keys, num_workers=workers), workers)
    elif scheduler in ("sync", "synchronous", "single-threaded"):
        keep_freed_memory()
        with threadpool_limits(limits=blas_threads, user_api="blas"):
            yield Scheduler("sync", dask.local.get_sync, 1)
    elif scheduler == "processes":
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_prepare_worker_process, initargs=(blas_threads,)) as pool:
            yield Scheduler("processes", lambda dsk, keys: dask.multiprocessing.get(dsk, keys, pool=pool), workers)
    elif hasattr(scheduler, "get") and hasattr(scheduler, "scheduler_info"):
        warn_if_trimming(scheduler)
        addresses = tuple(sorted(scheduler.scheduler_info(n_workers=-1).get("workers", {})))
        yield Scheduler("distributed", scheduler.get, len(addresses) or 1, trace=lambda: trace_distributed(scheduler),
                        addresses=addresses, client=scheduler)
    elif callable(scheduler):
        yield Scheduler(getattr(scheduler, "__name__", "custom"), scheduler, workers)
    else:
        raise ConfigError(
            f"unknown scheduler {scheduler!r}; pass None or 'threads' (default), 'sync', 'processes', "
            "a distributed.Client, a scheduler address such as 'tcp://127.0.0.1:8786', or a Dask get function"
        )
