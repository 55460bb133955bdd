"""GANSeg's networks and penalties: the compact generator, teacher and discriminator, and
the authors' architecture tensor for tensor (``arch = "paper"``; see fgtool/backends/ganseg.py)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn.blocks import (
    AdaINConvBlock,
    ImageEncoder,
    SPADEResBlock,
    ema_update,
    mlp,
)
from ..nn.compose import RelativeFourier, crop_margin, gaussian_heatmaps, pixel_grid, upsample_crop

if TYPE_CHECKING:  # annotations only: the config lives with its backend
    from .ganseg import GANSegConfig


class GANSegGenerator(nn.Module):
    def __init__(self, cfg: GANSegConfig, size: int):
        super().__init__()
        c = cfg
        self.k, self.n_per, self.div = c.n_parts, c.n_per, c.point_div
        self.size = size
        self.r0 = size // c.start_div
        self.ups = int(round(math.log2(c.start_div)))
        self.margin = max(3, round(10 * size / 128)) if c.margin == "auto" else c.margin
        self.floor = c.sigma_floor
        self.blend = c.blend
        e = c.emb_dim
        self.point_mlp = mlp(c.z_dim, c.mlp_hidden, self.k * self.n_per * 2)
        self.obj_div = c.object_div
        self.object_mlp = mlp(c.z_dim, c.mlp_hidden, 2) if c.object_div > 0 else None
        self.app_mlp = mlp(c.z_dim, c.mlp_hidden, e)
        self.w_const = nn.Parameter(torch.randn(self.k, e))
        self.bg_mlp = mlp(c.z_dim, c.mlp_hidden, e)
        # He-normal init (our choice; the paper does not say): outputs of unit scale, so that
        # tanh(MLP / point_div) starts with parts spread by about 1 / point_div, and the
        # embeddings condition the SPADE blocks from step 0 (torch's default init gives
        # outputs ~0.04: points stuck at the centre for thousands of steps)
        for net in (self.point_mlp, self.app_mlp, self.bg_mlp) + ((self.object_mlp,) if self.object_mlp else ()):
            for lin in net:
                if isinstance(lin, nn.Linear):
                    nn.init.kaiming_normal_(lin.weight, a=0.2)
                    nn.init.zeros_(lin.bias)
        # level 2: masks
        self.mask_pe = RelativeFourier(self.k * self.n_per, c.mask_ch)
        self.mask_blocks = nn.ModuleList([SPADEResBlock(c.mask_ch, c.mask_ch, e, c.spade_hidden)
                                          for _ in range(c.mask_blocks)])
        self.mask_out = nn.Conv2d(c.mask_ch, self.k + 1, 3, 1, 1)
        # level 3: foreground (SPADE) and background (AdaIN), one block per resolution
        chs = [max(c.gen_min_ch, c.gen_ch // 2 ** i) for i in range(self.ups + 1)]
        self.fg_pe = RelativeFourier(self.k, chs[0])
        self.bg_pe = RelativeFourier(1, chs[0])
        self.fg_blocks = nn.ModuleList([SPADEResBlock(chs[max(0, i - 1)], chs[i], e, c.spade_hidden)
                                        for i in range(self.ups + 1)])
        self.bg_blocks = nn.ModuleList([AdaINConvBlock(chs[max(0, i - 1)], chs[i], e)
                                        for i in range(self.ups + 1)])
        ch = chs[-1]
        self.to_rgb = nn.Sequential(nn.Conv2d(ch, ch, 3, 1, 1), nn.LeakyReLU(0.2), nn.Conv2d(ch, 3, 3, 1, 1))

    # level 1
    def points(self, z_point: Tensor) -> Tensor:
        """[N, K, n_per, 2] in (-1, 1)."""
        pre = self.point_mlp(z_point).float().view(-1, self.k, self.n_per, 2) / self.div
        if self.object_mlp is not None:
            pre = pre + (self.object_mlp(z_point).float() / self.obj_div)[:, None, None, :]
        return torch.tanh(pre)

    @staticmethod
    def geometry(points: Tensor) -> tuple[Tensor, Tensor]:
        """Part centres [N, K, 2] and scales [N, K] (eq. 1: root sum of squares / (n - 1))."""
        centre = points.mean(2)
        n = points.shape[2]
        sigma = ((points - centre[:, :, None]) ** 2).sum((2, 3)).clamp_min(1e-12).sqrt() / max(1, n - 1)
        return centre, sigma

    def forward(self, codes: dict[str, Tensor], layers: bool = False) -> dict[str, Tensor]:
        m = self.margin
        pts = codes["points"].float() if "points" in codes else self.points(codes["z_point"])
        centre, sigma = self.geometry(pts)
        w = self.app_mlp(codes["z_app"])[:, None, :] * self.w_const[None]  # [N, K, E]
        dev = pts.device
        grid = pixel_grid(self.r0, m, device=dev)
        heat = gaussian_heatmaps(grid, centre, sigma, self.floor)  # [N, K, h, w]
        cond = torch.einsum("nkhw,nke->nehw", heat, w.float())
        h = self.mask_pe(grid, pts.flatten(1, 2))
        for blk in self.mask_blocks:
            h = blk(h, cond)
        masks = torch.softmax(self.mask_out(F.leaky_relu(h, 0.2)).float(), 1)  # [N, K+1, h, w]
        # foreground and background, one block per resolution, upsample + crop in between
        f = self.fg_pe(grid, centre)
        b = self.bg_pe(grid, codes["u_bg"].float()[:, None, :])
        w_bg = self.bg_mlp(codes["z_bg"])
        mk = masks
        for i, (fb, bb) in enumerate(zip(self.fg_blocks, self.bg_blocks)):
            f = fb(f, torch.einsum("nkhw,nke->nehw", mk[:, :self.k], w.float()))
            b = bb(b, w_bg)
            if i < self.ups:
                f, b, mk = upsample_crop(f, m), upsample_crop(b, m), upsample_crop(mk, m)
        m_bg = mk[:, self.k:]
        fg_rgb = bg_rgb = None
        if self.blend == "rgb":
            fg_rgb, bg_rgb = torch.tanh(self.to_rgb(f)), torch.tanh(self.to_rgb(b))
            image = (1 - m_bg) * fg_rgb + m_bg * bg_rgb
        else:
            image = torch.tanh(self.to_rgb((1 - m_bg) * f + m_bg * b))
        out = {"image": crop_margin(image, m), "parts": crop_margin(mk, m), "mask": crop_margin(1 - m_bg, m),
               "points": pts, "centres": centre, "sigma": sigma, "heat": heat, "masks_low": masks,
               "grid": grid}
        if layers:
            out["foreground"] = crop_margin(fg_rgb if fg_rgb is not None else torch.tanh(self.to_rgb(f)), m)
            out["background"] = crop_margin(bg_rgb if bg_rgb is not None else torch.tanh(self.to_rgb(b)), m)
        return out


class Teacher(nn.Module):
    """The self-training teacher: a copy of the segmenter, taken the first time it is asked
    to follow (``ready`` is saved, so a resumed run keeps its teacher), then moved towards
    the segmenter by an EMA of ``decay`` per step, weights and BatchNorm statistics alike
    (1 = never: a frozen snapshot)."""

    def __init__(self, seg: nn.Module):
        super().__init__()
        import copy

        self.net = copy.deepcopy(seg).requires_grad_(False)
        self.register_buffer("ready", torch.zeros(()))
        self._ready = False

    @torch.no_grad()
    def follow(self, seg: nn.Module, decay: float) -> None:
        if not self._ready:  # the buffer is read once per process (a host sync on a GPU)
            self._ready = bool(self.ready)
            if not self._ready:
                self.net.load_state_dict(seg.state_dict())
                self.ready.fill_(1.0)
                self._ready = True
                return
        if decay < 1.0:
            ema_update(self.net, seg, decay, average_buffers=True)


class GANSegDiscriminator(nn.Module):
    """Stride-2 4x4 convs with LeakyReLU, no normalisation, to 4x4; a 4x4 conv to one logit."""

    def __init__(self, ndf: int, size: int):
        super().__init__()
        enc = ImageEncoder(ndf, size, bn=False)
        self.net = nn.Sequential(enc, nn.Conv2d(enc.out_ch, 1, 4))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).flatten(1)


def _f32(x: Tensor) -> Tensor:
    """At least fp32 (float64 stays float64)."""
    return x if x.dtype == torch.float64 else x.float()


def dice_per_image(logits: Tensor, target: Tensor, eps: float = 1e-8) -> Tensor:
    """The authors' Dice loss: 1 - soft Dice between softmax(logits) and one-hot(target)
    per image and class (smoothed by ``eps``), averaged over both."""
    p = _f32(logits).softmax(1)
    onehot = F.one_hot(target, p.shape[1]).permute(0, 3, 1, 2).to(p)
    inter = 2 * (p * onehot).sum((2, 3)) + eps
    return (1 - inter / (p.sum((2, 3)) + onehot.sum((2, 3)) + eps)).mean()


def r1_penalty(D: nn.Module, real: Tensor) -> Tensor:
    """E ||grad_x D(x)||^2 on real images, forward and double backward in fp32 (also
    inside a bf16/fp16 autocast region)."""
    with torch.autocast(device_type=real.device.type, enabled=False):
        x = real.detach().float().requires_grad_(True)
        out = D(x)
        (g,) = torch.autograd.grad(out.float().sum(), x, create_graph=True)
        return g.pow(2).flatten(1).sum(1).mean()


def corner_grid(res: int, margin: int, device=None, dtype=torch.float32) -> Tensor:
    """[res + 2m, res + 2m, 2] coordinates as the authors' code lays them out: the image's
    pixels span [-1, 1] corner to corner (linspace), the margin continues the spacing, and
    coordinate 0 runs down the rows, coordinate 1 along the columns."""
    step = 2.0 / (res - 1)
    end = 1.0 + step * margin
    c = torch.linspace(-end, end, res + 2 * margin, device=device, dtype=dtype)
    r, q = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([r, q], -1)


class PaperSPADE(nn.Module):
    """BatchNorm without affine, modulated by two 3x3 convs of a 3x3 conv of the map."""

    def __init__(self, ch: int, cond: int, hidden: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(ch, affine=False)
        self.conv = nn.Conv2d(cond, hidden, 3, 1, 1)
        self.conv_gamma = nn.Conv2d(hidden, ch, 3, 1, 1)
        self.conv_beta = nn.Conv2d(hidden, ch, 3, 1, 1)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        h = F.leaky_relu(self.conv(cond), 0.2)
        return (1 + self.conv_gamma(h)) * self.norm(x) + self.conv_beta(h)


class PaperSPADEResBlock(nn.Module):
    """SPADE, LReLU, 3x3 conv, twice (the middle width is the smaller of in and out); a
    learned shortcut (SPADE then a 3x3 conv, no activation) when the width changes."""

    def __init__(self, cin: int, cout: int, cond: int, hidden: int):
        super().__init__()
        mid = min(cin, cout)
        self.spade1, self.conv1 = PaperSPADE(cin, cond, hidden), nn.Conv2d(cin, mid, 3, 1, 1)
        self.spade2, self.conv2 = PaperSPADE(mid, cond, hidden), nn.Conv2d(mid, cout, 3, 1, 1)
        self.learn_shortcut = cin != cout
        if self.learn_shortcut:
            self.spade_shortcut = PaperSPADE(cin, cond, hidden)
            self.conv_shortcut = nn.Conv2d(cin, cout, 3, 1, 1)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        h = self.conv1(F.leaky_relu(self.spade1(x, cond), 0.2))
        h = self.conv2(F.leaky_relu(self.spade2(h, cond), 0.2))
        s = self.conv_shortcut(self.spade_shortcut(x, cond)) if self.learn_shortcut else x
        return h + s


class PaperAdaINBlock(nn.Module):
    """BatchNorm without affine modulated by an MLP of the style vector, LReLU, 3x3 conv."""

    def __init__(self, cin: int, cout: int, style: int, hidden: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(cin, affine=False)
        self.fc = nn.Linear(style, hidden)
        self.fc_gamma, self.fc_beta = nn.Linear(hidden, cin), nn.Linear(hidden, cin)
        self.conv = nn.Conv2d(cin, cout, 3, 1, 1)

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        h = F.leaky_relu(self.fc(style), 0.2)
        y = (1 + self.fc_gamma(h)[:, :, None, None]) * self.norm(x) + self.fc_beta(h)[:, :, None, None]
        return self.conv(F.leaky_relu(y, 0.2))


class PaperFourier(nn.Module):
    """``sin, cos(pi * conv1x1(p_i - x))`` of the offsets from n points to every pixel."""

    def __init__(self, n: int, ch: int):
        super().__init__()
        self.pe = nn.Conv2d(2 * n, ch // 2, 1)

    def forward(self, grid: Tensor, pts: Tensor) -> Tensor:  # grid [H, W, 2], pts [N, n, 2]
        d = pts[:, :, None, None, :] - grid[None, None]  # [N, n, H, W, 2]
        d = d.permute(0, 1, 4, 2, 3).flatten(1, 2)  # channels (p0 axis 0, p0 axis 1, p1 ...)
        x = self.pe(d) * math.pi
        return torch.cat([torch.sin(x), torch.cos(x)], 1)


def _paper_mlp(din: int, hidden: int, dout: int, hidden_layers: int) -> nn.Sequential:
    mods: list[nn.Module] = []
    d = din
    for _ in range(hidden_layers):
        mods += [nn.Linear(d, hidden), nn.LeakyReLU(0.2)]
        d = hidden
    mods.append(nn.Linear(d, dout))
    return nn.Sequential(*mods)


class PaperGenerator(nn.Module):
    """The generator of the authors' code (their CUB / flowers configuration), scaled by
    the config: two blocks per resolution from size / start_div up to size; widths gen_ch
    (the start encodings), then gen_ch / 2 twice, gen_ch / 4 twice, ..., the last
    resolution's blocks at emb_dim. Three mask, foreground and background paths:

    - points ``tanh(MLP(z) / point_div)`` (a 4-hidden-layer MLP), part centres their mean;
      part embeddings ``MLP(z_app) * w_k`` (3 hidden layers, ``w_k`` an embedding table);
    - masks: a Fourier encoding of every point's offset starts SPADE ResBlocks that run up to
      the full size, each conditioned on cone heatmaps ``max(0, 1 - |p - x_k| / tau_k)``
      (``tau_k`` the mean absolute offset of part k's points) at its own resolution, times
      the embeddings; the softmax of the last block's K + 1 channels are the masks;
    - foreground: SPADE ResBlocks from an encoding of the centres' offsets, conditioned on
      the K part masks resized to each resolution (edge-padded margin) times the embeddings;
    - background: AdaIN blocks from an encoding of the offset to a shift that moves along
      coordinate 1 only (the authors zero coordinate 0 of ``u_bg``);
    - ``image = tanh(conv(LReLU(conv(LReLU((1 - m_bg) F + m_bg B)))))``.

    Coordinates are the authors' (``corner_grid``: coordinate 0 down the rows); the outputs
    ``points`` and ``centres`` are turned to ours (x, y). BatchNorm without affine in every
    block; every conv and linear He-normal (a = 0.2) with zero bias."""

    def __init__(self, cfg: GANSegConfig, size: int):
        super().__init__()
        c = cfg
        self.k, self.n_per, self.div, self.size = c.n_parts, c.n_per, c.point_div, size
        self.margin = max(3, round(10 * size / 128)) if c.margin == "auto" else c.margin
        n_res = int(round(math.log2(c.start_div))) + 1
        self.sizes = [size // c.start_div * 2 ** (i // 2) for i in range(2 * n_res)]
        e, p = c.emb_dim, self.k * self.n_per
        self.point_mlp = _paper_mlp(c.z_dim, c.mlp_hidden, p * 2, 4)
        self.app_mlp = _paper_mlp(c.z_dim, c.mlp_hidden, e, 3)
        self.bg_mlp = _paper_mlp(c.z_dim, c.mlp_hidden, e, 3)
        self.w_const = nn.Parameter(torch.randn(self.k, e))
        outs = [e if i >= 2 * (n_res - 1) else c.gen_ch >> (1 + i // 2) for i in range(2 * n_res)]
        ins = [c.gen_ch] + outs[:-1]
        h = c.spade_hidden
        self.mask_blocks = nn.ModuleList([PaperSPADEResBlock(c.gen_ch if i == 0 else e,
                                                             self.k + 1 if i == 2 * n_res - 1 else e, e, h)
                                          for i in range(2 * n_res)])
        self.fg_blocks = nn.ModuleList([PaperSPADEResBlock(a, b, e, h) for a, b in zip(ins, outs)])
        self.bg_blocks = nn.ModuleList([PaperAdaINBlock(a, b, e, h) for a, b in zip(ins, outs)])
        self.fg_pe, self.mask_pe, self.bg_pe = (PaperFourier(self.k, c.gen_ch), PaperFourier(p, c.gen_ch),
                                                PaperFourier(1, c.gen_ch))
        self.to_rgb = nn.Sequential(nn.Conv2d(e, e, 3, 1, 1), nn.LeakyReLU(0.2), nn.Conv2d(e, 3, 3, 1, 1))
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, a=0.2)
                nn.init.zeros_(m.bias)

    def _up(self, x: Tensor) -> Tensor:
        return crop_margin(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False), self.margin)

    def _cone(self, centre: Tensor, tau: Tensor, res: int) -> Tensor:
        grid = corner_grid(res, self.margin, centre.device, centre.dtype)
        d = (centre[:, :, None, None, :] - grid[None, None]).norm(dim=-1)
        return (1 - d / tau[:, :, None, None]).clamp_min(0)

    def forward(self, codes: dict[str, Tensor], layers: bool = False) -> dict[str, Tensor]:
        m, k = self.margin, self.k
        if "points" in codes:  # ours (x, y) -> theirs (row, column)
            pts = codes["points"].flatten(1, 2).flip(-1).to(self.w_const.dtype)
        else:
            pts = torch.tanh(self.point_mlp(codes["z_point"]).view(-1, k * self.n_per, 2) / self.div)
        kp = pts.view(-1, k, self.n_per, 2).mean(2)  # [N, K, 2]
        tau = (pts.view(-1, k, self.n_per, 2) - kp[:, :, None]).abs().mean((2, 3))  # [N, K]
        w = self.w_const[None] * self.app_mlp(codes["z_app"])[:, None]  # [N, K, E]
        grid0 = corner_grid(self.sizes[0], m, pts.device, pts.dtype)
        # masks, up to the full size
        h = self.mask_pe(grid0, pts)
        for i, blk in enumerate(self.mask_blocks):
            heat = self._cone(kp, tau + 1e-6, self.sizes[i])
            h = blk(h, torch.einsum("nkhw,nke->nehw", heat, w))
            if i + 1 < len(self.sizes) and self.sizes[i + 1] != self.sizes[i]:
                h = self._up(h)
        masks = torch.softmax(crop_margin(h, m), 1)  # [N, K+1, S, S], the last the background
        init = crop_margin(heat, m)
        # foreground
        f = self.fg_pe(grid0, kp)
        for i, blk in enumerate(self.fg_blocks):
            mk = F.interpolate(masks[:, :k], size=self.sizes[i], mode="bilinear", align_corners=False)
            mk = F.pad(mk, (m, m, m, m), mode="replicate")
            f = blk(f, torch.einsum("nkhw,nke->nehw", mk, w))
            if i + 1 < len(self.sizes) and self.sizes[i + 1] != self.sizes[i]:
                f = self._up(f)
        f = crop_margin(f, m)
        # background: the shift moves along coordinate 1 only
        u = codes["u_bg"].to(pts.dtype)
        u = torch.stack([torch.zeros_like(u[:, 1]), u[:, 1]], -1)[:, None]
        b = self.bg_pe(grid0, u)
        w_bg = self.bg_mlp(codes["z_bg"])
        for i, blk in enumerate(self.bg_blocks):
            b = blk(b, w_bg)
            if i + 1 < len(self.sizes) and self.sizes[i + 1] != self.sizes[i]:
                b = self._up(b)
        b = crop_margin(b, m)
        m_bg = masks[:, k:]
        image = torch.tanh(self.to_rgb(F.leaky_relu((1 - m_bg) * f + m_bg * b, 0.2)))
        out = {"image": image, "parts": masks, "mask": 1 - m_bg,
               "points": pts.view(-1, k, self.n_per, 2).flip(-1), "centres": kp.flip(-1), "sigma": tau,
               "heat": init, "kp_raw": kp, "points_raw": pts, "fg_features": f, "bg_features": b}
        if layers:  # each layer rendered alone, through the same head
            out["foreground"] = torch.tanh(self.to_rgb(F.leaky_relu(f, 0.2)))
            out["background"] = torch.tanh(self.to_rgb(F.leaky_relu(b, 0.2)))
        return out


def paper_penalties(out: dict[str, Tensor], k: int, n_per: int, size: int) -> tuple[Tensor, Tensor]:
    """The authors' concentration and area penalties, on PaperGenerator's full-size part
    masks: the squared distance of each pixel to its part's centre, averaged under the
    normalised mask, then over parts and images; and ``relu(pi (tau size / 2)^2 - area)``
    (area in pixels), summed over parts, averaged over images."""
    kp_mask = out["parts"][:, :k]
    grid = corner_grid(size, 0, kp_mask.device, kp_mask.dtype)
    d2 = ((out["kp_raw"][:, :, None, None, :] - grid[None, None]) ** 2).sum(-1)
    wgt = kp_mask / (kp_mask.sum((2, 3), keepdim=True) + 1e-6)
    con = (d2 * wgt).sum((2, 3)).mean()
    area = kp_mask.sum((2, 3))
    pts = out["points_raw"].view(-1, k, n_per, 2)
    tau = (pts - out["kp_raw"][:, :, None]).abs().mean((2, 3)) * (size / 2)
    return con, F.relu(math.pi * tau ** 2 - area).sum(1).mean()


class PaperDiscriminatorBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv_res = nn.Conv2d(cin, cout, 1, 2)
        self.net = nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1), nn.LeakyReLU(0.2),
                                 nn.Conv2d(cout, cout, 3, 1, 1), nn.LeakyReLU(0.2))
        self.down = nn.Conv2d(cout, cout, 3, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return (self.down(self.net(x)) + self.conv_res(x)) / math.sqrt(2)


class PaperDiscriminator(nn.Module):
    """The authors' D: residual blocks (two 3x3 convs, a stride-2 3x3 conv, a stride-2 1x1
    shortcut, sum / sqrt 2) from ndf doubling to 8 ndf, down to 2x2; then a 2-layer MLP
    (8 ndf hidden) to one logit. He-normal (a = 0.2), zero bias."""

    def __init__(self, ndf: int, size: int):
        super().__init__()
        n = int(round(math.log2(size))) - 1
        chs = [3] + [ndf * min(2 ** i, 8) for i in range(n)]
        self.blocks = nn.Sequential(*[PaperDiscriminatorBlock(a, b) for a, b in zip(chs[:-1], chs[1:])])
        self.fc = nn.Sequential(nn.Linear(4 * chs[-1], chs[-1]), nn.LeakyReLU(0.2), nn.Linear(chs[-1], 1))
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, a=0.2)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.blocks(x).flatten(1))


def gradient_penalty(D: nn.Module, real: Tensor) -> tuple[Tensor, Tensor]:
    """(D(real) [N, 1], mean over images of (||grad_x D(x)|| - 1)^2), from one forward (the
    authors' regulariser of the real images, in the D step). Outside autocast."""
    x = real.detach().requires_grad_(True)
    out = D(x)
    (g,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    return out, ((g.flatten(1).norm(dim=1) - 1) ** 2).mean()
