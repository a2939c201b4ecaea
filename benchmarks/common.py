"""Helpers shared by the benchmark scripts: machine facts and a median table."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
from collections.abc import Sequence
from importlib.metadata import version
from typing import Any

from dagtrain.data.batches import BATCHES
from dagtrain.model import kernels


def machine_line() -> str:
    """CPU, cores, Python and library versions: printed above every table."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    libs = ", ".join(f"{name} {version(name)}" for name in ("numpy", "dask", "distributed", "zarr", "networkx"))
    fused = f"dagtrain's kernels: numba {version('numba')}" if kernels.enabled() else "dagtrain's kernels: off (numpy)"
    return (f"{cpu}; {os.cpu_count()} cores; Python {platform.python_version()}; {libs}; BLAS pinned to 1 thread; "
            f"{fused} (the numpy loop is plain numpy)")


def table(rows: Sequence[tuple[str, Sequence[float], Sequence[float]]], unit: str) -> str:
    """Rows of (name, values, ratios): median, min and max of each, as Markdown."""
    out = [f"| contender | median {unit} | min | max | ratio to baseline (median of per-round ratios) |",
           "|---|---:|---:|---:|---:|"]
    for name, values, ratios in rows:
        out.append(f"| {name} | {statistics.median(values):,.0f} | {min(values):,.0f} | {max(values):,.0f} | "
                   f"{statistics.median(ratios):.3f} |")
    return "\n".join(out)


DATA_CHOICES = ("warm", "cold")
DATA_HELP = ("warm (default): dagtrain's runs find the training split already in memory, as the numpy loop has its "
             "arrays (a process reads each chunk once, then trains from memory for every later epoch); cold: every "
             "run starts with nothing in memory and reads its chunks from zarr inside the timed run, as a first epoch does")


def add_data_option(parser: argparse.ArgumentParser) -> None:
    """``--data warm|cold``: whether dagtrain's timed runs start with the training split in memory."""
    parser.add_argument("--data", choices=DATA_CHOICES, default="warm", help=DATA_HELP)


def before_run(data: str, client: Any = None) -> None:
    """Call before each timed dagtrain run: when ``data`` is "cold", forget the resident data of this process
    and of ``client``'s workers."""
    if data == "cold":
        BATCHES.clear()
        if client is not None:
            client.run(_clear_batches)


def _clear_batches() -> None:
    from dagtrain.data.batches import BATCHES

    BATCHES.clear()
