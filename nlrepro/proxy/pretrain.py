"""Frame pre-training: the proxy's stand-in for ImageNet (``model.pretrained: proxy-frames``).

Why: the paper adds non-local blocks to a network pre-trained on ImageNet (Sec. 4.1), so a
new block starts on features that already see objects.  The proxy has no ImageNet, so it makes
the same start from its own image task: single frames in which the cue and the probe are both
on screen, labelled with what they show (cue colour × ring colour × core: 18 classes), as
ImageNet labels objects.  The frame task teaches the objects, not the relation: relating cue
and probe across time is left to the video model.  Labelling the frames with the clip's class
instead (``pretrain_target: label``) teaches the match within a frame, and deeper features
then lose the ring's colour (docs/PROXY.md).

The 2D network is the profile's own C2D backbone (every kernel after the stem is 1×k×k),
trained on one-frame clips and saved as a 2D ResNet state dict with torchvision's names, so it
enters a run through the same inflation code as ImageNet weights (an I3D run inflates it to
3×k×k).  It is trained once per (backbone, task, recipe), cached beside ``data.root``, seeded,
and written atomically.  The caller (the training driver, the sweep) calls
``ensure_frame_pretrained`` and hands the file to the model; building a model never trains.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import re
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nlrepro.choices import PROXY_FRAMES, SPLITS
from nlrepro.config import NonLocalConfig, RunConfig, check_proxy_config
from nlrepro.models.resnet3d import build_model
from nlrepro.proxy.dataset import config_record
from nlrepro.proxy.generator import CORE_PALETTE, KEY_PALETTE, render_clip
from nlrepro.utils import atomic_write_bytes, atomic_write_json

log = logging.getLogger(__name__)

# The recipe (bump ``version`` when the training loop changes: cached weights are then retrained).
RECIPE = {"version": 1, "batch_size": 16, "lr": 2e-3, "weight_decay": 0.05, "held_out": 500}
FOLDER = "pretrained"
_STAGE = re.compile(r"^res([2-5])\.")


def uses_frames(cfg: RunConfig) -> bool:
    return cfg.model.pretrained == PROXY_FRAMES


def identity(cfg: RunConfig) -> dict[str, Any]:
    """Everything the weights depend on: 2D backbone, frame task, recipe."""
    check_proxy_config(cfg.data.proxy)  # config.validate made sure there is one
    m = cfg.model
    task = config_record(cfg.data.proxy)
    for key in ("num_train", "num_val", "num_test", "frames", "crf", "persist_cue"):
        task["proxy"].pop(key, None)  # frames are drawn in memory; the video sizes do not matter
    backbone = {k: getattr(m, k) for k in ("depth", "stage_blocks", "width", "stem_kernel",
                                           "stem_stride", "num_classes")}
    p = cfg.data.proxy
    return {"target": p.pretrain_target, "recipe": RECIPE, "backbone": backbone, "task": task,
            "images": p.pretrain_images, "epochs": p.pretrain_epochs,
            "mean": cfg.data.mean, "std": cfg.data.std}


def weights_path(cfg: RunConfig) -> Path:
    """``<data.root>/../pretrained/frames_<hash>.pt``: beside the videos, not inside their
    folder (that one is written in one piece by the generator)."""
    blob = json.dumps(identity(cfg), sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(blob.encode()).hexdigest()[:12]
    return Path(cfg.data.root).parent / FOLDER / f"frames_{digest}.pt"


# ---- the image task -----------------------------------------------------------------------
def frame_classes(target: str, clip_classes: int) -> int:
    """Classes of the frame task: every (cue colour, ring colour, core) for ``objects``."""
    return len(KEY_PALETTE) ** 2 * len(CORE_PALETTE) if target == "objects" else clip_classes


def frame_target(info: Any, target: str) -> int:
    """A frame's class: what it shows (``objects``) or the clip's label (``label``)."""
    if target == "label":
        return int(info.label)
    return (info.cue_colour * len(KEY_PALETTE) + info.probe_key) * len(CORE_PALETTE) \
        + info.probe_core


def render_frames(p: Any, n: int, stream: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` frames ``uint8 (n, H, W, 3)`` with cue and probe both visible, and their classes
    (``frame_target`` of ``p.pretrain_target``).

    Each frame comes from its own generator (``SeedSequence([seed, 3 + stream, i])``: streams
    apart from the train/val/test clips), so the set does not depend on how it is split up.
    """
    frames, labels = [], []
    for i in range(n):
        rng = np.random.default_rng(np.random.SeedSequence([p.seed, len(SPLITS) + stream, i]))
        clip, info = render_clip(rng, p, persist_cue=True)
        t = int(rng.integers(info.probe_start, clip.shape[0]))
        frames.append(clip[t])
        labels.append(frame_target(info, p.pretrain_target))
    return np.stack(frames), np.asarray(labels, np.int64)


def _to_tensor(frames: np.ndarray, mean: float, std: float) -> torch.Tensor:
    """uint8 (n, H, W, 3) -> normalised float (n, 3, 1, H, W): one-frame clips."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div_(255)
    return ((x - mean) / std).unsqueeze(2)


# ---- the 2D network -----------------------------------------------------------------------
def backbone_2d(cfg: RunConfig) -> nn.Module:
    """The run's backbone as C2D without NL blocks, its temporal pools made 1-frame.

    Pools hold no parameters, so the state dict is exactly the C2D backbone's.
    """
    classes = frame_classes(cfg.data.proxy.pretrain_target, cfg.model.num_classes)
    m = dataclasses.replace(cfg.model, arch="c2d", pretrained=None, frozen_bn=False,
                            dropout=0.0, nonlocal_=NonLocalConfig(), num_classes=classes)
    model = build_model(m, load_pretrained=False)
    if m.stem_pool:
        model.pool1 = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2))
    model.pool2 = nn.Identity()
    return model


def to_2d_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """ResNet3D C2D -> torchvision-named 2D state dict (``res{k}`` -> ``layer{k-1}``, no FC)."""
    out = {}
    for key, value in model.state_dict().items():
        if key.startswith("fc."):
            continue
        if value.dim() == 5:
            if value.shape[2] != 1:
                raise ValueError(f"{key}: temporal kernel {value.shape[2]} is not 2D")
            value = value[:, :, 0]
        out[_STAGE.sub(lambda g: f"layer{int(g.group(1)) - 1}.", key)] = value.clone()
    return out


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    bn = {id(p) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
          for p in m.parameters(recurse=False)}
    return [{"params": [p for p in model.parameters() if id(p) not in bn],
             "weight_decay": weight_decay},
            {"params": [p for p in model.parameters() if id(p) in bn], "weight_decay": 0.0}]


def train_frames(cfg: RunConfig) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Train the 2D backbone on the frame task; returns (2D state dict, metrics)."""
    p, d = cfg.data.proxy, cfg.data
    t0 = time.time()
    frames, labels = render_frames(p, p.pretrain_images)
    x, y = _to_tensor(frames, d.mean, d.std), torch.from_numpy(labels)
    xh, yh = render_frames(p, RECIPE["held_out"], stream=1)
    xh = _to_tensor(xh, d.mean, d.std)
    gen = torch.Generator().manual_seed(p.seed)
    torch.manual_seed(p.seed)
    model = backbone_2d(cfg)
    opt = torch.optim.AdamW(_param_groups(model, RECIPE["weight_decay"]), lr=RECIPE["lr"])
    bs, correct, seen = RECIPE["batch_size"], 0, 0
    for epoch in range(p.pretrain_epochs):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        correct = seen = 0
        for i in range(0, len(order) - bs + 1, bs):
            idx = order[i:i + bs]
            xb = x[idx]
            flip = torch.rand(len(idx), generator=gen) < 0.5  # the labels are flip-invariant
            xb[flip] = xb[flip].flip(-1)
            out = model(xb)
            loss = F.cross_entropy(out, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            correct += int((out.argmax(1) == y[idx]).sum())
            seen += len(idx)
        log.info("frame pre-training epoch %d/%d: train top-1 %.1f%%", epoch + 1,
                 p.pretrain_epochs, 100 * correct / max(seen, 1))
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(xh[i:i + 250]).argmax(1) for i in range(0, len(xh), 250)])
    metrics = {"train_top1": 100 * correct / max(seen, 1),
               "held_out_top1": 100 * float((pred == torch.from_numpy(yh)).float().mean()),
               "seconds": time.time() - t0}
    return to_2d_state_dict(model), metrics


def ensure_frame_pretrained(cfg: RunConfig) -> Path:
    """The cached 2D weights for ``cfg``; trained (once) when missing."""
    path = weights_path(cfg)
    if path.is_file():
        return path
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    log.info("frame pre-training (%d images x %d epochs) -> %s", cfg.data.proxy.pretrain_images,
             cfg.data.proxy.pretrain_epochs, path)
    # The caller's RNG state is left as it was: a run must not depend on whether the weights
    # were trained in its own process or found in the cache.
    with torch.random.fork_rng(devices=[]):
        state, metrics = train_frames(cfg)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    # Parallel trainers write the same bytes; either rename wins.
    atomic_write_bytes(path, buffer.getvalue())
    atomic_write_json(path.with_suffix(".json"), {"identity": identity(cfg), **metrics})
    log.info("frame pre-training: held-out top-1 %.1f%% in %.0f s", metrics["held_out_top1"],
             metrics["seconds"])
    return path


def ensure_all(configs: Iterable[RunConfig]) -> None:
    """Pre-train every distinct backbone a sweep needs, before its runs start in parallel."""
    done: set[Path] = set()
    for cfg in configs:
        if uses_frames(cfg) and weights_path(cfg) not in done:
            done.add(ensure_frame_pretrained(cfg))


def frames_weights(cfg: RunConfig) -> Path | None:
    """The frame pre-trained weights a run of ``cfg`` starts from (trained once when missing),
    or None when it does not use them: what the caller passes to ``VideoClassifier``."""
    return ensure_frame_pretrained(cfg) if uses_frames(cfg) else None
