"""cistern.config: the declarative model (targets, portals, LUNs, ACLs, auth) — load, validate, save.

Public API: :mod:`cistern.config.model` (``Config``, ``load_config``, ``save_config``, ``ConfigError``, ...)
and :func:`cistern.config.demo.demo_config`.
"""

from cistern.config.demo import DEMO_TARGET, default_data_dir, demo_config
from cistern.config.model import (
    DEFAULT_PORTAL,
    AuthConfig,
    ChapConfig,
    Config,
    ConfigError,
    ConfigIssue,
    LunConfig,
    ParamsConfig,
    Portal,
    TargetConfig,
    load_config,
    parse_config,
    save_config,
)
from cistern.config.names import normalize_iscsi_name
from cistern.config.sizes import format_size, human_size, parse_size

__all__ = [
    "DEFAULT_PORTAL",
    "DEMO_TARGET",
    "AuthConfig",
    "ChapConfig",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "LunConfig",
    "ParamsConfig",
    "Portal",
    "TargetConfig",
    "default_data_dir",
    "demo_config",
    "format_size",
    "human_size",
    "load_config",
    "normalize_iscsi_name",
    "parse_config",
    "parse_size",
    "save_config",
]
