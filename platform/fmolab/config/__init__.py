"""One typed config tree for every stage: YAML files + ``a.b=c`` overrides, validated with clear errors.

The sections are dataclasses (:mod:`fmolab.config.tree`); :mod:`fmolab.config.loading` merges YAML
files in order, applies overrides, checks every key and type, then runs each section's ``check()``; the checked tree is frozen (``derive`` makes changed copies).
Ready configurations are the YAML files in ``fmolab/presets/``.
"""
from fmolab.config.loading import (PRESET_DIR, config_from_dict, derive, dump_yaml, flatten, load_config, parse_override,
                                   preset_names, preset_path, read_yaml, scale_names, set_dotted, to_dict)
from fmolab.config.tree import (BackgroundRenderConfig, Config, ConfigError, DataConfig, LossConfig,
                                ModelConfig, MonitorConfig, RenderConfig, RuntimeConfig, TrackingConfig,
                                TrainConfig, TrajectoryConfig, require, resolve_work_dir)

__all__ = [
    "PRESET_DIR", "BackgroundRenderConfig", "Config", "ConfigError", "DataConfig", "LossConfig", "ModelConfig", "MonitorConfig",
    "RenderConfig", "RuntimeConfig", "TrackingConfig", "TrainConfig", "TrajectoryConfig", "config_from_dict",
    "derive", "dump_yaml", "flatten", "load_config", "parse_override", "preset_names", "preset_path", "read_yaml",
    "require", "resolve_work_dir", "scale_names", "set_dotted", "to_dict",
]
