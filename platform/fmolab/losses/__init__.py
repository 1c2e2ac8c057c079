"""Losses by name: ``LOSSES.build("AlphaDice:weight=0.5")``; ``LossSet(train, compare)``.

Each family lives in one module of this package and every module is imported here, so adding a
loss is one decorated class in one file.
"""
import importlib
import pkgutil

from fmolab.losses.base import (LOSSES, BaseLoss, ReconstructionLoss, RegularizerLoss, SupervisedLoss,
                                binarize_st, charbonnier, masked_mean, resolve_order)
from fmolab.losses.lossset import LossSet

for _m in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["LOSSES", "BaseLoss", "SupervisedLoss", "ReconstructionLoss", "RegularizerLoss", "LossSet",
           "binarize_st", "charbonnier", "masked_mean", "resolve_order"]
