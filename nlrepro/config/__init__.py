"""Typed run configuration: the schema, profiles with ``--set`` overrides, and validation.

One dataclass tree (``schema``) describes a run completely; ``load`` fills it from a profile
and overrides; ``validate`` rejects impossible values before anything runs, and every error
names the key, the bad value and what is allowed.
"""

from nlrepro.config.load import (PROFILE_DIR, add_profile_argument, add_set_argument,
                                 from_dict, list_profiles, load_config, load_profile, merge,
                                 parse_set, profile_family, read_config, read_yaml,
                                 save_config)
from nlrepro.config.schema import (DataConfig, LauncherConfig, ModelConfig, NonLocalConfig,
                                   OptimConfig, ProxyConfig, RunConfig, TrainerConfig, get,
                                   holds_f, to_dict)
from nlrepro.config.validate import CHOICES, check_proxy_config, validate
from nlrepro.errors import ConfigError

__all__ = ["CHOICES", "PROFILE_DIR", "ConfigError", "DataConfig", "LauncherConfig",
           "ModelConfig", "NonLocalConfig", "OptimConfig", "ProxyConfig", "RunConfig",
           "TrainerConfig", "add_profile_argument", "add_set_argument", "check_proxy_config",
           "from_dict", "get", "holds_f", "list_profiles", "load_config", "load_profile", "merge",
           "parse_set", "profile_family", "read_config", "read_yaml", "save_config", "to_dict",
           "validate"]
