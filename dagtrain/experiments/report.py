"""Write a sweep's results: a Markdown and a CSV table, the settings as JSON, and a plot (PNG).

Every file is written to a temporary name and renamed into place, so a crash never
leaves a half-written result.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

from dagtrain.data.atomic import atomic_write
from dagtrain.experiments.sweep import SEED_ACCURACY, SweepResult

COLUMNS = [  # (key, header, format)
    ("schedule", "schedule", "{}"),
    ("k", "k", "{}"),
    ("data", "data", "{}"),
    ("workers", "workers", "{}"),
    ("samples_between_syncs", "samples between syncs", "{:,}"),
    ("syncs", "syncs", "{:,}"),
    ("test_accuracy", "test acc %", "{:.2%}"),
    ("train_loss", "last epoch train loss", "{:.4f}"),
    ("wall_time", "wall s", "{:.2f}"),
    ("t_sync_ms", "t_sync ms", "{:.2f}"),
    ("speedup", "speed-up vs Sync 1 worker", "{:.2f}x"),
    ("predicted_speedup", "formula speed-up", "{:.2f}x"),
    ("measured_over_predicted", "measured / formula", "{:.2f}"),
]


def versions() -> dict[str, str]:
    """Python, the platform and the versions of the packages a run depends on."""
    found = {"python": platform.python_version(), "platform": platform.platform()}
    for package in ("dagtrain", "numpy", "dask", "distributed", "zarr", "networkx"):
        found[package] = version(package)
    return found


def markdown_table(result: SweepResult) -> str:
    """The sweep as a Markdown table (accuracy in percent, times in seconds)."""
    lines = ["| " + " | ".join(h for _, h, _ in COLUMNS) + " |",
             "|" + "|".join("---" if k in ("schedule", "data") else "---:" for k, _, _ in COLUMNS) + "|"]
    for row in result.rows:
        cells = ["" if row.get(k) is None else fmt.format(row[k]).replace("%", "") for k, _, fmt in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(result: SweepResult) -> bytes:
    """A PNG: test accuracy against k (with the seed's five points), and wall time against k, measured and predicted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (acc_ax, time_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    sync_acc = result.row("sync-1")["test_accuracy"]
    ks_seed = sorted(SEED_ACCURACY)
    acc_ax.plot(ks_seed, [SEED_ACCURACY[k] for k in ks_seed], "k:s", label="seed presentation")
    colours = {"shared": "tab:blue", "sharded": "tab:orange"}
    for mode, colour in colours.items():
        rows = sorted((r for r in result.rows if r["data"] == mode), key=lambda r: r["k"])
        if not rows:
            continue
        ks = [r["k"] for r in rows]
        acc_ax.plot(ks, [100 * r["test_accuracy"] for r in rows], "o-", color=colour, label=f"dagtrain {mode}")
        time_ax.plot(ks, [r["wall_time"] for r in rows], "o-", color=colour, label=f"{mode}, measured")
        time_ax.plot(ks, [r["predicted_time"] for r in rows], "x--", color=colour, label=f"{mode}, formula")
    if sync_acc is not None:
        acc_ax.axhline(100 * sync_acc, color="grey", lw=1, label="Sync")
    time_ax.axhline(result.row("sync-1")["wall_time"], color="grey", lw=1, label="Sync, 1 worker")
    s = result.settings
    for ax, title in ((acc_ax, "test accuracy (%)"), (time_ax, f"wall time (s), {result.workers} workers")):
        ax.set_xscale("log")
        ax.set_xlabel("communication interval k (steps between syncs)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"LayerLocal on MNIST: {'-'.join(map(str, s.sizes))} {s.activation}/{s.loss}, batch {s.batch_size}, "
                 f"lr {s.lr}, {s.epochs} epoch(s)", fontsize=10)
    fig.tight_layout()
    return png_bytes(fig)


def png_bytes(fig: Any) -> bytes:
    """A matplotlib figure as PNG bytes (110 dpi); the figure is closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def save(result: SweepResult, folder: str | os.PathLike[str], *, command: str | None = None) -> dict[str, Path]:
    """Write ``table.md``, ``table.csv``, ``settings.json`` and ``plot.png`` into ``folder``; return their paths."""
    out = Path(folder).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    command = command or " ".join(["dagtrain", *sys.argv[1:]])
    settings: dict[str, Any] = {**result.settings_dict(), "versions": versions(), "command": command}
    s = result.settings
    header = (f"# LayerLocal interval sweep\n\n"
              f"Model {'-'.join(map(str, s.sizes))} ({s.activation} hidden, {s.loss}), batch {s.batch_size}, "
              f"lr {s.lr}, momentum {s.momentum}, {s.epochs} epoch(s), seed {s.seed}"
              f"{'' if s.max_steps is None else f', first {s.max_steps} steps'}"
              f"{f', staleness damping {s.damping}' if s.damping else ''}"
              f"{', delay compensation (weight prediction)' if s.compensate else ''}; "
              f"{result.workers} workers on the {result.scheduler} scheduler.\n\n"
              f"Reproduce: `{command}`\n\n")
    paths = {name: out / name for name in ("table.md", "table.csv", "settings.json", "plot.png")}
    atomic_write(paths["table.md"], header + markdown_table(result) + "\n")
    buf = io.StringIO()
    keys = [k for k, _, _ in COLUMNS] + ["predicted_time"]
    writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(result.rows)
    atomic_write(paths["table.csv"], buf.getvalue())
    atomic_write(paths["settings.json"], json.dumps(settings, indent=2) + "\n")
    atomic_write(paths["plot.png"], plot(result))
    return paths
