"""``Sync``: exact minibatch SGD. Every op of step t reads version t of every layer's weights."""

from __future__ import annotations

from dataclasses import dataclass

from dagtrain.schedules.base import Schedule


@dataclass(frozen=True)
class Sync(Schedule):
    """Exact minibatch SGD: the graph as built, no dependency cut."""

    name = "sync"
