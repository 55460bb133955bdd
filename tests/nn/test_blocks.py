"""fgtool.nn.blocks: the patch discriminator's geometry and labels, code convolutions, the folded
upsampling conv, GLU-LayerNorm."""

import copy

import pytest
import torch
import torch.nn.functional as F

from fgtool.nn.blocks import CodeConv, GLULayerNorm, PatchDiscriminator, tile, up_block
from fgtool.nn.upconv import UpConv3x3, up_conv3x3


def test_paper_patch_geometry_at_128px():
    d = PatchDiscriminator(4, 128)
    adv, aux = d(torch.zeros(1, 3, 128, 128))
    assert (d.rf, d.stride) == (34, 4)
    assert adv.shape[-2:] == (24, 24) and aux.shape == adv.shape


def test_patch_labels_follow_the_paper_rule():
    d = PatchDiscriminator(4, 128)
    box = torch.zeros(1, 1, 128, 128)
    box[..., 60:100, 60:100] = 1  # object box, x and y in [60, 100)
    w = d.patch_weights(box, (24, 24), thresh=1.0)
    # patch (i, j) sees pixels [4i, 4i+34): background iff that window misses [60, 100)
    for i in range(24):
        for j in range(24):
            hit = (4 * i < 100 and 4 * i + 34 > 60) and (4 * j < 100 and 4 * j + 34 > 60)
            assert w[0, 0, i, j] == (0.0 if hit else 1.0), (i, j)
    # a looser threshold admits patches that only graze the box
    assert d.patch_weights(box, (24, 24), thresh=0.5).sum() > w.sum()


@pytest.mark.parametrize("bn", [False, True])
def test_patch_d_sees_a_colour_shift_only_without_batchnorm(bn):
    """Real and fake batches that differ only in colour (a mean shift): the patch D without
    BatchNorm (FineGAN's and OneGAN's background D) tells them apart within 30 steps; with it,
    each batch is normalised on its own, the shift is gone and the D stays at chance."""
    torch.manual_seed(0)
    d = PatchDiscriminator(8, 32, bn=bn)
    opt = torch.optim.Adam(d.parameters(), 1e-3, betas=(0.5, 0.999))
    for _ in range(30):
        real, fake = d(torch.randn(16, 3, 32, 32) * 0.3 + 0.5)[0], d(torch.randn(16, 3, 32, 32) * 0.3 - 0.5)[0]
        loss = (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (loss.item() > 0.6) if bn else (loss.item() < 0.1)


def test_code_conv_equals_conv_over_tiled_code():
    m = CodeConv(5, 7, 4)
    x = torch.randn(3, 5, 6, 8)
    for code in (F.one_hot(torch.tensor([0, 3, 6]), 7).float(), torch.rand(3, 7)):
        ref = F.conv2d(torch.cat([x, tile(code, x)], 1), m.conv.weight, padding=1)
        assert torch.allclose(m(x, code), ref, atol=1e-5)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_up_conv_equals_conv_over_the_nearest_upsampling(channels_last, bias):
    """Output and every gradient of the folded conv equal upsample-then-conv (float64), for odd
    and non-square sizes, keeping the input's memory format."""
    torch.manual_seed(0)
    x = torch.randn(2, 5, 9, 8, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    w = torch.randn(4, 5, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True) if bias else None
    ref = F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), w, b, padding=1)
    out = up_conv3x3(x, w, b)
    assert out.shape == (2, 4, 18, 16)
    assert out.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert torch.allclose(out, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(ref)
    inputs = [x, w] + ([b] if bias else [])
    for ours, theirs in zip(torch.autograd.grad(out, inputs, g), torch.autograd.grad(ref, inputs, g)):
        assert torch.allclose(ours, theirs, rtol=1e-12, atol=1e-12)


def test_up_block_folds_only_where_it_was_measured_faster():
    """The module keeps a plain conv's parameters, folds at 8 px and more in full precision, and
    falls back to upsample-then-conv below 8 px and under autocast, with the same numbers."""
    blk = up_block(6, 3).double().eval()
    assert [k for k, _ in blk.named_parameters()] == ["1.weight", "2.weight", "2.bias"]
    conv = blk[1]
    assert isinstance(conv, UpConv3x3) and conv.weight.shape == (6, 6, 3, 3)
    assert UpConv3x3.folds(torch.zeros(1, 6, 8, 8)) and not UpConv3x3.folds(torch.zeros(1, 6, 4, 4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not UpConv3x3.folds(torch.zeros(1, 6, 8, 8))
    for side in (4, 8):
        x = torch.randn(2, 6, side, side, dtype=torch.float64)
        ref = F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), conv.weight, padding=1)
        assert torch.allclose(conv(x), ref, atol=1e-12)


def test_glu_layernorm_normalises_only_the_values_half():
    torch.manual_seed(0)
    m = GLULayerNorm(4)
    with torch.no_grad():
        m.norm.weight.uniform_(0.5, 2.0)
        m.norm.bias.uniform_(-1, 1)
    x = torch.randn(3, 8, 5, 5)
    y = m(x)
    assert y.shape == (3, 4, 5, 5)
    a, b = x[:, :4], x[:, 4:]
    mu = a.mean(dim=(1, 2, 3), keepdim=True)
    var = a.var(dim=(1, 2, 3), unbiased=False, keepdim=True)
    ln = (a - mu) / torch.sqrt(var + 1e-5) * m.norm.weight.view(1, 4, 1, 1) + m.norm.bias.view(1, 4, 1, 1)
    assert torch.allclose(y, ln * torch.sigmoid(b), atol=1e-5)
    # scaling and shifting the values half changes nothing (it is normalised) ...
    assert torch.allclose(m(torch.cat([3 * a + 1, b], 1)), y, atol=1e-4)
    # ... the gate half is not normalised: scaling it changes the output
    assert not torch.allclose(m(torch.cat([a, 3 * b], 1)), y, atol=1e-3)
    # per sample, not per batch: one sample alone gives the same numbers
    assert torch.allclose(m(x[:1]), y[:1], atol=1e-6)
    # the vector form (after the generators' first linear layer) normalises over features
    v = GLULayerNorm(6, spatial=False)
    xv = torch.randn(2, 12)
    ref = torch.nn.functional.layer_norm(xv[:, :6], (6,)) * torch.sigmoid(xv[:, 6:])
    assert torch.allclose(v(xv), ref, atol=1e-5)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("kind", ["up", "same", "res", "code"])
def test_bn_glu_blocks_keep_less_and_compute_the_same(kind, channels_last):
    """A GLU block in fp32 training keeps the BatchNorm's input only, and its outputs,
    gradients and running statistics match the modules run one by one."""
    from fgtool.nn.blocks import GLUBlock, ResBlock, code_block, same_block

    torch.manual_seed(0)
    make = {"up": lambda: up_block(6, 5), "same": lambda: same_block(6, 5), "res": lambda: ResBlock(6),
            "code": lambda: same_block(6 + 3, 5)}[kind]
    first = make()
    blocks = [first, copy.deepcopy(first)]
    x0 = torch.randn(4, 6, 8, 8)
    code = torch.randn(4, 3)
    if channels_last:
        x0 = x0.contiguous(memory_format=torch.channels_last)
    res, saved = [], []
    for naive, blk in zip((False, True), blocks):
        GLUBlock.naive = naive
        x = x0.clone().requires_grad_(True)
        n = [0]

        def pack(t, n=n):
            n[0] += t.numel()
            return t

        try:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                y = code_block(blk, x, code) if kind == "code" else blk(x)
        finally:
            GLUBlock.naive = False
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        bns = [m for m in blk.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        res.append([y, x.grad] + [p.grad for p in blk.parameters()]
                   + [b for m in bns for b in (m.running_mean, m.running_var, m.num_batches_tracked)])
        saved.append(n[0])
    assert torch.equal(res[0][0], res[1][0])  # the forward is the same computation
    for a, b in zip(*res):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # the BatchNorm output (2 x 5 or 2 x 6 channels at the block's size) is no longer kept
    side = 16 if kind == "up" else 8
    bn_out = 4 * side * side * (12 if kind == "res" else 10)
    assert 0 <= saved[1] - saved[0] - bn_out < 64  # less a few per-channel vectors


def test_bn_glu_keeps_the_plain_path_where_it_is_not_used():
    from fgtool.nn.bnglu import fusable

    bn = torch.nn.BatchNorm2d(4)
    x = torch.randn(2, 4, 4, 4, requires_grad=True)
    assert fusable(bn, x)
    assert fusable(bn, x.detach())  # the BatchNorm's weights still need gradients
    bn.requires_grad_(False)
    assert fusable(bn, x) and not fusable(bn, x.detach())
    assert not fusable(bn, x.double())
    with torch.no_grad():
        assert not fusable(bn, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not fusable(bn, x)
    assert not fusable(bn.eval(), x)
