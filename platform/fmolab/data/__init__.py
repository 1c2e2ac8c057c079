"""Data pipeline: FMO loader, background adder, input formats, augmentation, torch and Ray Data paths.

Items are composited on demand from shards (see docs/batches.md for the item contract). The Ray Data
path lives in :mod:`fmolab.data.ray_pipeline` (imported on demand: it imports Ray).
"""
from fmolab.data.augment import Augment
from fmolab.data.background_adder import BackgroundAdder, contrast
from fmolab.data.dataset import FMODataset, build_dataset, collate, gather_item, make_batch, to_device
from fmolab.data.formats import FORMATS, InputFormat, build_format, in_channels
from fmolab.data.loader import FMOLoader, RowError, Sequence, frame_indices, val_objects
from fmolab.data.synthetic import write_synthetic_dataset

__all__ = [
    "Augment", "BackgroundAdder", "contrast", "FMODataset", "build_dataset", "collate", "gather_item", "make_batch",
    "to_device",
    "FORMATS", "InputFormat", "build_format", "in_channels", "FMOLoader",
    "RowError", "Sequence", "frame_indices", "val_objects", "write_synthetic_dataset",
]
