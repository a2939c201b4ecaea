"""A run is cut into windows: each is compiled to a graph, run, and its outputs feed the next.

An epoch of MNIST at batch size 1 is 50,000 steps; no graph of a whole run is ever built.
Windows never cross an epoch boundary, so the window that ends an epoch evaluates it.
With ``eval_every`` set, windows also end (and evaluate) every ``eval_every`` steps of an
epoch, for a finer accuracy-against-time curve.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from dagtrain.data.order import steps_per_epoch


@dataclass(frozen=True)
class Window:
    """Steps ``step0 .. step0 + n_steps - 1`` of the run, all within epoch ``epoch``."""

    index: int
    epoch: int
    step0: int
    batch0: int
    n_steps: int
    evaluate: bool
    level: int | None = None  # set by a run that picks the schedule's level per window (Adaptive on drift)

    @property
    def stop(self) -> int:
        """The first step after the window."""
        return self.step0 + self.n_steps


def plan_windows(n_samples: int, batch_size: int, epochs: int, max_steps: int | None, window_steps: int,
                 eval_every: int | None = None) -> Iterator[Window]:
    """Yield the windows of a run; the last window of every epoch (and of the run) evaluates.

    With ``eval_every``, a window also ends and evaluates at every multiple of ``eval_every``
    steps into an epoch (windows keep their ``window_steps`` length between those points).
    """
    per_epoch = steps_per_epoch(n_samples, batch_size)
    total = epochs * per_epoch if max_steps is None else min(max_steps, epochs * per_epoch)
    index = step = 0
    while step < total:
        epoch, batch0 = divmod(step, per_epoch)
        n = min(window_steps, per_epoch - batch0, total - step)
        if eval_every is not None:
            n = min(n, eval_every - batch0 % eval_every)
        end_of_epoch = batch0 + n == per_epoch
        checkpoint = eval_every is not None and (batch0 + n) % eval_every == 0
        yield Window(index, epoch, step, batch0, n, evaluate=end_of_epoch or checkpoint or step + n == total)
        index += 1
        step += n


def total_steps(n_samples: int, batch_size: int, epochs: int, max_steps: int | None) -> int:
    """Steps in the whole run."""
    per_epoch = steps_per_epoch(n_samples, batch_size)
    return epochs * per_epoch if max_steps is None else min(max_steps, epochs * per_epoch)
