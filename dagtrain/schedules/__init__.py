"""Schedules: which dependencies of the exact graph are kept, which are cut, and where syncs go."""

from dagtrain.schedules.adaptive import Adaptive
from dagtrain.schedules.base import Pass, Schedule
from dagtrain.schedules.delayed import DelayedGradient
from dagtrain.schedules.hybrid import Hybrid
from dagtrain.schedules.layerlocal import LayerLocal
from dagtrain.schedules.localsgd import LocalSGD
from dagtrain.schedules.sync import Sync

__all__ = ["Adaptive", "DelayedGradient", "Hybrid", "LayerLocal", "LocalSGD", "Pass", "Schedule", "Sync"]
