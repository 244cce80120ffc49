"""Typed run configuration, profiles and ``--set`` overrides.

One dataclass tree describes a run completely; a profile YAML
(``experiments/profiles/<name>.yaml``) fills it and ``--set section.key=value``
overrides it.  Everything is validated *before* anything runs, and every error
names the key, the bad value and what is allowed.  Config files are data:
they are read with ``yaml.safe_load`` and values are never evaluated.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

PROFILE_DIR = Path(__file__).resolve().parent.parent / "experiments" / "profiles"

ARCHS = ("c2d", "i3d_3x1x1", "i3d_3x3x3")
DEPTHS = (50, 101)
INSTANTIATIONS = ("gaussian", "embedded_gaussian", "dot_product", "concatenation")
SCOPES = ("spacetime", "space", "time")
STAGES = ("res2", "res3", "res4", "res5")
NORMS = ("bn", "none")
LIST_FORMATS = ("path_label", "kinetics_csv")
DECODERS = ("decord", "pyav")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("step", "cosine")
LAUNCHERS = ("local", "slurm")


class ConfigError(ValueError):
    """A bad key or value; the message names it and the valid choices."""


# model.pretrained value for the proxy's own frame pre-training (nlrepro/pretrain.py).
PROXY_FRAMES = "proxy-frames"


@dataclass
class NonLocalConfig:
    """Where and which non-local blocks (paper Sec. 3-4, Table 2a-d)."""

    instantiation: str = "embedded_gaussian"
    # Stages that hold blocks; None lets ``blocks`` choose (1 -> res4, 5/10 -> res3+res4).
    stages: list[str] | None = None
    # 0 = none; 1, 5, 10 = the paper's placements; or explicit indices per stage,
    # e.g. {"res3": [1, 3], "res4": [1, 3, 5]}.
    blocks: Union[int, dict[str, list[int]]] = 0
    scope: str = "spacetime"
    subsample: bool = True
    scale: bool = True
    norm: str = "bn"
    # Affinity computed inside groups of k frames, per stage (128-frame res3 trick).
    temporal_groups: dict[str, int] = field(default_factory=dict)
    # False forces the plain N x M reference kernels (benchmarks, debugging).
    fast: bool = True
    # A narrow network (proxy) may hold fewer residual blocks than a 5/10-block placement
    # needs; True puts a block after every residual block of such a stage instead of failing
    # (the table footnote lists where the blocks went).  The paper's networks never need it.
    fill_small_stages: bool = False
    # Initial γ of the BN after W_z (VNL NONLOCAL.BN_INIT_GAMMA).  0 = the paper: a new block
    # is the identity.  The proxy uses 1: with γ = 0, W_z gets no gradient until γ has grown,
    # and on the small task that start took thousands of steps (docs/PROXY.md).
    bn_init_gamma: float = 0.0


@dataclass
class ModelConfig:
    """Backbone (paper Table 1) plus the proxy's narrow variant."""

    arch: str = "c2d"
    depth: int = 50
    num_classes: int = 400
    # Residual blocks per stage; None = the depth's (3,4,6,3) / (3,4,23,3).
    stage_blocks: list[int] | None = None
    # Inner width of res2 (64 in the paper); stages double it.
    width: int = 64
    # Stem: conv1 spatial kernel and stride, conv1 temporal stride, pool1 on/off.
    stem_kernel: int = 7
    stem_stride: int = 2
    stem_temporal_stride: int = 2
    stem_pool: bool = True
    # Temporal max-pool after res2 (paper: after res2; VNL: kernel 2).
    pool2: bool = True
    dropout: float = 0.5
    # None, "imagenet" (torchvision weights), "proxy-frames" (the proxy's stand-in for ImageNet:
    # the same 2D network trained once on single proxy frames, nlrepro.pretrain) or a path to
    # a 2D ResNet state dict.
    pretrained: str | None = None
    # Replace BN by frozen affine layers (128-frame fine-tuning, Table 2g).
    frozen_bn: bool = False
    nonlocal_: NonLocalConfig = field(default_factory=NonLocalConfig)


@dataclass
class ProxyConfig:
    """Size of the synthetic proxy dataset (see docs/PROXY.md)."""

    num_train: int = 2000
    num_val: int = 500
    num_test: int = 500
    frames: int = 8
    size: int = 32
    seed: int = 0
    # Side of the cue square (pixels), pixel noise std, moving distractor squares,
    # libx264 constant rate factor.
    cue_size: int = 16
    noise: float = 8.0
    distractors: int = 2
    crf: int = 20
    # Fraction of clips with decoys: a probe-like ring during the cue, a cue-like square
    # during the probe, so that averaging over time cannot tell cue from decoy (docs/PROXY.md).
    decoys: float = 0.0
    # Curriculum: this fraction of *training* clips keeps the cue on screen to the end, so cue
    # and probe share frames there; validation and test clips never do (docs/PROXY.md).
    persist_cue: float = 0.0
    # Frame pre-training (model.pretrained: proxy-frames): images and epochs of the 2D task,
    # and what a frame is labelled with: "objects", what is in it (cue colour x ring colour x
    # core, 18 classes), as ImageNet labels objects; or "label", the clip's class (sessions
    # 3-5: deeper features then drop the ring colour, docs/PROXY.md Session 6).
    pretrain_images: int = 3000
    pretrain_epochs: int = 10
    pretrain_target: str = "objects"
    # Which event the trained blocks look *from* follows which one covers more positions
    # (docs/PROXY.md, Session 6): more identical probes and a shorter cue (base frames) make
    # probe -> cue the dominant lookup, at a cost in how reliably 1-block models learn.
    probe_copies: int = 1
    cue_length: int = 2


@dataclass
class DataConfig:
    """Where the videos are and what the paper does to them (Sec. 4.1)."""

    root: str = "data/proxy"
    train_list: str = "train.csv"
    val_list: str = "val.csv"
    test_list: str = "test.csv"
    list_format: str = "path_label"
    separator: str = " "
    class_index: str | None = None
    exclude: str | None = None
    frames: int = 32
    stride: int = 2
    train_scale: list[int] = field(default_factory=lambda: [256, 320])
    crop: int = 224
    test_scale: int = 256
    test_crop: int = 256
    num_clips: int = 10
    num_crops: int = 3
    flip: bool = True
    mean: float = 0.45
    std: float = 0.225
    batch_size: int = 8
    num_workers: int = 8
    max_retries: int = 10
    # Decode each video once through the real reader and keep the frames (small datasets).
    cache_decoded: bool = False
    # Video reader: decord, or PyAV where decord has no wheels (same frames; nlrepro/data/video.py).
    decoder: str = "decord"
    # Generate the proxy dataset into ``root`` when it is missing.
    proxy: ProxyConfig | None = None


@dataclass
class OptimConfig:
    """Optimiser and schedule (paper: SGD 0.01, x0.1 at 150k/300k of 400k)."""

    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    bn_weight_decay: float = 0.0
    schedule: str = "step"
    # Fractions of the run at which the lr is multiplied by ``gamma``.
    milestones: list[float] = field(default_factory=lambda: [0.375, 0.75])
    gamma: float = 0.1
    warmup_epochs: float = 0.0


@dataclass
class TrainerConfig:
    """Passed through to ``lightning.Trainer``."""

    max_epochs: int = 109
    max_steps: int = -1
    accelerator: str = "auto"
    devices: Union[int, str] = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    channels_last: bool = False
    compile: bool = False
    deterministic: bool = False
    threads: int = 0
    log_every_n_steps: int = 50
    check_val_every_n_epoch: int = 1
    limit_train_batches: Union[int, float] = 1.0
    limit_val_batches: Union[int, float] = 1.0
    limit_test_batches: Union[int, float] = 1.0
    # Recompute BN statistics on this many training batches before testing (0 = off).
    precise_bn_batches: int = 0
    # Initialise from another run's checkpoint (Table 2g starts from the 32-frame run).
    init_from: str | None = None


@dataclass
class LauncherConfig:
    """Where a sweep's runs execute: this machine or a SLURM cluster (submitit)."""

    name: str = "local"
    # Local launcher: runs trained side by side in worker processes (1 = in this process).
    # On a 2-core laptop two single-thread runs (trainer.threads: 1) beat one two-thread run.
    local_workers: int = 1
    partition: str | None = None
    account: str | None = None
    constraint: str | None = None
    # 0 = CPU job. With GPUs SLURM starts one task per GPU (trainer.devices of them),
    # as Lightning's SLURM environment expects; cpus_per_task is per task, so per GPU.
    gpus_per_node: int = 0
    cpus_per_task: int = 2
    mem_gb: int = 0  # 0 = the cluster's default
    timeout_min: int = 60
    # At most this many runs of one array at a time.
    array_parallelism: int = 32
    # USR2 this long before the time limit: submitit requeues the run, which resumes.
    signal_delay_s: int = 120
    # Requeues after time-outs (preemptions are not counted).
    max_requeues: int = 10


@dataclass
class RunConfig:
    """A complete run: everything that determines its result, plus where it goes."""

    profile: str = "proxy"
    seed: int = 0
    output_dir: str = "results/proxy/adhoc"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    launcher: LauncherConfig = field(default_factory=LauncherConfig)


# ``nonlocal`` is a Python keyword, so the field is ``nonlocal_`` in code and
# ``nonlocal`` in every file and on the command line.
_ALIASES = {"nonlocal": "nonlocal_"}
_ALIASES_BACK = {v: k for k, v in _ALIASES.items()}

# Keys that describe where/how a run executes, not what it computes: left out of the run id.
NON_IDENTITY_KEYS = ("output_dir", "launcher", "trainer.devices", "trainer.num_nodes",
                     "trainer.strategy", "trainer.accelerator", "trainer.threads",
                     "data.num_workers", "data.root", "data.decoder")

CHOICES: dict[str, tuple] = {
    "model.arch": ARCHS,
    "model.depth": DEPTHS,
    "model.nonlocal.instantiation": INSTANTIATIONS,
    "model.nonlocal.scope": SCOPES,
    "model.nonlocal.norm": NORMS,
    "data.list_format": LIST_FORMATS,
    "data.decoder": DECODERS,
    "optim.optimizer": OPTIMIZERS,
    "optim.schedule": SCHEDULES,
    "launcher.name": LAUNCHERS,
}


def _field_name(key: str) -> str:
    return _ALIASES.get(key, key)


def _public_name(name: str) -> str:
    return _ALIASES_BACK.get(name, name)


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


def to_dict(cfg: Any) -> dict:
    """The config as plain data, with public key names (``nonlocal``)."""
    if dataclasses.is_dataclass(cfg):
        return {_public_name(f.name): to_dict(getattr(cfg, f.name))
                for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


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
        from nlrepro.user_errors import yaml_problem

        raise ConfigError(f"{where}: {yaml_problem(err)}") from None


def list_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def load_profile(name: str) -> dict:
    """A profile's plain data (``experiments/profiles/<name>.yaml``)."""
    path = PROFILE_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown profile {name!r}; valid profiles: {', '.join(list_profiles())}")
    data = read_yaml(path.read_text(), str(path)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"profile {path} must be a mapping")
    data["profile"] = name
    return data


def load_config(profile: str = "proxy", overrides: dict | None = None,
                sets: list[str] | None = None) -> RunConfig:
    """Profile + overrides + ``--set`` items -> a validated RunConfig."""
    data = load_profile(profile)
    if overrides:
        data = merge(data, overrides)
    if sets:
        data = merge(data, parse_set(sets))
    return from_dict(data)


def get(cfg: Any, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = getattr(node, _field_name(part))
    return node


def _check_choice(cfg: RunConfig, key: str) -> None:
    value = get(cfg, key)
    if value not in CHOICES[key]:
        raise ConfigError(f"{key}: {value!r} is not valid; choose one of {list(CHOICES[key])}")


def validate(cfg: RunConfig) -> None:
    """Reject impossible configs before any work starts."""
    from nlrepro.limits import check_fit, check_ranges

    check_ranges(cfg)
    for key in CHOICES:
        _check_choice(cfg, key)
    nl = cfg.model.nonlocal_
    if nl.stages is not None:
        for s in nl.stages:
            if s not in STAGES:
                raise ConfigError(
                    f"model.nonlocal.stages: {s!r} is not valid; choose from {list(STAGES)}")
    if isinstance(nl.blocks, int) and nl.blocks < 0:
        raise ConfigError(f"model.nonlocal.blocks: {nl.blocks} must be >= 0")
    for s, k in nl.temporal_groups.items():
        if s not in STAGES or k < 1:
            raise ConfigError(f"model.nonlocal.temporal_groups: {s}={k} invalid; "
                              f"stages {list(STAGES)}, group >= 1")
    d = cfg.data
    if d.frames < 1 or d.stride < 1:
        raise ConfigError(f"data.frames/data.stride must be >= 1, got {d.frames}/{d.stride}")
    if len(d.train_scale) != 2 or d.train_scale[0] > d.train_scale[1]:
        raise ConfigError(f"data.train_scale: {d.train_scale} must be [min, max]")
    if d.crop > d.train_scale[0]:
        raise ConfigError(f"data.crop {d.crop} is larger than the smallest train scale "
                          f"{d.train_scale[0]}")
    if d.test_crop > d.test_scale:
        raise ConfigError(f"data.test_crop {d.test_crop} is larger than data.test_scale "
                          f"{d.test_scale}")
    if nl.scope == "time" and _has_nonlocal(nl) and d.frames < 2:
        raise ConfigError("model.nonlocal.scope: 'time' needs clips of at least 2 frames "
                          f"(data.frames={d.frames})")
    for m in cfg.optim.milestones:
        if not 0 < m < 1:
            raise ConfigError(f"optim.milestones: {m} must be a fraction in (0, 1)")
    if cfg.launcher.name == "slurm" and cfg.launcher.timeout_min < 1:
        raise ConfigError("launcher.timeout_min must be >= 1")
    if cfg.model.pretrained == PROXY_FRAMES and d.proxy is None:
        raise ConfigError("model.pretrained: 'proxy-frames' needs the proxy data (data.proxy); "
                          "valid for other data: null, 'imagenet' or a 2D state-dict file")
    if d.proxy is not None:
        from nlrepro.data.proxy import check_proxy_config
        check_proxy_config(d.proxy)
    check_fit(cfg)
    # Placement feasibility needs the network's stage sizes: checked by the model code.
    from nlrepro.models.placement import compile_placement, stage_blocks_of
    compile_placement(nl.blocks, nl.stages, stage_blocks_of(cfg.model), cfg.model.depth,
                      fill=nl.fill_small_stages)


def _has_nonlocal(nl: NonLocalConfig) -> bool:
    return bool(nl.blocks) if isinstance(nl.blocks, int) else any(nl.blocks.values())


def identity(cfg: RunConfig) -> dict:
    """The part of the config that determines the result (hashed into the run id)."""
    data = to_dict(cfg)
    # Hash the network that is built, not how it was asked for: (blocks, stages) become the
    # compiled placement, and the NL settings of a network without NL blocks are dropped.
    from nlrepro.models.placement import compile_placement, stage_blocks_of

    nl = cfg.model.nonlocal_
    placement = compile_placement(nl.blocks, nl.stages, stage_blocks_of(cfg.model),
                                  cfg.model.depth, fill=nl.fill_small_stages)
    data["model"]["nonlocal"].pop("fill_small_stages", None)  # the placement says it all
    data["model"]["nonlocal"] = ({**data["model"]["nonlocal"], "blocks": placement,
                                  "stages": None} if placement else {"blocks": {}})
    if data["data"].get("proxy"):
        from nlrepro.data.proxy import recorded_fields

        data["data"]["proxy"] = recorded_fields(cfg.data.proxy)
    if cfg.model.pretrained == PROXY_FRAMES:
        # The run depends on the frame pre-trained weights: hash what they depend on.
        from nlrepro.pretrain import identity as frames_identity

        data["model"]["pretrained"] = {PROXY_FRAMES: frames_identity(cfg)}
    # The data's content, not the names of its files (nlrepro/data_identity.py).
    from nlrepro.data_identity import data_identity

    data["data"].update(data_identity(cfg.data, cfg.model.num_classes))
    for key in NON_IDENTITY_KEYS:
        parts = key.split(".")
        node = data
        for p in parts[:-1]:
            node = node[p]
        node.pop(parts[-1], None)
    return data


def config_hash(cfg: RunConfig) -> str:
    """Stable short hash of the result-determining config."""
    blob = json.dumps(identity(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def save_config(cfg: RunConfig, path: Path) -> None:
    from nlrepro.utils import atomic_write_text
    atomic_write_text(Path(path), yaml.safe_dump(to_dict(cfg), sort_keys=False))


def read_config(path: Path) -> RunConfig:
    data = read_yaml(Path(path).read_text(), str(path))
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a run config must be a mapping, got {type(data).__name__}")
    return from_dict(data)
