"""Experiments built on plans: the LayerLocal interval sweep, and schedules compared on time-to-accuracy."""

from dagtrain.experiments.compare import CompareResult, compare
from dagtrain.experiments.report import save
from dagtrain.experiments.sweep import PRESETS, SEED_ACCURACY, Settings, SweepResult, sweep

__all__ = ["PRESETS", "SEED_ACCURACY", "CompareResult", "Settings", "SweepResult", "compare", "save", "sweep"]
