"""Profiles, ``--set`` overrides and config files -> a validated ``RunConfig``.

A profile YAML (``experiments/profiles/<name>.yaml``) fills the dataclass tree and
``--set section.key=value`` overrides it.  Config files are data: they are read with
``yaml.safe_load`` and values are never evaluated.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import types
import typing
from pathlib import Path
from typing import Any, Union

import yaml

from nlrepro.choices import DEFAULT_PROFILE
from nlrepro.config.schema import ModelConfig, RunConfig, _public_name, to_dict
from nlrepro.config.validate import validate
from nlrepro.errors import ConfigError, yaml_problem
from nlrepro.utils import atomic_write_text

PROFILE_DIR = Path(__file__).resolve().parents[2] / "experiments" / "profiles"
# YAML 1.1 (PyYAML) reads "1e-4" as a string (it wants "1.0e-4"); a float key takes it too.
EXPONENT_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; convert int->float only."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        errors = []
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{key}: {value!r} is not a valid {_type_name(tp)}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{key}: expected null, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return _build(tp, value, key)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        ktp, vtp = typing.get_args(tp)
        return {_coerce(k, ktp, key): _coerce(v, vtp, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and EXPONENT_FLOAT.fullmatch(value.strip()):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {tp}")  # pragma: no cover


def _build(cls: type, values: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {_public_name(f.name): f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(
                f"unknown key {full!r}; valid keys here: {', '.join(sorted(names))}")
        name = names[key]
        kwargs[name] = _coerce(value, hints[name], full)
    return cls(**kwargs)


def _stage_blocks_for_depth(values: dict) -> dict:
    """``model.stage_blocks`` may map depths to sizes (``{50: [...], 101: [...]}``), as the
    proxy profile does so that its R101 is deeper than its R50, as the paper's is; the entry
    of ``model.depth`` is kept, so a run's saved (and hashed) config holds a plain list."""
    model = values.get("model")
    sizes = model.get("stage_blocks") if isinstance(model, dict) else None
    if not isinstance(sizes, dict):
        return values
    depth = model.get("depth", ModelConfig.depth)
    try:
        by_depth = {int(k): v for k, v in sizes.items()}
    except (TypeError, ValueError):
        raise ConfigError(f"model.stage_blocks: {sizes!r} is not valid; key a mapping by depth, "
                          f"e.g. {{50: [1, 2, 3, 1], 101: [1, 2, 6, 1]}}") from None
    if depth not in by_depth:
        raise ConfigError(f"model.stage_blocks: no entry for model.depth={depth!r}; the mapping "
                          f"gives depths {sorted(by_depth)}")
    return merge(values, {"model.stage_blocks": by_depth[depth]})


def from_dict(values: dict) -> RunConfig:
    """Build and validate a RunConfig from plain data."""
    cfg = _build(RunConfig, _stage_blocks_for_depth(values))
    validate(cfg)
    return cfg


def _set_path(tree: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(parts[:i + 1])} is not a section; cannot set {key!r}")
        node = child
    node[parts[-1]] = value


def merge(base: dict, overrides: dict) -> dict:
    """Deep-merge ``overrides`` (possibly with dotted keys) into a copy of ``base``."""
    out = json.loads(json.dumps(base))
    for key, value in overrides.items():
        if isinstance(value, dict) and "." not in key and isinstance(out.get(key), dict) \
                and not _is_leaf_mapping(key):
            out[key] = merge(out[key], value)
        else:
            _set_path(out, key, value)
    return out


def _is_leaf_mapping(key: str) -> bool:
    return key in ("blocks", "temporal_groups", "stage_blocks")


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """``["a.b=1", "c=[1,2]"]`` -> ``{"a.b": 1, "c": [1, 2]}``; values are YAML scalars."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        out[key.strip()] = read_yaml(raw, f"--set {key.strip()}={raw}") if raw.strip() else ""
    return out


def read_yaml(text: str, where: str) -> Any:
    """Plain YAML data (``safe_load``); a syntax error or an object tag becomes a ConfigError
    naming ``where`` (a file or a ``--set`` item)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{where}: {yaml_problem(err)}") from None
class _SetItems(argparse.Action):
    """``--set a=1 b=2`` and ``--set a=1 --set b=2`` alike: every item joins one list.

    An item without ``=`` is a usage error naming it (a positional argument written after
    ``--set`` would otherwise be swallowed as an override)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        for item in values:
            if "=" not in item:
                parser.error(f"argument --set: expected KEY=VALUE, got {item!r} (give positional "
                             "arguments before --set, or end the --set list with --)")
        items = list(getattr(namespace, self.dest, None) or [])
        setattr(namespace, self.dest, items + list(values))


def add_set_argument(parser: argparse.ArgumentParser,
                     help: str = "override config keys, e.g. model.depth=101") -> None:
    """The one ``--set`` option of every command: ``args.sets`` is a list of KEY=VALUE."""
    parser.add_argument("--set", dest="sets", action=_SetItems, nargs="+", default=[],
                        metavar="KEY=VALUE", help=f"{help} (repeatable; several per --set)")


def add_profile_argument(parser: argparse.ArgumentParser,
                         help: str = "experiments/profiles/<name>.yaml",
                         default: str | None = DEFAULT_PROFILE) -> None:
    """The one ``--profile`` option of every command. Its help names the default and every
    profile, so the choices show in ``--help`` without opening experiments/profiles/."""
    shown = f"default: {default}; " if default else ""
    parser.add_argument("--profile", default=default, metavar="NAME",
                        help=f"{help} ({shown}one of {', '.join(list_profiles())})")


def list_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def _profile_data(name: str) -> dict:
    path = PROFILE_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown profile {name!r}; valid profiles: {', '.join(list_profiles())}")
    data = read_yaml(path.read_text(), str(path)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"profile {path} must be a mapping")
    return data


def profile_family(name: str) -> str:
    """The profile a profile ``extends`` (transitively), or itself: grids key their seeds and
    per-profile settings by it, so a variant of the proxy runs the proxy's grid."""
    seen = [name]
    while (parent := _profile_data(seen[-1]).get("extends")) is not None:
        if parent in seen:
            raise ConfigError(f"profile {name!r}: 'extends' loops ({' -> '.join(seen + [parent])})")
        seen.append(str(parent))
    return seen[-1]


def load_profile(name: str) -> dict:
    """A profile's plain data (``experiments/profiles/<name>.yaml``), merged over the profile
    it ``extends``, if any."""
    data = _profile_data(name)
    parent = data.pop("extends", None)
    if parent is not None:
        profile_family(name)  # a loop is one clear line
        data = merge(load_profile(str(parent)), data)
    data["profile"] = name
    return data


def load_config(profile: str = DEFAULT_PROFILE, overrides: dict | None = None,
                sets: list[str] | None = None) -> RunConfig:
    """Profile + overrides + ``--set`` items -> a validated RunConfig."""
    data = load_profile(profile)
    if overrides:
        data = merge(data, overrides)
    if sets:
        data = merge(data, parse_set(sets))
    return from_dict(data)


def save_config(cfg: RunConfig, path: Path) -> None:
    atomic_write_text(Path(path), yaml.safe_dump(to_dict(cfg), sort_keys=False))


def read_config(path: Path) -> RunConfig:
    data = read_yaml(Path(path).read_text(), str(path))
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a run config must be a mapping, got {type(data).__name__}")
    return from_dict(data)
