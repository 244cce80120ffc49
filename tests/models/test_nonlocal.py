"""The non-local block against the paper's equations, written out here independently.

The reference below materialises the full N × M affinity over all positions with an explicit
mask for scope / temporal groups, straight from Eq. 1-6 (Sec. 3) and VNL's choices (pool x
before φ and g, scale (C/2)^-1/2, C(x) = number of keys); it shares no code with the block.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nlrepro.models import non_local
from nlrepro.models.non_local import SOFTMAX, NonLocalBlock, _dot_product, _relu_sum

INSTANTIATIONS = ["gaussian", "embedded_gaussian", "dot_product", "concatenation"]
SCOPES = ["spacetime", "space", "time"]


def conv1(u: torch.Tensor, conv: torch.nn.Conv3d) -> torch.Tensor:
    """1×1×1 conv as an einsum over channels."""
    w = conv.weight[:, :, 0, 0, 0]
    out = torch.einsum("oc,bcthw->bothw", w, u)
    return out if conv.bias is None else out + conv.bias[None, :, None, None, None]


def allowed(block: NonLocalBlock, t: int, h: int, w: int, hp: int, wp: int) -> torch.Tensor:
    """(N, M) bool: may query (t,h,w) see key (t',h',w')? Positions in (t,h,w) order."""
    k = block.temporal_group or t
    s = 2 if block.subsample else 1
    ti, hi, wi = (c.reshape(-1, 1) for c in torch.meshgrid(
        torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij"))
    tj, hj, wj = (c.reshape(1, -1) for c in torch.meshgrid(
        torch.arange(t), torch.arange(hp), torch.arange(wp), indexing="ij"))
    mask = ti // k == tj // k
    if block.scope == "space":
        mask = mask & (ti == tj)
    if block.scope == "time":  # the key cell containing the query's location
        mask = mask & (hj == (hi // s).clamp(max=hp - 1)) & (wj == (wi // s).clamp(max=wp - 1))
    return mask


def reference(block: NonLocalBlock, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z and the normalised affinity (B, N, M), from the equations."""
    b, c, t, h, w = x.shape
    xp = F.max_pool3d(x, (1, 2, 2), (1, 2, 2)) if block.subsample else x
    hp, wp = xp.shape[-2:]
    gaussian = block.instantiation == "gaussian"
    theta = (x if gaussian else conv1(x, block.theta)).flatten(2).transpose(1, 2)  # (B,N,d)
    phi = (xp if gaussian else conv1(xp, block.phi)).flatten(2).transpose(1, 2)    # (B,M,d)
    g = conv1(xp, block.g).flatten(2).transpose(1, 2)                              # (B,M,dv)
    mask = allowed(block, t, h, w, hp, wp)
    if block.instantiation in ("gaussian", "embedded_gaussian"):
        logits = torch.einsum("bnd,bmd->bnm", theta, phi)
        if block.scale:
            logits = logits / theta.shape[-1] ** 0.5
        aff = torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=-1)
    else:
        if block.instantiation == "dot_product":
            f = torch.einsum("bnd,bmd->bnm", theta, phi)
        else:  # the literal [θ_i, φ_j] concatenation projected by w_f, then ReLU
            n, m = theta.shape[1], phi.shape[1]
            cat = torch.cat([theta[:, :, None].expand(-1, -1, m, -1),
                             phi[:, None].expand(-1, n, -1, -1)], dim=-1)
            f = cat @ block.w_f.weight.reshape(-1)
            f = F.relu(f if block.w_f.bias is None else f + block.w_f.bias)
        aff = f * mask / mask.sum(dim=1, keepdim=True)
    y = (aff @ g).transpose(1, 2).reshape(b, -1, t, h, w)
    z = conv1(y, block.w_z)
    if block.bn is not None:
        bn = block.bn
        z = F.batch_norm(z, bn.running_mean.clone(), bn.running_var.clone(), bn.weight,
                         bn.bias, training=block.training, eps=bn.eps)
    return x + z, aff


def randomised(block: NonLocalBlock, seed: int = 0) -> NonLocalBlock:
    """Non-trivial parameters (a fresh block is the identity)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.5)
    return block


def grads(out: torch.Tensor, x: torch.Tensor, block: NonLocalBlock) -> list[torch.Tensor]:
    weight = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)
    return torch.autograd.grad((out * weight).sum(), [x, *block.parameters()])


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "plain"])
@pytest.mark.parametrize("temporal_group", [None, 2])
@pytest.mark.parametrize("subsample", [True, False])
@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("instantiation", INSTANTIATIONS)
def test_matches_equations(instantiation, scope, subsample, temporal_group, fast):
    torch.manual_seed(1)
    block = randomised(NonLocalBlock(6, instantiation, scope, subsample,
                                     temporal_group=temporal_group).double())
    block.fast = fast
    x = torch.randn(2, 6, 4, 5, 7, dtype=torch.float64, requires_grad=True)
    out = block(x)
    ref, _ = reference(block, x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-10)
    for got, want in zip(grads(out, x, block), grads(ref, x, block)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("instantiation", INSTANTIATIONS)
def test_affinity_matches_equations(instantiation, scope):
    block = randomised(NonLocalBlock(6, instantiation, scope, temporal_group=2).double())
    x = torch.randn(2, 6, 4, 6, 5, dtype=torch.float64)
    aff = block.affinity(x)
    _, ref = reference(block, x)
    assert aff.shape == (2, 4 * 6 * 5, 4 * 3 * 2)
    torch.testing.assert_close(aff, ref, rtol=0, atol=1e-12)
    if instantiation in ("gaussian", "embedded_gaussian"):
        torch.testing.assert_close(aff.sum(-1), torch.ones(2, 120, dtype=torch.float64))


def test_scale_and_unscaled_softmax():
    """scale=False leaves logits as θᵀφ; scale=True divides by √d (d = C for gaussian)."""
    x = torch.randn(1, 8, 2, 4, 4, dtype=torch.float64)
    for inst in ("gaussian", "embedded_gaussian"):
        for scale in (True, False):
            block = randomised(NonLocalBlock(8, inst, scale=scale).double())
            torch.testing.assert_close(block(x), reference(block, x)[0], rtol=0, atol=1e-10)
    # The two settings really differ (the scale is applied at all).
    a = randomised(NonLocalBlock(8, "gaussian", scale=True).double())
    b = randomised(NonLocalBlock(8, "gaussian", scale=False).double())
    assert not torch.allclose(a.affinity(x), b.affinity(x))


@pytest.mark.parametrize("instantiation", INSTANTIATIONS)
def test_new_block_is_identity(instantiation):
    x = torch.randn(2, 8, 4, 6, 6)
    block = NonLocalBlock(8, instantiation)
    assert torch.equal(block.bn.weight, torch.zeros(8))
    assert torch.equal(block(x), x)
    # Conv init N(0, 0.01) like VNL; the block is not trivially zero inside.
    assert 0.005 < block.g.weight.std().item() < 0.02
    assert block.w_z.weight.abs().sum() > 0


def test_bn_init_gamma_sets_the_start_and_lets_w_z_learn_at_once():
    """γ = 0 (paper): W_z gets no gradient at the first step; γ = 1 (proxy): it does."""
    x = torch.randn(2, 8, 4, 6, 6)
    grads = {}
    for gamma in (0.0, 1.0):
        torch.manual_seed(0)
        block = NonLocalBlock(8, "embedded_gaussian", bn_init_gamma=gamma)
        assert torch.equal(block.bn.weight, torch.full((8,), gamma))
        out = block(x)
        assert torch.equal(out, x) == (gamma == 0.0)
        out.square().sum().backward()
        grads[gamma] = block.w_z.weight.grad.abs().sum().item()
    assert grads[0.0] == 0.0 and grads[1.0] > 0.0


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "plain"])
def test_concat_offset_adds_a_bias_to_w_f_and_matches_the_equation(fast):
    torch.manual_seed(2)
    block = randomised(NonLocalBlock(6, "concatenation", concat_offset=1.0).double())
    block.fast = fast
    assert block.w_f.bias is not None
    x = torch.randn(2, 6, 4, 5, 7, dtype=torch.float64, requires_grad=True)
    out = block(x)
    ref, _ = reference(block, x)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-10)
    for got, want in zip(grads(out, x, block), grads(ref, x, block)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


def test_concat_offset_starts_every_pair_active_where_the_plain_block_can_die():
    """Without a bias, a_i + b_j at VNL's N(0, 0.01) init spreads by about 3e-4, while Adam
    moves every weight by about lr = 2e-3 per step whatever its gradient: 25 steps that lower
    θ's bias along w_f switch off every pair of f = ReLU(a_i + b_j), and no gradient reaches
    θ, φ or w_f again.  With ``concat_offset=1`` the same shift leaves every pair active."""
    x = torch.relu(torch.randn(2, 8, 4, 6, 6))
    for offset, alive in ((None, False), (1.0, True)):
        torch.manual_seed(0)
        block = NonLocalBlock(8, "concatenation", bn_init_gamma=1.0, concat_offset=offset)
        with torch.no_grad():  # 25 Adam-sized steps of θ's bias against w_f's sign
            block.theta.bias -= 25 * 2e-3 * torch.sign(block.w_f.weight.reshape(-1)[:4])
        q, key, _, _ = block._embed(x)
        a, b = block._concat_terms(q, key)
        assert bool(((a[:, :, None] + b[:, None, :]) > 0).all()) == alive
        block(x).square().sum().backward()
        assert (block.w_f.weight.grad.abs().sum().item() > 0) == alive


def test_bn_init_gamma_reaches_the_blocks_from_the_config():
    from nlrepro.config import load_config
    from nlrepro.models.resnet3d import build_model

    cfg = load_config("proxy", sets=["model.nonlocal.blocks=1",
                                     "model.nonlocal.bn_init_gamma=0.5"])
    (block,) = build_model(cfg.model, load_pretrained=False).nonlocal_blocks().values()
    assert torch.all(block.bn.weight == 0.5)


@pytest.mark.parametrize("instantiation", INSTANTIATIONS)
def test_norm_none_is_identity_with_zero_wz(instantiation):
    block = NonLocalBlock(8, instantiation, norm="none")
    assert block.bn is None
    assert torch.count_nonzero(block.w_z.weight) == 0 and torch.count_nonzero(block.w_z.bias) == 0
    x = torch.randn(2, 8, 4, 6, 6)
    assert torch.equal(block(x), x)
    # ...but it learns: W_z gets a gradient.
    block(x).square().sum().backward()
    assert block.w_z.weight.grad.abs().sum() > 0


def test_submodules_follow_the_paper():
    eg = NonLocalBlock(16)
    assert eg.theta.out_channels == eg.phi.out_channels == eg.g.out_channels == 8
    assert eg.w_z.in_channels == 8 and eg.w_z.out_channels == 16 and eg.w_f is None
    ga = NonLocalBlock(16, "gaussian")
    assert ga.theta is None and ga.phi is None
    cc = NonLocalBlock(16, "concatenation", inner_channels=4)
    assert cc.w_f.in_channels == 8 and cc.w_f.out_channels == 1 and cc.w_f.bias is None


@pytest.mark.parametrize("shape", [(1, 4, 3, 7, 9), (2, 4, 1, 3, 2), (1, 4, 2, 2, 5)])
@pytest.mark.parametrize("instantiation", INSTANTIATIONS)
def test_odd_shapes(instantiation, shape):
    block = randomised(NonLocalBlock(4, instantiation, scope="time").double())
    x = torch.randn(*shape, dtype=torch.float64)
    out = block(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, reference(block, x)[0], rtol=0, atol=1e-10)
    b, _, t, h, w = shape
    assert block.affinity(x).shape == (b, t * h * w, t * (h // 2) * (w // 2))


def test_channels_last_3d():
    block = randomised(NonLocalBlock(8, "embedded_gaussian"))
    x = torch.randn(2, 8, 4, 6, 6)
    want = block(x)
    got = block.to(memory_format=torch.channels_last_3d)(
        x.to(memory_format=torch.channels_last_3d))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_float32_fast_matches_plain():
    torch.manual_seed(0)
    for inst in INSTANTIATIONS:
        block = randomised(NonLocalBlock(16, inst))
        x = torch.randn(2, 16, 4, 8, 8)
        block.fast = True
        fast = block(x)
        block.fast = False
        torch.testing.assert_close(fast, block(x), rtol=1e-4, atol=1e-4)


def test_relu_sum_exact_with_ties():
    """Integer a, b make a_i + b_j = 0 exactly for many pairs; value and gradient still match."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(-3, 4, (2, 11), generator=gen).double().requires_grad_()
    b = torch.randint(-3, 4, (2, 9), generator=gen).double().requires_grad_()
    v = torch.randn(2, 9, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    assert ((a[:, :, None] + b[:, None, :]) == 0).sum() > 5
    fast = _relu_sum(a, b, v)
    plain = F.relu(a[:, :, None] + b[:, None, :]) @ v / 9
    torch.testing.assert_close(fast, plain, rtol=0, atol=1e-13)
    w = torch.randn(fast.shape, generator=gen, dtype=torch.float64)
    for got, want in zip(torch.autograd.grad((fast * w).sum(), [a, b, v]),
                         torch.autograd.grad((plain * w).sum(), [a, b, v])):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-13)


@pytest.mark.parametrize("n,m,d", [(64, 16, 4), (3, 2, 16)], ids=["associative", "plain-order"])
def test_dot_product_both_orders(n, m, d):
    q = torch.randn(2, n, d, dtype=torch.float64)
    k = torch.randn(2, m, d, dtype=torch.float64)
    v = torch.randn(2, m, d, dtype=torch.float64)
    torch.testing.assert_close(_dot_product(q, k, v), torch.einsum("bnd,bmd,bme->bne", q, k, v) / m)


@pytest.mark.parametrize("kwargs,needle", [
    ({"instantiation": "softmax"}, "gaussian, embedded_gaussian, dot_product, concatenation"),
    ({"scope": "global"}, "spacetime, space, time"),
    ({"norm": "gn"}, "bn, none"),
    ({"temporal_group": 0}, "positive integer"),
])
def test_bad_arguments_name_the_choices(kwargs, needle):
    with pytest.raises(ValueError, match=needle) as err:
        NonLocalBlock(8, **kwargs)
    assert repr(next(iter(kwargs.values()))) in str(err.value)


def test_temporal_group_must_divide_t():
    block = NonLocalBlock(8, temporal_group=3)
    with pytest.raises(ValueError, match=r"T=4 .*temporal_group=3"):
        block(torch.randn(1, 8, 4, 4, 4))


@pytest.mark.parametrize("instantiation", INSTANTIATIONS)
def test_subsample_skips_maps_smaller_than_two_by_two(instantiation):
    """The proxy's res5 is 1×1 (Table 2b's res5 row): nothing to pool, keys are x itself."""
    torch.manual_seed(0)
    on = randomised(NonLocalBlock(6, instantiation, subsample=True).double())
    off = NonLocalBlock(6, instantiation, subsample=False).double()
    off.load_state_dict(on.state_dict())
    for shape in [(2, 6, 4, 1, 1), (2, 6, 4, 1, 3)]:
        x = torch.randn(*shape, dtype=torch.float64)
        torch.testing.assert_close(on(x), off(x), rtol=0, atol=1e-12)
    assert not on.pools(1, 1) and on.pools(2, 2) and not off.pools(4, 4)


@pytest.mark.parametrize("chunk_elements", [1, 40, 1 << 22])
def test_gaussian_chunked_kernel_across_chunk_sizes(monkeypatch, chunk_elements):
    """The chunked softmax (q, k wider than v) is exact however the queries are split."""
    monkeypatch.setattr(non_local, "_CHUNK_ELEMENTS", chunk_elements)
    block = randomised(NonLocalBlock(6, "gaussian").double())
    x = torch.randn(2, 6, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    out, (ref, _) = block(x), reference(block, x)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-10)
    for got, want in zip(grads(out, x, block), grads(ref, x, block)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


def test_padded_softmax_kernel_is_exact():
    q, k = torch.randn(3, 20, 8, dtype=torch.float64), torch.randn(3, 7, 8, dtype=torch.float64)
    v = torch.randn(3, 7, 4, dtype=torch.float64)
    want = torch.softmax(q @ k.transpose(1, 2) * 0.3, -1) @ v
    torch.testing.assert_close(non_local._softmax_attention_padded(q, k, v, 0.3), want)


@pytest.mark.parametrize("instantiation", SOFTMAX)
@pytest.mark.parametrize("hw, fused", [((4, 4), True), ((2, 2), False)], ids=["m>C", "m<=C"])
def test_softmax_fuses_only_where_the_affinity_is_the_largest_tensor(
        monkeypatch, instantiation, hw, fused):
    """m > C: the fused/chunked kernel; m <= C: the materialised form (cheaper on short rows).
    Either way the output is the equations'."""
    calls = []
    kernel = non_local._softmax_attention
    monkeypatch.setattr(non_local, "_softmax_attention",
                        lambda *a: calls.append(a[1].shape) or kernel(*a))
    block = randomised(NonLocalBlock(6, instantiation, subsample=False).double())
    x = torch.randn(2, 6, 1, *hw, dtype=torch.float64)   # m = 16 or 4 keys, C = 6
    torch.testing.assert_close(block(x), reference(block, x)[0], rtol=0, atol=1e-10)
    assert bool(calls) == fused == non_local.fuses_softmax(hw[0] * hw[1], 6)


@pytest.mark.parametrize("instantiation", INSTANTIATIONS)
def test_bf16_autocast_forward_backward(instantiation):
    """Mixed precision: the kernels get bf16 and fp32 operands mixed (gaussian: raw x vs g(x));
    forward and backward must run and stay close to fp32."""
    torch.manual_seed(0)
    block = NonLocalBlock(16, instantiation)
    torch.nn.init.ones_(block.bn.weight)
    x = torch.randn(2, 16, 4, 8, 8, requires_grad=True)
    want = block(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = block(x)
    (got.float() * torch.linspace(-1, 1, got.numel()).reshape(got.shape)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in block.parameters())
    torch.testing.assert_close(got.float(), want, rtol=0, atol=0.05)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "plain"])
def test_temporal_groups_reduce_compute(fast):
    """Groups are folded into the batch, not masked: the affinity products shrink by T/k."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(1, 8, 4, 6, 6)

    def flops(group):
        block = NonLocalBlock(8, "embedded_gaussian", temporal_group=group)
        block.fast = fast
        with FlopCounterMode(display=False) as counter:
            block(x)
        return counter.get_total_flops()
    n, m, d = 4 * 36, 4 * 9, 4                 # queries, pooled keys, inner channels
    affinity = 2 * (2 * n * m * d)             # θφᵀ and (softmax)·g, multiply-adds × 2
    assert flops(None) - flops(2) == affinity - affinity // 2
    assert flops(None) - flops(1) == affinity - affinity // 4
