"""The run configuration as one dataclass tree: every key a profile or ``--set`` may give.

``nonlocal`` is a Python keyword, so its field is ``nonlocal_`` in code and ``nonlocal`` in
every file and on the command line (``to_dict`` and ``get`` translate).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Union

from nlrepro.choices import INSTANTIATIONS


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
    # is the identity.  The proxy uses 1: with γ = 0, W_z gets no gradient until γ has grown
    # (docs/PROXY.md).
    bn_init_gamma: float = 0.0
    # Concatenation only: None = w_f without bias (mmcv; the paper gives no code).  A number
    # adds a bias to w_f that starts at this value, so every pair (i, j) starts on the active
    # side of f's ReLU.  The function class is unchanged (θ's and φ's biases can already add a
    # constant); only the start is.  Under Adam, whose steps do not shrink with the gradient,
    # a bias-free w_f at VNL's N(0, 0.01) init can drift to ReLU(·) = 0 for every pair within
    # the first steps, after which no gradient reaches θ, φ or w_f (docs/PROXY.md).
    concat_offset: float | None = None


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
    # the same 2D network trained once on single proxy frames, nlrepro.proxy.pretrain) or a path to
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
    # core, 18 classes), as ImageNet labels objects; or "label", the clip's class (deeper
    # features then drop the ring colour, docs/PROXY.md).
    pretrain_images: int = 3000
    pretrain_epochs: int = 10
    pretrain_target: str = "objects"
    # Which event the trained blocks look *from* follows which one covers more positions
    # (docs/PROXY.md): more identical probes and a shorter cue (base frames) make
    # probe -> cue the dominant lookup, at a cost in how reliably 1-block models learn.
    probe_copies: int = 1
    cue_length: int = 2
    # Which task is drawn: "cuematch" (generator v5, one relation), "relations" (v6: a
    # relation kind per clip, nlrepro/proxy/relations.py) or "timeline" (v7: v6's kinds and
    # an early one on a 32-frame timeline, nlrepro/proxy/timeline.py; docs/PROXY.md).
    task: str = "cuematch"


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
    # Video reader: decord, or PyAV where decord has no wheels (same frames; data/video.py).
    decoder: str = "decord"
    # Generate the proxy dataset into ``root`` when it is missing.
    proxy: ProxyConfig | None = None


ADAMW_EPS = 1e-8


@dataclass
class OptimConfig:
    """Optimiser and schedule (paper: SGD 0.01, x0.1 at 150k/300k of 400k)."""

    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    bn_weight_decay: float = 0.0
    # AdamW's epsilon (PyTorch's default); SGD ignores it.
    eps: float = ADAMW_EPS
    schedule: str = "step"
    # Fractions of the run at which the lr is multiplied by ``gamma``.
    milestones: list[float] = field(default_factory=lambda: [0.375, 0.75])
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    # Epochs (counted in optimizer steps) during which f's parameters (θ, φ, concatenation's
    # w_f) get no update while the rest trains. Adam steps every weight by about lr whatever
    # the gradient's size, so while W_z's BN γ is near 0 the embeddings drift on noise, and
    # concatenation's f can fall below its ReLU for good (docs/PROXY.md). A run that starts
    # from another's blocks (trainer.init_from) holds nothing.
    embed_hold_epochs: float = 0.0
    # The instantiations whose f is held (the rest train from the first step). Not in the run
    # id: a network has one instantiation, so the list only decides whether the hold applies.
    embed_hold_instantiations: list[str] = field(default_factory=lambda: list(INSTANTIATIONS))


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
    # With init_from, into a network whose NL blocks have no BN (model.nonlocal.norm: none,
    # Table 2g): True folds each parent block's W_z BN into W_z, so the fine-tuning starts
    # from the parent's function, as the backbone's BNs are folded into frozen affine layers.
    # False drops the parent's W_z BN and keeps its W_z as it was, which rescales every
    # block's output at the start (by σ/γ per channel: 10x and more at γ = 0.1).
    init_fold_nonlocal_bn: bool = False
    # BN statistics over the global batch under DDP (SyncBatchNorm). The paper's per-GPU BN
    # (8 clips each) is false; true makes W processes at batch b/W train as 1 process at b.
    sync_batchnorm: bool = False
    # Where metrics go (choices.LOGGERS): csv (required, metrics.csv), tensorboard on request
    # ([csv, tensorboard]).  Not part of the run id.  Off by default: Lightning writes the
    # checkpoint before it logs that epoch's val metrics, and a run killed in between resumes
    # without that row; the slower TensorBoard flush made that window wider.
    loggers: list[str] = field(default_factory=lambda: ["csv"])


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
    # SLURM tasks (= DDP ranks) per node; 0 = one per GPU (trainer.devices), or 1 for a CPU
    # job. A multi-process CPU job sets it to trainer.devices (tests/slurm/test_multitask.py).
    tasks_per_node: int = 0
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


def holds_f(cfg: RunConfig) -> bool:
    """Whether ``optim.embed_hold_epochs`` applies: a hold is set, the network's instantiation
    is one of ``optim.embed_hold_instantiations``, and its blocks start untrained (a run that
    loads them, ``trainer.init_from`` as in Table 2g, starts from a trained f)."""
    o = cfg.optim
    return (o.embed_hold_epochs > 0 and not cfg.trainer.init_from
            and cfg.model.nonlocal_.instantiation in o.embed_hold_instantiations)


_ALIASES = {"nonlocal": "nonlocal_"}
_ALIASES_BACK = {v: k for k, v in _ALIASES.items()}

def _field_name(key: str) -> str:
    return _ALIASES.get(key, key)


def _public_name(name: str) -> str:
    return _ALIASES_BACK.get(name, name)


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


def get(cfg: Any, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = getattr(node, _field_name(part))
    return node
