"""OneGAN's networks: the generator (background, foreground, pre-image), the shape, style and
background encoders, and helpers of its losses (see fgtool/backends/onegan.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn.blocks import (
    GLULayerNorm,
    LNResBlock,
    code_block,
    conv3x3,
    ln_down_block,
    ln_same_block,
    ln_up_block,
    n_up,
)
from ..nn.losses import binary_entropy

if TYPE_CHECKING:  # annotations only: the config lives with its backend
    from .onegan import OneGANConfig


def _widths(ngf: int, size: int, top_mult: int) -> list[int]:
    """Channels at 4, 8, ..., size px: halving from ngf * top_mult, never below ngf."""
    return [max(ngf * top_mult // 2 ** i, ngf) for i in range(n_up(size) + 1)]


class PreImage(nn.Module):
    """G*0: Linear(code -> 4x4, GLU-LN), then GLU-LN up-blocks to the pre-image (size / 4)."""

    def __init__(self, in_dim: int, widths: list[int]):
        super().__init__()
        self.top = widths[0]
        self.fc = nn.Sequential(nn.Linear(in_dim, self.top * 16 * 2, bias=False),
                                GLULayerNorm(self.top * 16, spatial=False))
        self.ups = nn.Sequential(*[ln_up_block(widths[i], widths[i + 1]) for i in range(len(widths) - 3)])
        self.out_ch = widths[-3]

    def forward(self, code: Tensor) -> Tensor:
        return self.ups(self.fc(code).view(code.shape[0], self.top, 4, 4))


class BackgroundGenerator(nn.Module):
    def __init__(self, in_dim: int, widths: list[int]):
        super().__init__()
        self.g0 = PreImage(in_dim, widths)
        w = widths
        self.g1 = nn.Sequential(ln_up_block(w[-3], w[-2]), ln_up_block(w[-2], w[-1]), LNResBlock(w[-1]),
                                conv3x3(w[-1], 3), nn.Tanh())


class ForegroundGenerator(nn.Module):
    """Gfg0(v_p, z) -> A_fg; Gfg1(A, v_p): joint conv with the tiled shape code, 2 ResBlocks,
    up to full size; Gfg2(h, v_c): joint conv with the tiled style code, 2 ResBlocks, a
    halving block, image (tanh) and mask (sigmoid) heads."""

    def __init__(self, z_dim: int, p_dim: int, c_dim: int, widths: list[int]):
        super().__init__()
        w = widths
        self.g0 = PreImage(p_dim + z_dim, widths)
        self.g1_joint = ln_same_block(w[-3] + p_dim, w[-3])
        self.g1 = nn.Sequential(LNResBlock(w[-3]), LNResBlock(w[-3]), ln_up_block(w[-3], w[-2]),
                                ln_up_block(w[-2], w[-1]))
        half = max(w[-1] // 2, 4)
        self.g2_joint = ln_same_block(w[-1] + c_dim, w[-1])
        self.g2 = nn.Sequential(LNResBlock(w[-1]), LNResBlock(w[-1]), ln_same_block(w[-1], half))
        self.img = nn.Sequential(conv3x3(half, 3), nn.Tanh())
        self.mask = nn.Sequential(conv3x3(half, 1), nn.Sigmoid())

    def render(self, a: Tensor, v_p: Tensor, v_c: Tensor) -> tuple[Tensor, Tensor]:
        h = self.g1(code_block(self.g1_joint, a, v_p))
        h = self.g2(code_block(self.g2_joint, h, v_c))
        return self.img(h), self.mask(h)


class OneGANGenerator(nn.Module):
    """Both generators and the three code embeddings (one net, so the EMA covers them all)."""

    def __init__(self, cfg: OneGANConfig, size: int):
        super().__init__()
        w = _widths(cfg.ngf, size, cfg.top_mult)
        self.Vbg = nn.Linear(cfg.n_parent, cfg.bg_dim, bias=False)  # the background follows the parent
        self.Vp = nn.Linear(cfg.n_parent, cfg.p_dim, bias=False)
        self.Vc = nn.Linear(cfg.n_child, cfg.c_dim, bias=False)
        self.bg = BackgroundGenerator(cfg.bg_dim + cfg.z_dim, w)
        self.fg = ForegroundGenerator(cfg.z_dim, cfg.p_dim, cfg.c_dim, w)
        self.pre_ch = w[-3]

    def pre_bg(self, v_bg: Tensor, z: Tensor) -> Tensor:
        return self.bg.g0(torch.cat([v_bg, z.to(v_bg.dtype)], 1))

    def pre_fg(self, v_p: Tensor, z: Tensor) -> Tensor:
        return self.fg.g0(torch.cat([v_p, z.to(v_p.dtype)], 1))


def _enc_widths(width: int, size: int) -> list[int]:
    """Channels after each stride-2 step from size px down to 4x4 (capped at 8 * width)."""
    return [min(width * 2 ** i, width * 8) for i in range(n_up(size))]


class _Trunk(nn.Module):
    """Stride-2 LN steps: ``low`` to size / 4 (where the bypass is read), ``high`` on to 4x4."""

    def __init__(self, width: int, size: int, in_ch: int = 3):
        super().__init__()
        w = _enc_widths(width, size)
        self.low = nn.Sequential(ln_down_block(in_ch, w[0], norm=False), ln_down_block(w[0], w[1]))
        self.high = nn.Sequential(*[ln_down_block(w[i], w[i + 1]) for i in range(1, len(w) - 1)])
        self.low_ch, self.feat_dim = w[1], w[-1] * 16


class ShapeEncoder(nn.Module):
    def __init__(self, cfg: OneGANConfig, width: int, size: int, pre_ch: int):
        super().__init__()
        self.trunk = _Trunk(width, size)
        self.bypass = conv3x3(self.trunk.low_ch, pre_ch, bias=True)
        d = self.trunk.feat_dim
        self.cls = nn.Linear(d, cfg.n_parent)
        self.code = nn.Linear(d, 2 * cfg.p_dim)
        self.pose = nn.Linear(d, 2 * cfg.z_dim)

    def features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        low = self.trunk.low(x)
        return low, self.trunk.high(low).flatten(1)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        low, f = self.features(x)
        mu_p, lv_p = self.code(f).float().chunk(2, 1)
        mu_z, lv_z = self.pose(f).float().chunk(2, 1)
        return {"logits_p": self.cls(f).float(), "mu_p": mu_p, "lv_p": lv_p, "mu_z": mu_z, "lv_z": lv_z,
                "B_fg": self.bypass(low)}


class StyleEncoder(nn.Module):
    def __init__(self, cfg: OneGANConfig, width: int, size: int):
        super().__init__()
        self.trunk = _Trunk(width, size)
        d = self.trunk.feat_dim
        self.cls = nn.Linear(d, cfg.n_child)
        self.code = nn.Linear(d, 2 * cfg.c_dim)

    def features(self, x: Tensor) -> Tensor:
        return self.trunk.high(self.trunk.low(x)).flatten(1)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        f = self.features(x)
        mu_c, lv_c = self.code(f).float().chunk(2, 1)
        return {"logits_c": self.cls(f).float(), "mu_c": mu_c, "lv_c": lv_c}


class BackgroundEncoder(nn.Module):
    """Ebg(I, Im) -> B_bg, down to the pre-image size. It reads the image with the object
    masked out, ``I * (1 - Im)``, and the mask itself (Fig. 2's "BG masking"): what the
    mask covers cannot leak into the background through the bypass."""

    def __init__(self, width: int, size: int, pre_ch: int):
        super().__init__()
        w = _enc_widths(width, size)
        self.net = nn.Sequential(ln_down_block(4, w[0], norm=False), ln_down_block(w[0], w[1]),
                                 nn.Conv2d(w[1], w[1], 3, 1, 1, bias=False), nn.GroupNorm(1, w[1]),
                                 nn.LeakyReLU(0.2, inplace=True), conv3x3(w[1], pre_ch, bias=True))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        m = mask.to(x.dtype)
        return self.net(torch.cat([x * (1 - m), m], 1))


class OneGANEncoders(nn.Module):
    def __init__(self, cfg: OneGANConfig, size: int, pre_ch: int):
        super().__init__()
        w = cfg.ndf if cfg.enc_width == "auto" else cfg.enc_width
        self.bg = BackgroundEncoder(w, size, pre_ch)
        self.shape = ShapeEncoder(cfg, w, size, pre_ch)
        self.style = StyleEncoder(cfg, w, size)


def kl_normal(mu: Tensor, logvar: Tensor, target: Tensor | float = 0.0, reduce: str = "mean") -> Tensor:
    """KL(N(mu, diag e^logvar) || N(target, I)), averaged over samples. ``reduce="sum"``: the
    divergence of the two Gaussians, a sum over dimensions (eq. 15); ``"mean"``: averaged over
    dimensions too (ours: on the scale of the per-pixel L1 terms)."""
    mu, logvar = mu.float(), logvar.float()
    t = target.float() if torch.is_tensor(target) else target
    kl = 0.5 * (logvar.exp() + (mu - t) ** 2 - 1.0 - logvar)
    return kl.sum(1).mean() if reduce == "sum" else kl.mean()


def mask_regulariser(m: Tensor, area: tuple[float, float]) -> Tensor:
    """L_RM (ours): binary entropy (masks towards 0/1) + hinge on the per-image mean mask."""
    per = m.float().mean(dim=(1, 2, 3))
    lo, hi = area
    return binary_entropy(m).mean() + (F.relu(lo - per) + F.relu(per - hi)).mean()


def code_scale(v: Tensor) -> Tensor:
    """L_Rv (ours) for one code: (mean_d v^2 - 1)^2 averaged over the batch."""
    return ((v.float() ** 2).mean(1) - 1.0).pow(2).mean()


@torch.no_grad()
def copy_weights(dst: nn.Module, src: nn.Module) -> None:
    """dst <- src, parameters and buffers, in place (optimisers keep their references)."""
    dst, src = getattr(dst, "_orig_mod", dst), getattr(src, "_orig_mod", src)
    for name, p in dst.named_parameters():
        p.copy_(src.get_parameter(name))
    for name, b in dst.named_buffers():
        if name != "cloned":
            b.copy_(src.get_buffer(name))
    if hasattr(dst, "cloned"):
        dst.cloned.fill_(True)
