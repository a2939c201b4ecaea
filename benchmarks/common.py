"""Helpers shared by the benchmark scripts: machine facts and a median table."""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Sequence
from importlib.metadata import version


def machine_line() -> str:
    """CPU, cores, Python and library versions: printed above every table."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    libs = ", ".join(f"{name} {version(name)}" for name in ("numpy", "dask", "distributed", "zarr", "networkx"))
    return f"{cpu}; {os.cpu_count()} cores; Python {platform.python_version()}; {libs}; BLAS pinned to 1 thread"


def table(rows: Sequence[tuple[str, Sequence[float], Sequence[float]]], unit: str) -> str:
    """Rows of (name, values, ratios): median, min and max of each, as Markdown."""
    out = [f"| contender | median {unit} | min | max | ratio to baseline (median of per-round ratios) |",
           "|---|---:|---:|---:|---:|"]
    for name, values, ratios in rows:
        out.append(f"| {name} | {statistics.median(values):,.0f} | {min(values):,.0f} | {max(values):,.0f} | "
                   f"{statistics.median(ratios):.3f} |")
    return "\n".join(out)
