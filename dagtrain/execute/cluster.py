"""Dask clusters set up for training: one thread per worker and glibc's allocator left alone.

``distributed``'s nannies start every worker with ``MALLOC_TRIM_THRESHOLD_=65536`` (the
config key ``distributed.nanny.pre-spawn-environ``), so that freed memory goes back to the
OS. Setting that variable also switches off glibc's adaptive mmap threshold: every array
over 128 KB then gets fresh pages from the kernel and gives them back when freed. A
training step allocates and frees many such arrays (a 128 x 784 float32 batch is 400 KB,
a 784 x 256 weight gradient 800 KB), so each one pays page faults and zeroing. Measured on
the 2-core machine (784-256-256-256-10, LayerLocal sharded, 2 worker processes): the
chain tasks sustain 30-36 GFLOP/s per worker with the variable and 52-64 without.

:func:`local_cluster` starts a ``LocalCluster`` without it. For workers started by hand,
put :data:`WORKER_CONFIG_YAML` in a dask config file (``~/.config/dask/dagtrain.yaml``, or
any directory named by ``DASK_CONFIG``) on the machines that run ``dask worker``. A
``DASK_DISTRIBUTED__...`` environment variable cannot do it: dask lower-cases the keys it
reads from the environment, and this one is upper case.

A run on a cluster whose workers still have it set warns once per cluster
(:class:`~dagtrain.errors.PerformanceWarning`).
"""

from __future__ import annotations

import os
import platform
import warnings
from typing import Any

import dask

from dagtrain.errors import PerformanceWarning

TRIM_VARIABLE = "MALLOC_TRIM_THRESHOLD_"
WORKER_CONFIG = {f"distributed.nanny.pre-spawn-environ.{TRIM_VARIABLE}": None}
"""The dask config under which nannies start workers without ``MALLOC_TRIM_THRESHOLD_``."""
WORKER_CONFIG_YAML = f"""\
distributed:
  nanny:
    pre-spawn-environ:
      {TRIM_VARIABLE}: null
"""
"""The same as a dask config file, for clusters started with ``dask worker``."""

_checked: set[str] = set()  # scheduler addresses already checked in this process


def local_cluster(n_workers: int = 2, *, host: str = "127.0.0.1", dashboard_address: str = ":0",
                  **kwargs: Any) -> Any:
    """A ``distributed.LocalCluster`` for training: ``n_workers`` processes of one thread each.

    Workers bind to ``host`` (this machine only by default) and run BLAS on one thread
    (distributed's default) with glibc's allocator at its defaults (see the module notes).
    ``dashboard_address``: where the scheduler serves the dashboard; the default ``":0"``
    is any free port on ``host`` (``client.dashboard_link`` says which), so a second
    cluster never fights over 8787. Other keyword arguments go to ``LocalCluster``.
    Use it as a context manager: ``with local_cluster() as cluster, Client(cluster) as client: ...``.
    """
    from distributed import LocalCluster

    with dask.config.set(WORKER_CONFIG):
        return LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, host=host,  # type: ignore[no-untyped-call]
                            dashboard_address=dashboard_address, **kwargs)


def _malloc_trim_setting() -> str | None:
    """This process's ``MALLOC_TRIM_THRESHOLD_`` where glibc reads it, else None (runs on a worker)."""
    if platform.libc_ver()[0] != "glibc":
        return None
    return os.environ.get(TRIM_VARIABLE)


def trimming_workers(client: Any) -> dict[str, str]:
    """The workers of ``client``'s cluster that run with ``MALLOC_TRIM_THRESHOLD_`` set: address -> value."""
    settings: dict[str, str | None] = client.run(_malloc_trim_setting)
    return {address: value for address, value in sorted(settings.items()) if value is not None}


def warn_if_trimming(client: Any) -> None:
    """Warn (once per cluster and process) if the cluster's workers free memory back to the OS on every array."""
    address = str(getattr(client.scheduler, "address", id(client)))
    if address in _checked:
        return
    _checked.add(address)
    slow = trimming_workers(client)
    if slow:
        first, value = next(iter(slow.items()))
        warnings.warn(
            f"{len(slow)} worker(s) of the cluster at {address} (first {first}) run with "
            f"{TRIM_VARIABLE}={value} (distributed's default), which gives every array over 128 KB fresh pages "
            "from the kernel: layer chains run up to 1.8x slower. Start the cluster with "
            "dagtrain.local_cluster(), or give `dask worker` a dask config file that sets "
            f"distributed.nanny.pre-spawn-environ.{TRIM_VARIABLE} to null (docs/howto/cluster.md)",
            PerformanceWarning, stacklevel=2)
