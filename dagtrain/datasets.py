"""Ready-made datasets: ``dagtrain.datasets.mnist()``."""

from dagtrain.data.mnist import load_idx_dir, load_pickle, mnist

__all__ = ["load_idx_dir", "load_pickle", "mnist"]
