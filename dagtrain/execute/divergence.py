"""Divergence: NaN or inf in the weights or the loss, caught where the run can name it.

Two places look. Every sync node checks the weights it merges, so a chain that blew up is
named by its chain, layer and step, and the window stops there. The run loop checks each
window's losses and final weights, which covers schedules without sync nodes (Sync,
DelayedGradient) and a loss that overflows before the weights do. Both raise
:class:`dagtrain.DivergenceError` before anything is checkpointed, so the last checkpoint
is always a good one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from dagtrain.errors import DivergenceError
from dagtrain.model.functional import Params

# The NaN and inf that divergence makes must reach the checks below, not stop a task as a warning.
QUIET = {"over": "ignore", "invalid": "ignore", "divide": "ignore"}


def is_finite(p: Params | None) -> bool:
    """True when a layer's weights (or optimizer state) hold no NaN or inf; None counts as finite."""
    return p is None or bool(np.isfinite(p.W).all() and np.isfinite(p.b).all())


def check_merge(step0: int, step: int, sources: Sequence[tuple[str, int | None, int | None]],
                inputs: dict[str, Any]) -> None:
    """Raise if the sync at ``step`` is about to merge non-finite weights.

    ``sources`` give each port's chain and the step of its update, relative to the window's ``step0``.
    """
    for port, chain, rel_step in sources:
        if port.startswith("params/") and not is_finite(inputs.get(port)):
            layer = int(port.split("/")[1][1:])
            where = f"chain {chain}" if chain is not None else "the single chain"
            raise DivergenceError(
                f"training diverged: at the sync of step {step}, layer {layer}'s weights from {where} "
                f"(updated at step {'?' if rel_step is None else step0 + rel_step}) hold NaN or inf",
                step=step, chain=chain, layer=layer)


def check_window(step0: int, params: Sequence[Params], losses: Sequence[float]) -> None:
    """Raise if a window that began at ``step0`` produced a non-finite loss or non-finite weights."""
    bad_loss = next((i for i, loss in enumerate(losses) if not np.isfinite(loss)), None)
    bad_layer = next((j for j, p in enumerate(params, start=1) if not is_finite(p)), None)
    if bad_loss is None and bad_layer is None:
        return
    end = step0 + len(losses)
    layer = "" if bad_layer is None else f"layer {bad_layer}'s weights hold NaN or inf at the window's end (step {end})"
    if bad_loss is None:
        raise DivergenceError(f"training diverged: {layer}", step=end, layer=bad_layer)
    step = step0 + bad_loss
    also = f" and {layer}" if layer else ""
    raise DivergenceError(f"training diverged: the loss of step {step} is {losses[bad_loss]}{also}", step=step, layer=bad_layer)
