"""Experiments built on plans: the LayerLocal interval sweep and its report."""

from dagtrain.experiments.report import save
from dagtrain.experiments.sweep import PRESETS, SEED_ACCURACY, Settings, SweepResult, sweep

__all__ = ["PRESETS", "SEED_ACCURACY", "Settings", "SweepResult", "save", "sweep"]
