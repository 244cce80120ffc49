"""The non-local block as the public implementations write it: the N × M affinity in memory.

VNL (Caffe2) and PySlowFast compute θᵀφ as one (N, M) batched matmul, softmax (or divide by
M for dot product) and multiply by g.  For concatenation no official code exists; mmcv's
port repeats θ and φ into a (2·C/2, N, M) tensor and applies the 1×1 conv w_f to it — here
``concat="literal"``.  ``concat="split"`` is the same function with w_f split into its θ and
φ halves, f_ij = ReLU(a_i + b_j): still an N × M matrix, but no N × M × C tensor.

Scope and temporal groups follow the paper's definitions directly: temporal groups fold into
the batch like VNL's 128-frame res3 (a reshape), scope masks the full affinity.  Parameters
are those of a project ``NonLocalBlock`` (``ReferenceNonLocal.like(block)`` loads its state
dict), so outputs can be compared number for number.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SOFTMAX = ("gaussian", "embedded_gaussian")
CONCAT_MODES = ("split", "literal")


class ReferenceNonLocal(nn.Module):
    """z = x + BN(W_z y), y = (f / C(x)) g with f materialised; same submodule names as the block."""

    def __init__(self, in_channels: int, instantiation: str = "embedded_gaussian",
                 scope: str = "spacetime", subsample: bool = True, scale: bool = True,
                 inner_channels: int | None = None, norm: str = "bn",
                 temporal_group: int | None = None, concat: str = "split") -> None:
        super().__init__()
        if concat not in CONCAT_MODES:
            raise ValueError(f"concat={concat!r} is not valid; choose one of {CONCAT_MODES}")
        inner = inner_channels or in_channels // 2
        self.instantiation, self.scope, self.subsample = instantiation, scope, subsample
        self.scale, self.temporal_group, self.concat = scale, temporal_group, concat
        embedded = instantiation != "gaussian"
        conv = lambda i, o, bias=True: nn.Conv3d(i, o, 1, bias=bias)  # noqa: E731
        self.theta = conv(in_channels, inner) if embedded else None
        self.phi = conv(in_channels, inner) if embedded else None
        self.g = conv(in_channels, inner)
        self.w_f = conv(2 * inner, 1, False) if instantiation == "concatenation" else None
        self.w_z = conv(inner, in_channels)
        self.bn = nn.BatchNorm3d(in_channels) if norm == "bn" else None

    @classmethod
    def like(cls, block: nn.Module, concat: str = "split") -> "ReferenceNonLocal":
        """A reference with ``block``'s settings and parameters (dtype and device too)."""
        ref = cls(block.in_channels, block.instantiation, block.scope, block.subsample,
                  block.scale, block.inner_channels, block.norm, block.temporal_group, concat)
        p = next(block.parameters())
        ref.to(device=p.device, dtype=p.dtype).load_state_dict(block.state_dict())
        return ref.train(block.training)

    def _mask(self, t: int, h: int, w: int, hp: int, wp: int, device: torch.device) -> Tensor | None:
        """(N, M) bool of allowed (query, key) pairs for the scope; None = all (spacetime)."""
        if self.scope == "spacetime":
            return None
        s = 2 if self.subsample else 1
        grid = lambda a, b, c: [u.reshape(-1) for u in torch.meshgrid(  # noqa: E731
            torch.arange(a, device=device), torch.arange(b, device=device),
            torch.arange(c, device=device), indexing="ij")]
        ti, hi, wi = grid(t, h, w)
        tj, hj, wj = grid(t, hp, wp)
        if self.scope == "space":
            return ti[:, None] == tj[None, :]
        return ((hi // s).clamp(max=hp - 1)[:, None] == hj[None, :]) & \
               ((wi // s).clamp(max=wp - 1)[:, None] == wj[None, :])

    def forward(self, x: Tensor) -> Tensor:
        b, c, t, h, w = x.shape
        k = self.temporal_group or t
        if t % k:
            raise ValueError(f"T={t} is not divisible by temporal_group={k}")
        # Temporal groups: (B, C, T, H, W) -> (B·T/k, C, k, H, W), as VNL reshapes for 128 frames.
        xg = x.reshape(b, c, t // k, k, h, w).transpose(1, 2).reshape(-1, c, k, h, w)
        xp = F.max_pool3d(xg, (1, 2, 2), (1, 2, 2)) if self.subsample else xg
        hp, wp = xp.shape[-2:]
        theta = (self.theta(xg) if self.theta is not None else xg).flatten(2)  # (b, d, N)
        phi = (self.phi(xp) if self.phi is not None else xp).flatten(2)        # (b, d, M)
        g = self.g(xp).flatten(2)                                              # (b, dv, M)
        mask = self._mask(k, h, w, hp, wp, x.device)
        if self.instantiation in SOFTMAX:
            f = torch.bmm(theta.transpose(1, 2), phi)
            if self.scale:
                f = f * theta.shape[1] ** -0.5
            if mask is not None:
                f = f.masked_fill(~mask, float("-inf"))
            aff = f.softmax(dim=-1)
        else:
            if self.instantiation == "dot_product":
                f = torch.bmm(theta.transpose(1, 2), phi)
            elif self.concat == "literal":
                n, m = theta.shape[-1], phi.shape[-1]
                cat = torch.cat([theta[:, :, :, None].expand(-1, -1, -1, m),
                                 phi[:, :, None, :].expand(-1, -1, n, -1)], dim=1)
                f = F.relu(F.conv2d(cat, self.w_f.weight[..., 0]))[:, 0]        # (b, N, M)
            else:
                wf = self.w_f.weight.reshape(-1)
                d = theta.shape[1]
                a = torch.einsum("d,bdn->bn", wf[:d], theta)
                bb = torch.einsum("d,bdm->bm", wf[d:], phi)
                f = F.relu(a[:, :, None] + bb[:, None, :])
            if mask is None:
                aff = f / f.shape[-1]
            else:
                aff = f * mask / mask.sum(dim=1, keepdim=True)
        y = torch.bmm(aff, g.transpose(1, 2))                                  # (b, N, dv)
        y = y.transpose(1, 2).reshape(b, t // k, -1, k, h, w).transpose(1, 2)
        z = self.w_z(y.reshape(b, -1, t, h, w))
        if self.bn is not None:
            z = self.bn(z)
        return x + z


class ConvFloor(ReferenceNonLocal):
    """The block minus its aggregation: θ/φ/g convs, pool, W_z and BN only.

    What every instantiation pays whatever its kernel; subtracting it isolates the cost of
    y = (f / C(x)) g.  y_i = θ_i + mean_j φ_j + mean_j g_j keeps every conv in the graph.
    """

    def forward(self, x: Tensor) -> Tensor:
        xp = F.max_pool3d(x, (1, 2, 2), (1, 2, 2)) if self.subsample else x
        v = self.g(xp)
        y = v.mean(dim=(2, 3, 4), keepdim=True).expand(-1, -1, *x.shape[2:])
        if self.theta is not None:
            y = y + self.theta(x) + self.phi(xp).mean(dim=(2, 3, 4), keepdim=True)
        z = self.w_z(y)
        return x + (self.bn(z) if self.bn is not None else z)
