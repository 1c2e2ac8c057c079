"""Models by name: ``ENCODERS`` (resnet50, resnet34, resnet18, tiny), ``RENDERERS`` (defmo, defmo_atrous, defmo_official).

Every module of this package is imported, so a new part joins by a decorated factory in one file.
"""
import importlib
import pkgutil

from fmolab.models.common import ENCODERS, NORMS, RENDERERS, make_norm
from fmolab.models.defmo import DeFMO, build_model, check_size
from fmolab.models.pretrained import adapt_first_conv, load_pretrained

for _m in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["ENCODERS", "RENDERERS", "NORMS", "make_norm", "DeFMO", "build_model", "check_size",
           "load_pretrained", "adapt_first_conv"]
