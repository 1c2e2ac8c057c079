"""Hyperparameter search with Ray Tune + Optuna + ASHA over Ray Train trials.

``space`` (the search space) and ``space_file`` (reading and checking its YAML), ``options`` (how a
search runs), ``trial`` (one trial), ``search`` (the driver), ``report`` (table, plots, registration),
``placement`` (a Ray workaround).
"""
from fmolab.tune.options import SearchOptions
from fmolab.tune.search import run_search, start_search
from fmolab.tune.space_file import load_space

__all__ = ["SearchOptions", "load_space", "run_search", "start_search"]
