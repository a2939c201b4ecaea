"""Training data: zarr stores chunked along samples, the epoch order, and real MNIST."""

from dagtrain.data.cache import cache_dir
from dagtrain.data.order import epoch_order, steps_per_epoch
from dagtrain.data.store import Dataset, open_dataset, to_zarr, write_dataset

__all__ = ["Dataset", "cache_dir", "epoch_order", "open_dataset", "steps_per_epoch", "to_zarr", "write_dataset"]
