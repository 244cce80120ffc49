"""The non-local block (Wang et al., CVPR 2018, Sec. 3; VNL ``nonlocal_helper.py``).

    z_i = x_i + BN(W_z y_i),    y_i = 1/C(x) · Σ_j f(x_i, x_j) g(x_j)

Queries i run over every position of x, ordered (t, h, w) (index ``(t·H + h)·W + w``).
Keys j run over the key grid: x itself, or x max-pooled by (1, 2, 2) when ``subsample`` is on
(VNL pools **x** before φ and g; θ is not pooled; odd sizes are floored like VNL/PySlowFast),
ordered (t, h', w') the same way.  ``scope`` and ``temporal_group`` restrict which keys a
query may see; the block computes each allowed set on its own ("sets" below: a batch of
independent (queries, keys) problems), which is both exact and the cheap layout.

``fast=True`` (default) uses exact sub-quadratic or fused kernels where they pay off (see
``fuses_softmax``); ``fast=False`` materialises every n × m affinity like the public
implementations (benchmarks, debugging).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nlrepro.choices import INSTANTIATIONS, NORMS, SCOPES, SOFTMAX


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"NonLocalBlock: {name}={value!r} is not valid; "
                         f"choose one of {', '.join(choices)}")


def _conv(c_in: int, c_out: int, bias: bool = True) -> nn.Conv3d:
    """1×1×1 conv with VNL's init: weights N(0, 0.01), bias 0."""
    conv = nn.Conv3d(c_in, c_out, kernel_size=1, bias=bias)
    nn.init.normal_(conv.weight, std=0.01)
    if bias:
        nn.init.zeros_(conv.bias)
    return conv


class NonLocalBlock(nn.Module):
    """Non-local block on ``(B, C, T, H, W)``; a new block is the identity (γ = 0 or W_z = 0).

    instantiation: ``gaussian`` (f = exp(x_iᵀx_j) on the raw input, softmax over j),
        ``embedded_gaussian`` (f = exp(θ_iᵀφ_j), softmax), ``dot_product`` (f = θ_iᵀφ_j,
        C(x) = number of keys a query sees), ``concatenation`` (f = ReLU(w_fᵀ[θ_i, φ_j]),
        C(x) = number of keys).
    scope: ``spacetime`` (all keys), ``space`` (keys of the query's frame), ``time`` (the
        query's spatial location in every frame; with ``subsample`` that is the pooled cell
        containing it, cell index min(h // 2, H' − 1) so a floored odd edge row/column uses
        the last cell).
    scale: multiply softmax logits by d^-1/2 (VNL ``USE_SCALE``), d = channels of the dot
        product: C/2 for embedded gaussian, C (the dimension of x) for gaussian. Ignored by
        dot product and concatenation, which are normalised by C(x) instead.
    norm: ``bn`` (BN with γ = 0) or ``none`` (no BN, W_z zero-initialised; 128-frame recipe).
    bn_init_gamma: the W_z BN's initial γ (VNL ``NONLOCAL.BN_INIT_GAMMA``): 0 makes a new block
        the identity (paper Sec. 3.3); a positive value lets W_z learn from the first step,
        which the small proxy task needs (docs/PROXY.md).  Ignored with ``norm="none"``.
    temporal_group: compute the affinity inside groups of k consecutive frames (VNL 128-frame
        res3 trick); T must be divisible by k.
    concat_offset: concatenation only; None = w_f without bias (mmcv), a number = a bias on
        w_f starting there, so every pair starts on the active side of the ReLU (the schema's
        ``NonLocalConfig.concat_offset`` says why).
    """

    def __init__(self, in_channels: int, instantiation: str = "embedded_gaussian",
                 scope: str = "spacetime", subsample: bool = True, scale: bool = True,
                 inner_channels: int | None = None, norm: str = "bn",
                 temporal_group: int | None = None, bn_init_gamma: float = 0.0,
                 concat_offset: float | None = None) -> None:
        super().__init__()
        _check_choice("instantiation", instantiation, INSTANTIATIONS)
        _check_choice("scope", scope, SCOPES)
        _check_choice("norm", norm, NORMS)
        if temporal_group is not None and (not isinstance(temporal_group, int)
                                           or temporal_group < 1):
            raise ValueError(f"NonLocalBlock: temporal_group={temporal_group!r} must be None "
                             "or a positive integer")
        inner = inner_channels if inner_channels is not None else in_channels // 2
        if inner < 1:
            raise ValueError(f"NonLocalBlock: inner_channels={inner} must be >= 1 "
                             f"(in_channels={in_channels})")
        self.in_channels, self.inner_channels = in_channels, inner
        self.instantiation, self.scope, self.subsample = instantiation, scope, subsample
        self.scale, self.norm, self.temporal_group = scale, norm, temporal_group
        self.fast: bool = True

        embedded = instantiation != "gaussian"
        self.theta = _conv(in_channels, inner) if embedded else None
        self.phi = _conv(in_channels, inner) if embedded else None
        self.g = _conv(in_channels, inner)
        # Projects [θ_i, φ_j] (2·inner channels) to the scalar pre-activation of f.
        self.w_f = (_conv(2 * inner, 1, bias=concat_offset is not None)
                    if instantiation == "concatenation" else None)
        if self.w_f is not None and concat_offset is not None:
            nn.init.constant_(self.w_f.bias, concat_offset)
        self.pool = nn.MaxPool3d((1, 2, 2), (1, 2, 2)) if subsample else None
        self.w_z = _conv(inner, in_channels)
        if norm == "bn":
            self.bn: nn.BatchNorm3d | None = nn.BatchNorm3d(in_channels)
            nn.init.constant_(self.bn.weight, bn_init_gamma)
        else:
            self.bn = None
            nn.init.zeros_(self.w_z.weight)
            nn.init.zeros_(self.w_z.bias)

    def extra_repr(self) -> str:
        return (f"instantiation={self.instantiation}, scope={self.scope}, "
                f"subsample={self.subsample}, scale={self.scale}, norm={self.norm}, "
                f"temporal_group={self.temporal_group}, fast={self.fast}")

    # ---- layout: positions -> independent (queries, keys) sets --------------------------------
    def affinity_parameters(self) -> list[nn.Parameter]:
        """The parameters of f: θ, φ and concatenation's w_f (none for the Gaussian)."""
        return [p for m in (self.theta, self.phi, self.w_f) if m is not None
                for p in m.parameters()]

    def _group(self, t: int) -> int:
        k = self.temporal_group or t
        if t % k:
            raise ValueError(f"NonLocalBlock: T={t} frames is not divisible by "
                             f"temporal_group={k}; use a divisor of {t}")
        return k

    def _sets(self, u: Tensor, k: int) -> Tensor:
        """(B, c, T, h, w) -> (B·sets, n, c): one row block per independent set."""
        b, c, t, h, w = u.shape
        if self.scope == "space":
            return u.permute(0, 2, 3, 4, 1).reshape(b * t, h * w, c)
        u = u.reshape(b, c, t // k, k, h, w)
        if self.scope == "spacetime":
            return u.permute(0, 2, 3, 4, 5, 1).reshape(b * (t // k), k * h * w, c)
        return u.permute(0, 2, 4, 5, 3, 1).reshape(b * (t // k) * h * w, k, c)  # time

    def _unsets(self, y: Tensor, shape: tuple[int, ...], k: int) -> Tensor:
        """Inverse of ``_sets`` for the query grid: (B·sets, n, c) -> (B, c, T, H, W)."""
        b, _, t, h, w = shape
        c = y.shape[-1]
        if self.scope == "space":
            return y.reshape(b, t, h, w, c).permute(0, 4, 1, 2, 3)
        if self.scope == "spacetime":
            y = y.reshape(b, t // k, k, h, w, c).permute(0, 5, 1, 2, 3, 4)
        else:
            y = y.reshape(b, t // k, h, w, k, c).permute(0, 5, 1, 4, 2, 3)
        return y.reshape(b, c, t, h, w)

    def pools(self, h: int, w: int) -> bool:
        """Whether keys are max-pooled (1, 2, 2) on an h×w map.  A map smaller than 2×2 (res5
        of the proxy network, 1×1) has nothing to pool, so its keys are x itself; the paper's
        maps (7×7 and up) always pool when ``subsample`` is on."""
        return self.pool is not None and h >= 2 and w >= 2

    def _key_grid(self, u: Tensor, h: int, w: int) -> Tensor:
        """For the time scope, key cell of every query location: (B, c, T, h', w') -> (B, c, T, h, w)."""
        if self.scope != "time" or (u.shape[-2] == h and u.shape[-1] == w):
            return u
        rows = (torch.arange(h, device=u.device) // 2).clamp(max=u.shape[-2] - 1)
        cols = (torch.arange(w, device=u.device) // 2).clamp(max=u.shape[-1] - 1)
        return u.index_select(3, rows).index_select(4, cols)

    def _embed(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, int]:
        """θ (queries), φ (keys), g (values) as sets: (S, n, d), (S, m, d), (S, m, inner)."""
        b, c, t, h, w = x.shape
        if c != self.in_channels:
            raise ValueError(f"NonLocalBlock: input has {c} channels, expected {self.in_channels}")
        k = self._group(t)
        xp = self.pool(x) if self.pools(h, w) else x
        q = self.theta(x) if self.theta is not None else x
        key = self.phi(xp) if self.phi is not None else xp
        val = self.g(xp)
        keys = self._sets(self._key_grid(key, h, w), k)
        vals = self._sets(self._key_grid(val, h, w), k)
        return self._sets(q, k), keys, vals, k

    # ---- the four f / C(x) -------------------------------------------------------------------
    def _softmax_scale(self, d: int) -> float:
        return d ** -0.5 if self.scale else 1.0

    def _concat_terms(self, q: Tensor, key: Tensor) -> tuple[Tensor, Tensor]:
        """w_fᵀ[θ_i, φ_j] (+ bias) = a_i + b_j with a = θ·w_θ (+ bias), b = φ·w_φ (w_f split
        in halves)."""
        wf = self.w_f.weight.reshape(-1)
        d = self.inner_channels
        a = q @ wf[:d]
        if self.w_f.bias is not None:
            a = a + self.w_f.bias[0]
        return a, key @ wf[d:]

    def _affinity_sets(self, q: Tensor, key: Tensor) -> Tensor:
        """f / C(x) materialised per set: (S, n, m). The plain reference path."""
        m = key.shape[1]
        if self.instantiation in SOFTMAX:
            logits = q @ key.transpose(1, 2) * self._softmax_scale(q.shape[-1])
            return logits.softmax(dim=-1)
        if self.instantiation == "dot_product":
            return q @ key.transpose(1, 2) / m
        a, b_ = self._concat_terms(q, key)
        return F.relu(a[:, :, None] + b_[:, None, :]) / m

    def _aggregate(self, q: Tensor, key: Tensor, val: Tensor) -> Tensor:
        """y = 1/C(x) Σ_j f(i, j) g_j for every set: (S, n, inner)."""
        softmax = self.instantiation in SOFTMAX
        if not self.fast or (softmax and not fuses_softmax(key.shape[1], self.in_channels)):
            return self._affinity_sets(q, key) @ val
        if softmax:
            return _softmax_attention(q, key, val, self._softmax_scale(q.shape[-1]))
        if self.instantiation == "dot_product":
            return _dot_product(q, key, val)
        a, b_ = self._concat_terms(q, key)
        return _relu_sum(a, b_, val)

    # ---- public ------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        q, key, val, k = self._embed(x)
        y = self._unsets(self._aggregate(q, key, val), x.shape, k)
        z = self.w_z(y)
        if self.bn is not None:
            z = self.bn(z)
        return x + z

    @torch.no_grad()
    def affinity(self, x: Tensor) -> Tensor:
        """Normalised affinity f / C(x) as a (B, N, M) matrix, 0 outside the allowed keys.

        Rows: queries over x's grid, ordered (t, h, w); columns: keys over the key grid
        (pooled (T, ⌊H/2⌋, ⌊W/2⌋) with ``subsample``), ordered (t, h', w').  Softmax rows sum
        to 1; dot product / concatenation rows are f / C(x) (C(x) = keys a query sees).
        """
        b, _, t, h, w = x.shape
        q, key, _, k = self._embed(x)
        sets = self._affinity_sets(q, key)
        hp, wp = (h // 2, w // 2) if self.pool is not None else (h, w)
        n, m = t * h * w, t * hp * wp
        # Global indices of each set's queries / keys, through the same layout functions.
        qidx = self._sets(torch.arange(n, device=x.device).reshape(1, 1, t, h, w), k)[..., 0]
        kgrid = torch.arange(m, device=x.device).reshape(1, 1, t, hp, wp)
        kidx = self._sets(self._key_grid(kgrid, h, w), k)[..., 0]
        full = sets.new_zeros(b, n, m)
        full[:, qidx[:, :, None], kidx[:, None, :]] = sets.reshape(b, -1, *sets.shape[1:])
        return full


# ---- exact fast kernels ----------------------------------------------------------------------
def fuses_softmax(m: int, in_channels: int) -> bool:
    """Whether a softmax block skips its n × m affinity: only where a row of keys is longer
    than a row of the block's input (m > C), i.e. where the affinity would be the block's
    largest tensor.  Below that the affinity costs no more memory than x itself, and CPU's
    fused and chunked kernels are slower on short rows (timings: docs/DEVELOPING.md)."""
    return m > in_channels


def _softmax_attention(q: Tensor, key: Tensor, val: Tensor, scale: float) -> Tensor:
    """softmax(s·qkᵀ)v without keeping the n × m matrix (exact: the same softmax, blockwise).

    Equal head dims (embedded gaussian): fused SDPA on contiguous 4-D tensors (3-D inputs, or
    the strided views ``_sets`` returns, take CPU's materialising math path).  Unequal dims
    (gaussian: q, k have C channels, v C/2): CPU SDPA silently materialises, so query chunks
    with a hand-written backward do it instead.
    """
    if q.shape[-1] == val.shape[-1]:
        q, key, val = (t.contiguous()[:, None] for t in (q, key, val))
        return F.scaled_dot_product_attention(q, key, val, scale=scale)[:, 0]
    # The hand-written backward runs outside autocast: give the Function one dtype up front.
    dev = q.device.type
    dtype = (torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev)
             else torch.promote_types(torch.promote_types(q.dtype, key.dtype), val.dtype))
    with torch.autocast(dev, enabled=False):
        return _ChunkedSoftmaxAttention.apply(q.to(dtype), key.to(dtype), val.to(dtype), scale)


def _softmax_attention_padded(q: Tensor, key: Tensor, val: Tensor, scale: float) -> Tensor:
    """The alternative for a narrower v: zero-pad v to q's width so fused SDPA applies.

    Exact (padded columns are 0 and cut off) but the p·v product does twice the work; kept
    as the benchmarks' point of comparison for the chunked kernel.
    """
    dv = val.shape[-1]
    val = F.pad(val, (0, q.shape[-1] - dv))
    q, key, val = (t.contiguous()[:, None] for t in (q, key, val))
    return F.scaled_dot_product_attention(q, key, val, scale=scale)[:, 0, :, :dv]


_CHUNK_ELEMENTS = 1 << 22  # ~16 MB of fp32 affinity per query chunk


class _ChunkedSoftmaxAttention(torch.autograd.Function):
    """y = softmax(s·qkᵀ)v over query chunks; backward recomputes each chunk's softmax.

    Exact: rows of a softmax are independent, so chunking rows changes nothing; the backward
    is the softmax/matmul chain rule, using Σ_j p_ij dp_ij = dy_i·y_i (as flash attention
    does) so no n × m matrix outlives its chunk.
    """

    @staticmethod
    def forward(ctx, q: Tensor, key: Tensor, val: Tensor, scale: float) -> Tensor:
        chunk = max(1, _CHUNK_ELEMENTS // (q.shape[0] * key.shape[1]))
        kt = key.transpose(1, 2)
        y = torch.cat([torch.softmax((q[:, i:i + chunk] @ kt).mul_(scale), dim=-1) @ val
                       for i in range(0, q.shape[1], chunk)], dim=1)
        ctx.save_for_backward(q, key, val, y)
        ctx.scale, ctx.chunk = scale, chunk
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy: Tensor) -> tuple[Tensor | None, ...]:
        q, key, val, y = ctx.saved_tensors
        scale, chunk = ctx.scale, ctx.chunk
        dq, dk, dv = torch.empty_like(q), torch.zeros_like(key), torch.zeros_like(val)
        delta = (dy * y).sum(-1, keepdim=True)
        kt, vt = key.transpose(1, 2), val.transpose(1, 2)
        for i in range(0, q.shape[1], chunk):
            rows = slice(i, i + chunk)
            p = torch.softmax((q[:, rows] @ kt).mul_(scale), dim=-1)
            dv.baddbmm_(p.transpose(1, 2), dy[:, rows])
            ds = (dy[:, rows] @ vt).sub_(delta[:, rows]).mul_(p).mul_(scale)
            dq[:, rows] = ds @ key
            dk.baddbmm_(ds.transpose(1, 2), q[:, rows])
        return dq, dk, dv, None


def _dot_product(q: Tensor, key: Tensor, val: Tensor) -> Tensor:
    """(qkᵀ/m)v; associativity makes q(kᵀv)/m the same number at O((n+m)·d·dv) cost."""
    n, d = q.shape[1:]
    m, dv = val.shape[1:]
    if (n + m) * d * dv < n * m * (d + dv):
        return q @ (key.transpose(1, 2) @ val) / m
    return (q @ key.transpose(1, 2)) @ val / m


def _relu_sum(a: Tensor, b: Tensor, val: Tensor) -> Tensor:
    """y_i = 1/m Σ_j ReLU(a_i + b_j) v_j in O((n + m)(dv + log m)).

    Exact: ReLU(a_i + b_j) is a_i + b_j for b_j > −a_i and 0 otherwise, so with b sorted in
    descending order the sum is a_i·P(v) + P(b·v) over the prefix of keys with b_j > −a_i,
    whose length a binary search gives.  Keys with b_j = −a_i give a_i + b_j = 0 exactly and
    ReLU'(0) = 0, so leaving them out (strict ``>``) matches the materialised form in value
    and gradient.
    """
    s, m, dv = val.shape
    b_desc, order = b.sort(dim=1, descending=True)
    v_desc = val.gather(1, order[:, :, None].expand_as(val))
    zero = val.new_zeros(s, 1, dv)
    # prefix[p] = Σ_{q < p} over the sorted keys (prefix[0] = 0).
    p_v = torch.cat([zero, v_desc.cumsum(1)], dim=1)
    p_bv = torch.cat([zero, (b_desc[:, :, None] * v_desc).cumsum(1)], dim=1)
    # #{j : b_j > −a_i} = #{j : −b_j < a_i}; −b_desc is ascending, so a left search counts it.
    count = torch.searchsorted((-b_desc).detach().contiguous(), a.detach().contiguous())
    idx = count[:, :, None].expand(-1, -1, dv)
    return (a[:, :, None] * p_v.gather(1, idx) + p_bv.gather(1, idx)) / m
