"""Analysis of task graphs before anything runs."""

from dagtrain.analysis.summary import GraphStats, analyze, critical_path

__all__ = ["GraphStats", "analyze", "critical_path"]
