"""What a run returns: the trained weights, the per-epoch history and the timings."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from dagtrain.data.atomic import atomic_directory
from dagtrain.errors import ConfigError, CorruptStoreError, StoreNotFoundError
from dagtrain.execute.trace import TaskRecord
from dagtrain.model.functional import Params

WEIGHTS_FORMAT = "dagtrain.weights/1"


@dataclass
class TrainResult:
    """The outcome of ``plan.run()``.

    ``weights`` holds one :class:`~dagtrain.model.Params` ``(W, b)`` per layer.
    ``history`` holds one row per evaluation (each epoch's end, and every ``eval_every``
    steps if the plan was compiled with it): ``epoch`` (epochs done, a fraction between
    epoch ends), ``step``, ``train_loss`` (mean over the batches since the previous row),
    ``test_loss``, ``test_accuracy`` and ``seconds`` since the start of the run.
    ``tasks`` records when and on which worker each Dask task ran
    (:class:`~dagtrain.execute.trace.TaskRecord`). ``velocity`` is the momentum state at
    the end (None per layer without momentum): ``plan.run(init=result)`` continues from both.
    """

    weights: list[Params]
    history: list[dict[str, Any]]
    steps: int
    samples: int
    wall_time: float
    scheduler: str
    info: dict[str, Any] = field(default_factory=dict)
    tasks: list[TaskRecord] = field(default_factory=list, repr=False)
    velocity: list[Params | None] = field(default_factory=list, repr=False)

    @property
    def test_accuracy(self) -> float | None:
        """Test accuracy after the last epoch (None if the data has no test split)."""
        return self.history[-1].get("test_accuracy") if self.history else None

    @property
    def samples_per_second(self) -> float:
        """Training samples processed per second of wall time."""
        return self.samples / self.wall_time if self.wall_time else 0.0

    def timeline(self, path: str | os.PathLike[str]) -> Path:
        """Write the run's EEG-style timeline: ``.html`` (interactive) or ``.png``; one row per worker thread."""
        from dagtrain.report.timeline import timeline_html, timeline_png

        target = Path(path)
        title = f"{self.info.get('schedule', 'run')} on {self.scheduler}: {len(self.tasks)} tasks, {self.wall_time:.2f} s"
        if target.suffix.lower() == ".html":
            return timeline_html(self.tasks, target, title=title)
        if target.suffix.lower() == ".png":
            return timeline_png(self.tasks, target, title=title)
        raise ConfigError(f"cannot write a timeline to {target.name!r}: use a .html or .png file name")

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the weights to a zarr store atomically (complete or not at all)."""
        with atomic_directory(path, overwrite=overwrite) as tmp:
            root = zarr.open_group(str(tmp), mode="w")
            for layer, p in enumerate(self.weights, start=1):
                root.create_array(f"L{layer}/W", data=np.asarray(p.W))
                root.create_array(f"L{layer}/b", data=np.asarray(p.b))
            root.attrs.update({"format": WEIGHTS_FORMAT, "n_layers": len(self.weights),
                               "history": self.history, "steps": self.steps})
        return Path(path)


def load_weights(path: str | os.PathLike[str]) -> list[Params]:
    """Read weights written by :meth:`TrainResult.save`."""
    p = Path(path).expanduser()
    if not p.exists():
        raise StoreNotFoundError(f"no weights store at {p}")
    try:
        root = zarr.open_group(str(p), mode="r")
        if root.attrs.get("format") != WEIGHTS_FORMAT:
            raise CorruptStoreError(f"{p} is not a dagtrain weights store (format {root.attrs.get('format')!r})")
        n_layers: Any = root.attrs["n_layers"]
        arrays: Any = root
        return [Params(np.asarray(arrays[f"L{i}/W"][...]), np.asarray(arrays[f"L{i}/b"][...]))
                for i in range(1, int(n_layers) + 1)]
    except CorruptStoreError:
        raise
    except Exception as exc:
        raise CorruptStoreError(f"cannot read weights store {p}: {exc}") from exc
