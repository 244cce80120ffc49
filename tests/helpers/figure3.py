"""Shared by the Figure 3 tests: hand-set models, Eq. 1 written out, checkpoints, runs."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from nlrepro.cli import main as cli
from nlrepro.config import load_config, to_dict
from nlrepro.figure3 import capture as cap
from nlrepro.figure3 import command as cmd
from nlrepro.models.non_local import NonLocalBlock
from nlrepro.run.module import VideoClassifier
from nlrepro.sweep import expand, grid_path, load_grid

SMALL_PROXY = ["data.proxy.num_train=4", "data.proxy.num_val=1", "data.proxy.num_test=3"]


def hand_map() -> cap.AttentionMap:
    """2 time steps × 1 × 2 queries, keys on the same grid; query 3 cannot see time step 0."""
    grid = cap.Grid((2, 1, 2), (1.0, 1.0, 1.0))
    weights = torch.tensor([[0.10, 0.20, 0.30, 0.40],
                            [0.70, 0.10, 0.10, 0.10],
                            [0.25, 0.25, 0.25, 0.25],
                            [0.00, 0.00, 0.90, 0.10]])
    reachable = torch.ones(4, 4, dtype=torch.bool)
    reachable[3, :2] = False
    return cap.AttentionMap(weights, reachable, grid, grid, "hand")


@torch.no_grad()
def reference_affinity(block, x: torch.Tensor) -> torch.Tensor:
    """Eq. 1 normalised, written out: f(x_i, x_j) / C(x) over the keys in the block's scope."""
    xk = F.max_pool3d(x, (1, 2, 2)) if block.subsample else x
    T, H, W = x.shape[2:]
    Hk, Wk = xk.shape[3:]
    lin = lambda conv, v: torch.einsum("oc,cn->no", conv.weight.flatten(1), v.flatten(1)) \
        + (conv.bias if conv.bias is not None else 0)  # noqa: E731
    xq, xkk = x[0], xk[0]
    if block.instantiation == "gaussian":
        q, k = xq.flatten(1).T, xkk.flatten(1).T
    else:
        q, k = lin(block.theta, xq), lin(block.phi, xkk)
    allowed = torch.ones(T * H * W, T * Hk * Wk, dtype=torch.bool)
    for i in range(T * H * W):
        t, h, w = i // (H * W), (i // W) % H, i % W
        for j in range(T * Hk * Wk):
            tk, hk, wk = j // (Hk * Wk), (j // Wk) % Hk, j % Wk
            if block.scope == "space" and tk != t:
                allowed[i, j] = False
            if block.scope == "time" and (min(h // 2, Hk - 1), min(w // 2, Wk - 1)) != (hk, wk):
                allowed[i, j] = False
    if block.instantiation in ("gaussian", "embedded_gaussian"):
        logits = q @ k.T * (q.shape[1] ** -0.5 if block.scale else 1.0)
        return logits.masked_fill(~allowed, -math.inf).softmax(1)
    if block.instantiation == "dot_product":
        f = q @ k.T
    else:
        wf = block.w_f.weight.flatten()
        c = q.shape[1]
        f = F.relu(q @ wf[:c][:, None] + (k @ wf[c:])[None, :])
    f = f * allowed
    return f / allowed.sum(1, keepdim=True)


@torch.no_grad()
def block_output_from(block, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """z = x + BN(W_z y), y_i = Σ_j w_ij g(x_j): the block's output rebuilt from an affinity."""
    xk = F.max_pool3d(x, (1, 2, 2)) if block.subsample else x
    g = block.g(xk)[0].flatten(1).T                       # (M, inner), keys in (t, h', w')
    y = (weights @ g).T.reshape(1, -1, *x.shape[2:])     # (1, inner, T, H, W)
    z = block.w_z(y)
    return x + (block.bn(z) if block.bn is not None else z)


def make_model(instantiation: str = "embedded_gaussian", scope: str = "spacetime", seed: int = 0,
           blocks: int = 1, sets: tuple[str, ...] = ()):
    """The proxy network with ``blocks`` NL blocks whose θ/φ/w_f look trained (peaked) and
    whose output is not the identity (BN γ = 1, W_z random), so the affinity matters."""
    torch.manual_seed(seed)
    cfg = load_config("proxy", sets=[f"model.nonlocal.blocks={blocks}",
                                     f"model.nonlocal.instantiation={instantiation}",
                                     f"model.nonlocal.scope={scope}", *sets])
    model = VideoClassifier.from_config(cfg, load_pretrained=False).eval()
    with torch.no_grad():
        for block in model.model.nonlocal_blocks().values():
            for conv in (block.theta, block.phi, block.w_f):
                if conv is not None:
                    torch.nn.init.normal_(conv.weight, std=0.5)
            torch.nn.init.normal_(block.w_z.weight, std=0.5)
            if block.bn is not None:
                block.bn.weight.fill_(1.0)
    return model


def block_io(model, name: str, clip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The block's real input and output on ``clip`` (hooks independent of ``capture``)."""
    block = model.model.nonlocal_blocks()[name]
    seen = {}
    handle = block.register_forward_hook(
        lambda m, i, o: seen.update(x=i[0].detach().float(), z=o.detach().float()))
    with torch.no_grad():
        model(clip)
    handle.remove()
    return seen["x"], seen["z"]


def reference_affinity_support(block, x):
    twin = NonLocalBlock(x.shape[1], "embedded_gaussian", block.scope, block.subsample)
    with torch.no_grad():
        twin.theta.weight.zero_()
        twin.phi.weight.zero_()
    return reference_affinity(twin, x) > 0


def save_checkpoint(model, path):
    """What Lightning's checkpoint holds that ``load_classifier`` reads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(),
                "hyper_parameters": {"config": to_dict(model.cfg)}}, path)
    return path


def attention_cli(run, *extra: str) -> int:
    return cli(["attention", str(run["ckpt"]), "--video", str(run["video"]), *extra])


def auto_spec(results, sets):
    specs = [s for s in expand(load_grid(grid_path(cmd.AUTO_TABLE)), "proxy", results, sets)
             if cmd.AUTO_ROW in s.labels and s.depth == cmd.AUTO_DEPTH and s.seed == 0]
    assert len(specs) == 1
    return specs[0]
