"""Studies (``fmolab study``): groups of arms x seeds at a fixed sample budget, run as one Ray Tune
experiment, reported as one table of mean +- sd per arm (docs/studies.md)."""
from fmolab.study.spec import Arm, Study, load_study

__all__ = ["Arm", "Study", "load_study"]
