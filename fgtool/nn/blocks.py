"""Layers shared by the backends (GLU up-blocks, residual blocks, patch discriminators).

Every helper takes widths and sizes as arguments so the same code builds the paper's
128 px networks and the 32 px test variants.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .bnglu import bn_glu, fusable, glu_view
from .upconv import UpConv3x3


def conv3x3(cin: int, cout: int, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, 1, 1, bias=bias)


class GLU(nn.Module):
    """Gated linear unit over channels: first half * sigmoid(second half).

    One fused kernel (``F.glu``), over the last dimension of an NHWC map: halving the
    channels of a channels_last tensor leaves two strided views, and the elementwise
    ``a * sigmoid(b)`` over them (or ``F.glu`` over dim 1) ran 2.3x slower forward and
    backward in fp32 on a CPU (docs/benchmarks.md)."""

    def forward(self, x: Tensor) -> Tensor:
        v, dim = glu_view(x)
        return F.glu(v, dim).permute(0, 3, 1, 2) if dim == -1 else F.glu(v, dim)


class GLUBlock(nn.Sequential):
    """An ``nn.Sequential`` whose ``BatchNorm2d, GLU`` pairs keep only the BatchNorm's input
    for backward in fp32 training on a CPU (:mod:`fgtool.nn.bnglu`); the same modules, names
    and numbers."""

    naive = False  # True: run the modules one by one everywhere (A/B timings and tests)

    def forward(self, x: Tensor) -> Tensor:
        mods = list(self)
        i = 0
        while i < len(mods):
            if (i + 1 < len(mods) and isinstance(mods[i + 1], GLU) and not GLUBlock.naive
                    and fusable(mods[i], x)):
                x = bn_glu(mods[i], x)
                i += 2
            else:
                x = mods[i](x)
                i += 1
        return x


def up_block(cin: int, cout: int) -> nn.Sequential:
    """Nearest x2, 3x3 conv to 2*cout, BN, GLU (the FineGAN/StackGAN up-block).

    The upsampling is folded into the conv (:class:`UpConv3x3`); index 0 is an empty
    placeholder so the parameter names stay those of Upsample-then-Conv2d."""
    return GLUBlock(nn.Identity(), UpConv3x3(cin, cout * 2), nn.BatchNorm2d(cout * 2), GLU())


def same_block(cin: int, cout: int) -> nn.Sequential:
    """3x3 conv to 2*cout, BN, GLU at the same resolution (joint conv / halving block)."""
    return GLUBlock(conv3x3(cin, cout * 2), nn.BatchNorm2d(cout * 2), GLU())


class ResBlock(nn.Module):
    """conv-BN-GLU-conv-BN plus identity."""

    def __init__(self, ch: int):
        super().__init__()
        self.body = GLUBlock(conv3x3(ch, ch * 2), nn.BatchNorm2d(ch * 2), GLU(),
                                  conv3x3(ch, ch), nn.BatchNorm2d(ch))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def n_up(size: int, start: int = 4) -> int:
    """Number of x2 up-blocks from ``start`` px to ``size`` px."""
    n = int(round(math.log2(size / start)))
    if start * 2**n != size:
        raise ValueError(f"size {size} is not {start} * 2^k")
    return n


class CodeToImageBackbone(nn.Module):
    """Linear(code -> 4x4xC, GLU) then up-blocks to ``size`` px, halving width to ``ngf``.

    At 128 px with ngf=64 this is FineGAN's backbone: 1024@4 -> ... -> 64@128.
    """

    def __init__(self, in_dim: int, ngf: int, size: int, top_mult: int = 16, extra_ch: int = 0,
                 widths: list[int] | None = None):
        super().__init__()
        top = ngf * top_mult
        self.top = top
        self.fc = nn.Sequential(nn.Linear(in_dim, top * 16 * 2, bias=False), nn.BatchNorm1d(top * 16 * 2), GLU())
        # extra_ch: a second code tiled onto the 4x4 map before the up-blocks (C3-GAN's c')
        # widths: each up-block's output width (default: halving down to ngf)
        blocks, ch, cin = [], top, top + extra_ch
        for i in range(n_up(size)):
            nxt = widths[i] if widths is not None else max(ch // 2, ngf)
            blocks.append(up_block(cin, nxt))
            ch = cin = nxt
        self.ups = nn.Sequential(*blocks)
        self.out_ch = ch

    def forward(self, code: Tensor, extra: Tensor | None = None) -> Tensor:
        h = self.fc(code).view(code.shape[0], self.top, 4, 4)
        if extra is not None:
            h = torch.cat([h, tile(extra, h)], 1)
        return self.ups(h)


def tile(code: Tensor, like: Tensor) -> Tensor:
    """Broadcast a [B,D] code to [B,D,H,W] like a feature map (for joint convs)."""
    return code[:, :, None, None].expand(-1, -1, like.shape[2], like.shape[3]).to(like.dtype)


def _taps(h: int, w: int, like: Tensor) -> Tensor:
    ones = torch.ones(1, 1, h, w, device=like.device, dtype=like.dtype)
    eye = torch.eye(9, device=like.device, dtype=like.dtype).view(9, 1, 3, 3)
    return F.conv2d(ones, eye, padding=1)[0]  # [9, H, W]: 1 where tap t reads inside


def code_conv(x: Tensor, code: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``conv3x3(cat(x, tile(code)))`` with ``weight`` over x's channels then the code's,
    computed without building the tiled tensor.

    A spatially constant code seen through a zero-padded 3x3 conv adds, at each pixel,
    the sum of the code weights of the taps that fall inside the image. So the code part
    is computed from a [B, Cout, 9] weight gather and a [9, H, W] tap-validity map,
    instead of convolving K extra channels (FineGAN's child stage at 128 px: 200 code
    channels against 64 feature channels). Same numbers up to float rounding.
    """
    if CodeConv.naive:
        return F.conv2d(torch.cat([x, tile(code, x)], 1), weight, bias, padding=1)
    cin = x.shape[1]
    out = F.conv2d(x, weight[:, :cin], bias, padding=1)
    wc = torch.einsum("bk,okt->bot", code.to(weight.dtype), weight[:, cin:].flatten(2))
    taps = _taps(x.shape[2], x.shape[3], out)
    return out + torch.einsum("bot,thw->bohw", wc.to(out.dtype), taps)


class CodeConv(nn.Module):
    """3x3 conv over ``cat(x, tile(code))`` without building the tiled tensor (see code_conv).

    One Conv2d weight over cin + code_dim channels, so checkpoints look like a plain conv's.
    """

    naive: bool = False  # benchmarks only: build the tiled tensor, as a reference

    def __init__(self, cin: int, code_dim: int, cout: int):
        super().__init__()
        self.cin = cin
        self.conv = nn.Conv2d(cin + code_dim, cout, 3, 1, 1, bias=False)

    def forward(self, x: Tensor, code: Tensor) -> Tensor:
        return code_conv(x, code, self.conv.weight)


def code_block(block: nn.Sequential, x: Tensor, code: Tensor) -> Tensor:
    """Run a ``same_block(cin + code_dim, cout)`` on ``cat(x, tile(code))`` through code_conv."""
    conv = block[0]
    return block[1:](code_conv(x, code, conv.weight, conv.bias))


def down_block(cin: int, cout: int, k: int = 4, s: int = 2, p: int = 1, bn: bool = True,
               bias: bool | None = None) -> nn.Sequential:
    """Strided conv, BN (optional), LeakyReLU 0.2. The conv has a bias where no BN follows,
    unless ``bias`` says otherwise (FineGAN's discriminators have none at all)."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, s, p, bias=(not bn) if bias is None else bias)]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    return nn.Sequential(*layers)


class ImageEncoder(nn.Module):
    """Strided convs from ``size`` px down to 4x4, doubling the width up to ``ndf*max_mult``.

    Trunk of the child/parent discriminators, the encoders and the clustering heads.
    ``top`` adds the authors' discriminator tops (their first conv then has no bias):
    ``"wide"`` is FineGAN's, whose last down-block doubles the width (at 128 px: 512 ->
    1024, 8 -> 4 px) before a 3x3 conv-BN-LReLU halves it back; ``"flat"`` is MixNMatch's
    parent and child D, a 3x3 conv-BN-LReLU at the trunk's width.
    """

    def __init__(self, ndf: int, size: int, in_ch: int = 3, bn: bool = True, top: str = "plain",
                 max_mult: int = 8):
        super().__init__()
        if top not in ("plain", "wide", "flat"):
            raise ValueError(f"top must be plain, wide or flat, got {top!r}")
        layers, ch = [down_block(in_ch, ndf, bn=False, bias=top == "plain")], ndf
        n = n_up(size) - 1
        for i in range(n):
            nxt = ch * 2 if top == "wide" and i == n - 1 else min(ch * 2, ndf * max_mult)
            layers.append(down_block(ch, nxt, bn=bn))  # bn=False: WGAN-GP critics (MixNMatch)
            ch = nxt
        if top != "plain":
            out = ch // 2 if top == "wide" else ch
            layers.append(nn.Sequential(conv3x3(ch, out), nn.BatchNorm2d(out), nn.LeakyReLU(0.2, inplace=True)))
            ch = out
        self.net = nn.Sequential(*layers)
        self.out_ch = ch

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def patch_geometry(size: int) -> list[tuple[int, int]]:
    """(kernel, stride) of FineGAN's background patch D, scaled with image size.

    128 px: k4s2, k4s2, k4s1 + k4s1 head = receptive field 34 (27% of the side), stride 4:
    the paper's 24x24 map on 126 px. Smaller images keep the field near that share of the
    side, so that patches outside the object box still exist: 64 px -> 18, 32 px -> 9.
    """
    if size >= 128:
        return [(4, 2), (4, 2), (4, 1), (4, 1)]
    if size >= 64:
        return [(4, 2), (4, 2), (3, 1), (1, 1)]
    return [(3, 1), (3, 2), (3, 1), (1, 1)]


def receptive_field(geom: list[tuple[int, int]]) -> tuple[int, int]:
    rf, jump = 1, 1
    for k, s in geom:
        rf += (k - 1) * jump
        jump *= s
    return rf, jump


def tiled_side(size: int) -> int:
    """The largest side <= ``size`` that the patch geometry of ``size`` tiles exactly (every
    pixel read by some patch): 126 at 128 px, as the authors' background D reads."""
    rf, stride = receptive_field(patch_geometry(size))
    return size - (size - rf) % stride


def resize_square(x: Tensor, side: int) -> Tensor:
    """``x`` resized to side x side, bilinear with corners aligned (the authors' 128 -> 126);
    unchanged when it already has that size."""
    if x.shape[-2:] == (side, side):
        return x
    return F.interpolate(x, size=(side, side), mode="bilinear", align_corners=True)


class PatchDiscriminator(nn.Module):
    """Valid-padding conv stack with two patch heads: real/fake and background/foreground.

    The default is FineGAN's background D (and OneGAN's): no BatchNorm and no conv bias in the
    trunk. ``bn=True`` adds BatchNorm after every conv but the first; no model uses it, it is
    the contrast in tests/bench/patch_d_probe.py (such a D is blind to a colour shift between
    an all-real and an all-fake batch).
    """

    def __init__(self, ndf: int, size: int, in_ch: int = 3, bn: bool = False):
        super().__init__()
        geom = patch_geometry(size)
        self.rf, self.stride = receptive_field(geom)
        # the largest side <= size whose patches tile it exactly (FineGAN: 126 at 128 px)
        self.side = tiled_side(size)
        chans = [in_ch, ndf, ndf * 2, ndf * 4]
        layers = []
        for i, (k, s) in enumerate(geom[:-1]):
            layers.append(down_block(chans[i], chans[i + 1], k, s, 0, bn=bn and i > 0, bias=None if bn else False))
        self.trunk = nn.Sequential(*layers)
        k, s = geom[-1]
        self.adv = nn.Conv2d(chans[3], 1, k, s, 0)
        self.aux = nn.Conv2d(chans[3], 1, k, s, 0)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.trunk(x)
        return self.adv(h), self.aux(h)

    def patch_weights(self, box_mask: Tensor, out_hw: tuple[int, int], thresh: float = 1.0) -> Tensor:
        """Per-patch background labels from a box mask [B,1,H,W] (1 inside the box).

        A patch is background when at least ``thresh`` of its receptive field lies
        outside the box; thresh=1 is FineGAN's rule (the field must not touch the box).
        """
        inside = F.avg_pool2d(box_mask.float(), self.rf, self.stride)
        if inside.shape[-2:] != out_hw:
            inside = F.interpolate(inside, size=out_hw, mode="nearest")
        return (1.0 - inside >= thresh - 1e-6).float()

    def box_labels(self, box: Tensor, n_out: int, thresh: float = 1.0) -> Tensor:
        """Per-patch background labels [B,1,n,n] from boxes [B,4] = (x1, y1, x2, y2) in the
        pixels of the D's input. Patch (i, j) reads rows [i*stride, i*stride + rf) and the
        same columns. ``thresh=1`` is the authors' FineGAN rule: a patch is object when its
        field reaches the box, ends included (i*stride + rf >= y1 and i*stride <= y2, and
        the same for x), and a box with no width or height marks nothing. ``thresh < 1``: a
        patch is background when at least that share of its field lies outside the box."""
        start = torch.arange(n_out, device=box.device, dtype=torch.float32) * self.stride
        b = box.float()
        x1, y1, x2, y2 = (b[:, k, None] for k in range(4))
        if thresh >= 1.0:
            ty = (start + self.rf >= y1) & (start <= y2)
            tx = (start + self.rf >= x1) & (start <= x2)
            obj = ty[:, :, None] & tx[:, None, :] & ((x1 != x2) & (y1 != y2))[:, :, None]
            return (~obj).float()[:, None]
        oy = ((torch.minimum(start + self.rf, y2) - torch.maximum(start, y1)).clamp(min=0)) / self.rf
        ox = ((torch.minimum(start + self.rf, x2) - torch.maximum(start, x1)).clamp(min=0)) / self.rf
        inside = oy[:, :, None] * ox[:, None, :]
        return (1.0 - inside >= thresh - 1e-6).float()[:, None]


@contextlib.contextmanager
def eval_mode(m: nn.Module):
    """Run a frozen net as at inference (BatchNorm running statistics, none updated), then
    restore its mode: MixNMatch's stage 2 and GANSeg's segmenter render from a frozen G."""
    was = m.training
    m.eval()
    try:
        yield m
    finally:
        m.train(was)


@torch.no_grad()
def ema_update(ema: nn.Module, src: nn.Module, decay: float, average_buffers: bool = False) -> None:
    """Move ``ema``'s parameters towards ``src``'s by ``1 - decay`` (0 = a copy). Buffers
    are copied, or with ``average_buffers`` the floating ones (BatchNorm statistics) are
    averaged like the weights, so that lagging weights keep statistics that match them."""
    ep = [p for p in ema.parameters()]
    sp = [p.detach() for p in src.parameters()]
    if ep:
        torch._foreach_lerp_(ep, [s.to(e.dtype) for s, e in zip(sp, ep)], 1.0 - decay)
    for eb, sb in zip(ema.buffers(), src.buffers()):
        if average_buffers and eb.is_floating_point():
            eb.lerp_(sb.to(eb.dtype), 1.0 - decay)
        else:
            eb.copy_(sb)


def init_weights(module: nn.Module, kind: str = "orthogonal") -> None:
    """FineGAN's init: orthogonal convs/linears, BN weight N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.ConvTranspose2d)):
            if kind == "orthogonal":
                nn.init.orthogonal_(m.weight, 1.0)
            else:
                nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class InfoDiscriminator(nn.Module):
    """Image trunk to 4x4, an optional real/fake head and a code-classifier (info) head.

    FineGAN's parent D (info only) and child D (adv + info); also the encoders of
    MixNMatch. ``features`` gives the pooled trunk output for clustering.
    """

    def __init__(self, ndf: int, size: int, n_classes: int, adv: bool = True, in_ch: int = 3,
                 top: str = "plain"):
        super().__init__()
        self.trunk = ImageEncoder(ndf, size, in_ch, top=top)
        ch = self.trunk.out_ch
        self.info = nn.Sequential(nn.Conv2d(ch, ch, 3, 1, 1, bias=False), nn.BatchNorm2d(ch),
                                  nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(ch, n_classes, 4, 1, 0))
        self.adv = nn.Conv2d(ch, 1, 4, 1, 0) if adv else None

    def forward_adv(self, x: Tensor) -> Tensor:
        return self.adv(self.trunk(x)).flatten(1)

    def forward_info(self, x: Tensor) -> Tensor:
        return self.info(self.trunk(x)).flatten(1)

    def forward(self, x: Tensor) -> tuple[Tensor | None, Tensor]:
        h = self.trunk(x)
        return (self.adv(h).flatten(1) if self.adv is not None else None), self.info(h).flatten(1)


class Classifier(nn.Module):
    """Conv trunk + global average pool + linear: a code re-predictor (FineGAN's phi)."""

    def __init__(self, ndf: int, size: int, n_classes: int):
        super().__init__()
        self.trunk = ImageEncoder(ndf, size)
        self.head = nn.Linear(self.trunk.out_ch, n_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.trunk(x).mean(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


# ----------------------------------------------------------------------------- spatially conditioned blocks


class SPADE(nn.Module):
    """Spatially-adaptive (de)normalisation (Park et al. 2019): ``BN(x) * (1 + gamma(s)) + beta(s)``.

    BatchNorm without affine over x; gamma and beta are per-pixel maps computed from the
    conditioning map ``s`` by a shared 3x3 conv + ReLU and two 3x3 convs. ``s`` is resized
    (nearest) to x's size if the two differ.
    """

    def __init__(self, ch: int, cond_ch: int, hidden: int = 128):
        super().__init__()
        self.norm = nn.BatchNorm2d(ch, affine=False)
        self.shared = nn.Sequential(nn.Conv2d(cond_ch, hidden, 3, 1, 1), nn.ReLU(inplace=True))
        self.gamma = nn.Conv2d(hidden, ch, 3, 1, 1)
        self.beta = nn.Conv2d(hidden, ch, 3, 1, 1)

    def forward(self, x: Tensor, s: Tensor) -> Tensor:
        if s.shape[-2:] != x.shape[-2:]:
            s = F.interpolate(s, size=x.shape[-2:], mode="nearest")
        h = self.shared(s)
        return self.norm(x) * (1 + self.gamma(h)) + self.beta(h)


class SPADEResBlock(nn.Module):
    """SPADE, LReLU, conv3x3, SPADE, LReLU, conv3x3 plus a (SPADE + 1x1 conv when widths differ)
    shortcut: the residual block of SPADE/GauGAN, used by GANSeg's mask and foreground
    generators."""

    def __init__(self, cin: int, cout: int, cond_ch: int, hidden: int = 128):
        super().__init__()
        mid = min(cin, cout)
        self.n0, self.c0 = SPADE(cin, cond_ch, hidden), nn.Conv2d(cin, mid, 3, 1, 1)
        self.n1, self.c1 = SPADE(mid, cond_ch, hidden), nn.Conv2d(mid, cout, 3, 1, 1)
        self.learned = cin != cout
        if self.learned:
            self.ns, self.cs = SPADE(cin, cond_ch, hidden), nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: Tensor, s: Tensor) -> Tensor:
        short = self.cs(self.ns(x, s)) if self.learned else x
        h = self.c0(F.leaky_relu(self.n0(x, s), 0.2))
        h = self.c1(F.leaky_relu(self.n1(h, s), 0.2))
        return short + h


class AdaINConvBlock(nn.Module):
    """conv3x3, BatchNorm (no affine), per-channel ``gamma``/``beta`` from a style vector by
    two linear layers, LReLU: the AdaIN ConvBlock of GANSeg (BatchNorm instead of
    InstanceNorm, as its supplement says)."""

    def __init__(self, cin: int, cout: int, style_dim: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, 1, 1)
        self.norm = nn.BatchNorm2d(cout, affine=False)
        self.gamma = nn.Linear(style_dim, cout)
        self.beta = nn.Linear(style_dim, cout)

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        h = self.norm(self.conv(x))
        g, b = self.gamma(style)[:, :, None, None], self.beta(style)[:, :, None, None]
        return F.leaky_relu(h * (1 + g) + b, 0.2)


def mlp(din: int, hidden: int, dout: int, layers: int = 3) -> nn.Sequential:
    """``layers`` linear layers with LReLU between them (none after the last)."""
    mods: list[nn.Module] = []
    d = din
    for _ in range(layers - 1):
        mods += [nn.Linear(d, hidden), nn.LeakyReLU(0.2, inplace=True)]
        d = hidden
    mods.append(nn.Linear(d, dout))
    return nn.Sequential(*mods)


class SmallSegmenter(nn.Module):
    """A narrow DeepLab-style segmenter for CPU runs: a conv trunk to 1/4 resolution, a
    dilated-conv context head (rates 1, 2, 4: an ASPP without the global branch), a 1/2
    resolution skip, and bilinear upsampling back to the input size. Returns logits
    [N, n_classes, H, W]."""

    def __init__(self, n_classes: int, width: int = 32, in_ch: int = 3):
        super().__init__()
        w = width

        def cbr(a, b, s=1, d=1):
            return nn.Sequential(nn.Conv2d(a, b, 3, s, d, dilation=d, bias=False), nn.BatchNorm2d(b),
                                 nn.ReLU(inplace=True))

        self.stem = nn.Sequential(cbr(in_ch, w), cbr(w, w))
        self.down1 = nn.Sequential(cbr(w, 2 * w, s=2), cbr(2 * w, 2 * w))
        self.down2 = nn.Sequential(cbr(2 * w, 4 * w, s=2), cbr(4 * w, 4 * w))
        self.aspp = nn.ModuleList([cbr(4 * w, 2 * w, d=r) for r in (1, 2, 4)])
        self.fuse = cbr(6 * w, 4 * w)
        self.up1 = cbr(4 * w + 2 * w, 2 * w)
        self.up0 = cbr(2 * w + w, w)
        self.head = nn.Conv2d(w, n_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        s0 = self.stem(x)
        s1 = self.down1(s0)
        h = self.down2(s1)
        h = self.fuse(torch.cat([a(h) for a in self.aspp], 1))
        h = F.interpolate(h, size=s1.shape[-2:], mode="bilinear", align_corners=False)
        h = self.up1(torch.cat([h, s1], 1))
        h = F.interpolate(h, size=s0.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(self.up0(torch.cat([h, s0], 1)))


class TorchvisionSegmenter(nn.Module):
    """torchvision's DeepLabV3 (ResNet-50 or MobileNetV3-Large backbone), never with
    pretrained weights; returns the ``out`` logits [N, n_classes, H, W]."""

    ARCHS = ("deeplabv3_resnet50", "deeplabv3_mobilenet_v3_large")

    def __init__(self, arch: str, n_classes: int):
        super().__init__()
        from torchvision.models import segmentation as tvseg

        self.net = getattr(tvseg, arch)(weights=None, weights_backbone=None, num_classes=n_classes,
                                        aux_loss=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)["out"]


# ----------------------------------------------------------------------------- layer-normalised GLU blocks (OneGAN)


class GLULayerNorm(nn.Module):
    """OneGAN's fused normalisation and activation: ``GLU(LN(xL), xR) = LN(xL) * sigmoid(xR)``.

    The input has ``2 * ch`` channels, split in halves: only the left half (the values) is
    layer-normalised; the right half (the gate) is not, so it stays a per-position mask.
    LayerNorm of a feature map normalises each sample over (C, H, W) with a per-channel
    affine (``GroupNorm(1, ch)``); of a vector [N, 2*ch], over its ``ch`` features. Unlike
    BatchNorm it does not depend on the batch, so paths with different inputs (generation,
    reconstruction of fakes, of reals) can share the layers.
    """

    def __init__(self, ch: int, spatial: bool = True):
        super().__init__()
        self.norm = nn.GroupNorm(1, ch) if spatial else nn.LayerNorm(ch)

    def forward(self, x: Tensor) -> Tensor:
        a, b = x.chunk(2, dim=1)
        return self.norm(a) * torch.sigmoid(b)


def ln_up_block(cin: int, cout: int) -> nn.Sequential:
    """Nearest x2, 3x3 conv to 2*cout, GLU-LayerNorm."""
    return nn.Sequential(nn.Identity(), UpConv3x3(cin, cout * 2), GLULayerNorm(cout))


def ln_same_block(cin: int, cout: int) -> nn.Sequential:
    """3x3 conv to 2*cout, GLU-LayerNorm (also a joint conv through :func:`code_block`)."""
    return nn.Sequential(conv3x3(cin, cout * 2), GLULayerNorm(cout))


class LNResBlock(nn.Module):
    """conv, GLU-LayerNorm, conv, LayerNorm, plus identity."""

    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(conv3x3(ch, ch * 2), GLULayerNorm(ch), conv3x3(ch, ch), nn.GroupNorm(1, ch))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def ln_down_block(cin: int, cout: int, norm: bool = True) -> nn.Sequential:
    """4x4 stride-2 conv, LayerNorm (optional), LeakyReLU 0.2: a batch-independent encoder step."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 4, 2, 1, bias=not norm)]
    if norm:
        layers.append(nn.GroupNorm(1, cout))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    return nn.Sequential(*layers)
