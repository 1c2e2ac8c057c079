"""Training with Ray Train: the worker loop (``loop``, ``callbacks``), how a run starts (``launch``),
the driver (``driver``), optimizers and schedules by name (``optim``).

``from fmolab.train import train`` is the entry point; the rest is imported where it is used.
"""
from fmolab.train.driver import load_run_config, train

__all__ = ["load_run_config", "train"]
