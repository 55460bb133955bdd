"""C3-GAN (Kim & Ha, ICLR 2022): contrastive fine-grained class clustering with a GAN.

No boxes. A background from z, a foreground (mask + texture) from z and a cluster code c
(c' = mu_c + exp(logsigma_c) * cz); mask and texture get one random affine warp before
composition, which is what makes the foreground separate from the background.
The discriminator has a hinge real/fake head and a semantic head h; the cluster
centroids are a linear map of the one-hot codes, l = W e_k. An image belongs to the
centroid it is most cosine-similar to.

Losses (paper eq. 6, weights 5, 1, 1, 0.1, 1; tau 0.1):
  D:  hinge(real, fake) + 5 info(fake) + info(mask * fake) + NT-Xent(real, real view)
      + 0.1 (mean_i H(q_i) - H(mean_i q_i))
  G:  -D(fake) + 5 info(fake) + info(mask * fake) + binary entropy(m) + hinge(mean m in [0.1, 0.9])
with info(x) = CE(softmax(cos(h(x), l) / tau), c).

With the options fgtool/recipes/c3gan-cub.toml sets (shared_fake, g_widths, d_first_bias,
mask_entropy, conv_bias_init; no EMA) this is the authors' code (naver-ai/c3-gan), tensor
for tensor: tests/reference/test_reference_c3gan.py, docs/models/c3gan.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import FgtoolError
from ..nn.augment import perturb_ranges, random_affine, simclr_view
from ..nn.blocks import (
    GLU,
    CodeConv,
    CodeToImageBackbone,
    ImageEncoder,
    ResBlock,
    conv3x3,
    down_block,
    init_weights,
    n_up,
    same_block,
)
from ..nn.compose import composite, full_code, one_hot
from ..nn.losses import at_least_fp32, binary_entropy, cosine_logits, nt_xent
from ..registry import register
from .base import Backend, CentroidClusterer, Grid, Phase, as_rgb


@dataclass
class C3GANConfig:
    n_classes: int = 200  # classes expected in the data (CUB: 200)
    overcluster: int = 2  # K = n_classes * overcluster codes/centroids (paper: 2 for CUB, 3 otherwise)
    z_dim: int = 64
    cz_dim: int = 8  # dim of the cluster embedding c'
    ngf: int = 16  # final generator width; the 4x4 top has ngf * 32 channels (16 -> 512, the paper)
    ndf: int = 64  # discriminator base width (512-d semantic head at 64 and 128 px)
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    tau: float = 0.1  # softmax temperature of the info, entropy and NT-Xent losses
    w_info: float = 5.0
    w_info_fg: float = 1.0
    w_cont: float = 1.0
    w_entropy: float = 0.1
    w_mask: float = 1.0
    mask_range: tuple[float, float] = (0.1, 0.9)  # hinge on the mean mask
    perturb: str = "weak"  # random affine warp of the foreground: weak, strong (CUB) or none
    aug_crop: tuple[float, float] = (0.2, 1.0)  # SimCLR view: RandomResizedCrop area range
    aug_jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)  # brightness, contrast, sat, hue
    aug_p_jitter: float = 0.8
    aug_p_gray: float = 0.2
    # Deviations from the authors' code (fgtool/recipes/c3gan-cub.toml sets each to the authors' value;
    # tests/reference/test_reference_c3gan.py proves that setting equal to their code):
    # one generator render per iteration: G steps first, D re-uses that fake detached.
    # False: the authors' iteration, D steps first on a fake of its own, then G on new codes
    shared_fake: bool = True
    # generator widths: "halving" halves from ngf * 32 down to ngf (32 at 64 px in the paper's
    # 128 px model); "authors" halves for all but the last two up-blocks, which run at ngf
    # (512, 256, 128, 64, 16, 16 at 128 px)
    g_widths: str = "halving"
    d_first_bias: bool = True  # a bias on the discriminator's first conv (the authors' has none)
    # the mask's binary entropy: "nats" (natural log, clamped) or "bits" (the authors' log2,
    # -m log2(m + 1e-6) - (1 - m) log2(1 - m + 1e-6))
    mask_entropy: str = "nats"
    # conv biases at init: "zero", or "torch" (PyTorch's default uniform, as the authors'
    # init leaves them: the discriminator's two head convs)
    conv_bias_init: str = "zero"


def generator_widths(kind: str, ngf: int, size: int) -> list[int] | None:
    """Each up-block's output width. None: halving from ngf * 32 down to ngf. "authors":
    halving for all but the last two up-blocks, which both run at ngf (at 128 px and ngf 16:
    256, 128, 64, 16, 16, the authors' 512 // 2, // 4, // 8, // 32, // 32)."""
    if kind == "halving":
        return None
    if kind != "authors":
        raise FgtoolError(f"model.g_widths must be halving or authors, got {kind!r}")
    n = n_up(size)
    return [ngf * 32 >> (i + 1) for i in range(max(n - 2, 0))] + [ngf] * min(n, 2)


def binary_entropy_bits(m: Tensor) -> Tensor:
    """The authors' mask entropy: -m log2(m + 1e-6) - (1 - m) log2(1 - m + 1e-6)."""
    m = at_least_fp32(m)
    return -m * torch.log2(m + 1e-6) - (1 - m) * torch.log2(1 - m + 1e-6)


class C3Generator(nn.Module):
    def __init__(self, cfg: C3GANConfig, size: int, k: int):
        super().__init__()
        ngf = cfg.ngf
        self.k, self.cz_dim = k, cfg.cz_dim
        widths = generator_widths(cfg.g_widths, ngf, size)
        self.bg = CodeToImageBackbone(cfg.z_dim, ngf, size, top_mult=32, widths=widths)
        self.bg_head = nn.Sequential(*[ResBlock(self.bg.out_ch) for _ in range(3)], conv3x3(self.bg.out_ch, 3),
                                     nn.Tanh())
        # c -> (mu, logsigma) of c' (Linear, BN, GLU as in StackGAN's conditioning augmentation)
        self.emb_c = nn.Sequential(nn.Linear(k, cfg.cz_dim * 4), nn.BatchNorm1d(cfg.cz_dim * 4), GLU())
        self.fg = CodeToImageBackbone(cfg.z_dim, ngf, size, top_mult=32, extra_ch=cfg.cz_dim, widths=widths)
        ch = self.fg.out_ch
        self.fg_res = nn.Sequential(*[ResBlock(ch) for _ in range(3)])
        # heads at the backbone's final width (16 in the paper at 128 px)
        self.mask_head = nn.Sequential(same_block(ch, ch), conv3x3(ch, 1))
        # texture: joint conv over the features and the tiled one-hot c (see CodeConv)
        self.tex_joint = CodeConv(ch, k, ch * 2)
        self.tex_bn = nn.Sequential(nn.BatchNorm2d(ch * 2), GLU())
        self.tex_head = nn.Sequential(ResBlock(ch), ResBlock(ch), same_block(ch, ch), conv3x3(ch, 3), nn.Tanh())

    def forward(self, z: Tensor, cz: Tensor, c: Tensor, perturb: tuple | None = None) -> dict[str, Tensor]:
        c1 = one_hot(c, self.k).to(z)
        bg = self.bg_head(self.bg(z))
        mu, logsig = self.emb_c(c1).chunk(2, dim=1)
        cprime = mu + logsig.exp() * cz
        h = self.fg_res(self.fg(z, cprime))
        m = torch.sigmoid(self.mask_head(h))
        t = self.tex_head(self.tex_bn(self.tex_joint(h, c1)))
        if perturb is not None:  # one random warp shared by mask and texture (training only)
            m, grid = random_affine(m, *perturb)
            t, _ = random_affine(t, *perturb, grids=grid)
        return {"image": composite(t, m, bg), "background": bg, "mask": m, "foreground": t}


class C3Discriminator(nn.Module):
    """Shared base to 4x4, a hinge real/fake head r and a semantic head h; centroids l = W e_k."""

    def __init__(self, ndf: int, size: int, k: int, first_bias: bool = True):
        super().__init__()
        enc = ImageEncoder(ndf, size)
        if not first_bias:  # the authors' first conv has no bias
            enc.net[0] = down_block(3, ndf, bn=False, bias=False)
        ch = enc.out_ch
        self.base = nn.Sequential(enc, nn.Conv2d(ch, ch, 3, 1, 1, bias=False), nn.BatchNorm2d(ch),
                                  nn.LeakyReLU(0.2, inplace=True))
        self.adv = nn.Conv2d(ch, 1, 4, 4)
        self.sem = nn.Sequential(nn.Conv2d(ch, ch, 3, 1, 1, bias=False), nn.BatchNorm2d(ch),
                                 nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(ch, ch, 4, 4))
        self.centroids = nn.Linear(k, ch)
        self.k = k

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        b = self.base(x)
        return self.adv(b).flatten(1), self.sem(b).flatten(1)

    def semantic(self, x: Tensor) -> Tensor:
        return self.sem(self.base(x)).flatten(1)

    def centres(self) -> Tensor:
        return self.centroids(torch.eye(self.k, device=self.centroids.weight.device,
                                        dtype=self.centroids.weight.dtype))


@register
class C3GAN(Backend, CentroidClusterer):
    name = "c3gan"
    Config = C3GANConfig
    ema = ("G",)
    inference_nets = ("G", "D")  # D holds the semantic head and the centroids: it is the clusterer
    uses_boxes = False

    def __init__(self, cfg: C3GANConfig, size: int):
        super().__init__(cfg, size)
        if cfg.n_classes < 1 or cfg.overcluster < 1:
            raise FgtoolError("model.n_classes and model.overcluster must be >= 1")
        self.k = cfg.n_classes * cfg.overcluster
        generator_widths(cfg.g_widths, cfg.ngf, size)
        if cfg.mask_entropy not in ("nats", "bits"):
            raise FgtoolError(f"model.mask_entropy must be nats or bits, got {cfg.mask_entropy!r}")
        if cfg.conv_bias_init not in ("zero", "torch"):
            raise FgtoolError(f"model.conv_bias_init must be zero or torch, got {cfg.conv_bias_init!r}")
        self.perturb = perturb_ranges(cfg.perturb)

    def n_clusters(self) -> int:
        return self.k

    # ---------------------------------------------------------------- nets and phases
    def build(self) -> dict[str, nn.Module]:
        c = self.cfg
        nets = {"G": C3Generator(c, self.size, self.k), "D": C3Discriminator(c.ndf, self.size, self.k, c.d_first_bias)}
        for m in nets.values():
            init_weights(m, "orthogonal")
            if c.conv_bias_init == "torch":  # as nn.Conv2d.reset_parameters draws a bias
                for conv in m.modules():
                    if isinstance(conv, nn.Conv2d) and conv.bias is not None:
                        bound = 1.0 / math.sqrt(conv.weight[0].numel())
                        nn.init.uniform_(conv.bias, -bound, bound)
        return nets

    def phases(self) -> list[Phase]:
        c = self.cfg
        if c.shared_fake:  # G first; D re-uses that fake batch detached (one generator forward)
            return [Phase("G", ("G",), lr=c.lr_g), Phase("D", ("D",), lr=c.lr_d)]
        # the authors' iteration: D steps on a fake of its own, then G renders new codes
        return [Phase("D", ("D",), lr=c.lr_d), Phase("G", ("G",), lr=c.lr_g)]

    # ---------------------------------------------------------------- codes
    def sample_codes(self, n: int, generator: torch.Generator | None = None, device=None, **fix) -> dict[str, Tensor]:
        """z, cz ~ N(0, I); c uniform over the K clusters, drawn as concatenated random
        permutations so every row has a code and a batch covers the codes evenly, also
        when n > K (the authors' sampler leaves those rows without a code)."""
        kw = {"generator": generator, "device": device}
        z = fix["z"].to(device) if "z" in fix else torch.randn(n, self.cfg.z_dim, **kw)
        cz = fix["cz"].to(device) if "cz" in fix else torch.randn(n, self.cfg.cz_dim, **kw)
        if "c" in fix:
            c = full_code(fix["c"], n, device)
        else:
            reps = -(-n // self.k)
            c = torch.cat([torch.randperm(self.k, **kw) for _ in range(reps)])[:n]
        if c.numel() and (c.min() < 0 or c.max() >= self.k):
            raise FgtoolError(f"code c must be in 0..{self.k - 1}")
        return {"z": z, "cz": cz, "c": c}

    def code_sizes(self) -> dict[str, int]:
        return {"z": 0, "c": self.k}

    def generate(self, nets, codes, perturb: bool = False) -> dict[str, Tensor]:
        dev = next(nets["G"].parameters()).device
        return nets["G"](codes["z"].to(dev), codes["cz"].to(dev), codes["c"].to(dev),
                         self.perturb if perturb else None)

    # ---------------------------------------------------------------- losses
    def loss(self, phase, nets, batch, step) -> dict[str, Tensor]:
        return self._loss_g(nets, batch, step) if phase == "G" else self._loss_d(nets, batch, step)

    def _fake(self, nets, batch, grad: bool, phase: str):
        key = "fake" if self.cfg.shared_fake else f"fake_{phase}"
        return self.fake_batch(nets, batch, grad, render=lambda n, codes: self.generate(n, codes, perturb=True),
                               key=key)

    def _mask_entropy(self, m: Tensor) -> Tensor:
        return binary_entropy_bits(m) if self.cfg.mask_entropy == "bits" else binary_entropy(m)

    def _info(self, h: Tensor, centres: Tensor, c: Tensor) -> Tensor:
        return F.cross_entropy(cosine_logits(h, centres, self.cfg.tau), c)

    def _loss_g(self, nets, batch, step) -> dict[str, Tensor]:
        c = self.cfg
        out, codes = self._fake(nets, batch, grad=True, phase="G")
        D = nets["D"]
        adv, h = D(out["image"])
        h_fg = D.semantic(out["mask"] * out["image"])
        g_adv = -at_least_fp32(adv).mean()
        centres = D.centres()
        info = self._info(h, centres, codes["c"])
        info_fg = self._info(h_fg, centres, codes["c"])
        m = at_least_fp32(out["mask"])
        per = m.flatten(1).mean(1)
        lo, hi = c.mask_range
        mask_reg = self._mask_entropy(m).mean() + (F.relu(lo - per) + F.relu(per - hi)).mean()
        loss = g_adv + c.w_info * info + c.w_info_fg * info_fg + c.w_mask * mask_reg
        return {"loss": loss, "g_adv": g_adv, "g_info": info, "g_info_fg": info_fg, "mask_reg": mask_reg,
                "mask_area": per.mean().detach()}

    def _loss_d(self, nets, batch, step) -> dict[str, Tensor]:
        c = self.cfg
        out, codes = self._fake(nets, batch, grad=False, phase="D")
        fake, mask = out["image"].detach(), out["mask"].detach()
        real = batch["image"]
        D = nets["D"]
        r_adv, h_real = D(real)
        f_adv, h_fake = D(fake)
        h_fg = D.semantic(mask * fake)
        d_real = F.relu(1.0 - at_least_fp32(r_adv)).mean()
        d_fake = F.relu(1.0 + at_least_fp32(f_adv)).mean()
        centres = D.centres()
        info = self._info(h_fake, centres, codes["c"])
        info_fg = self._info(h_fg, centres, codes["c"])
        # real images: a second, strongly augmented view for NT-Xent (the first is the loader's)
        with torch.no_grad():
            view = simclr_view(real, tuple(c.aug_crop), c.aug_p_jitter, tuple(c.aug_jitter), c.aug_p_gray)
        h_view = D.semantic(view)
        cont = nt_xent(h_real, h_view, c.tau)
        q = cosine_logits(h_real, centres, c.tau).softmax(1)
        ent_each = -(q * q.clamp_min(1e-12).log()).sum(1).mean()
        qm = q.mean(0)
        ent_mean = -(qm * qm.clamp_min(1e-12).log()).sum()
        loss = (d_real + d_fake + c.w_info * info + c.w_info_fg * info_fg + c.w_cont * cont
                + c.w_entropy * (ent_each - ent_mean))
        with torch.no_grad():
            conf = q.max(1).values.mean()
        return {"loss": loss, "d_real": d_real, "d_fake": d_fake, "d_info": info, "d_info_fg": info_fg,
                "cont": cont, "ent_each": ent_each, "ent_mean": ent_mean, "real_conf": conf}

    # ---------------------------------------------------------------- clustering
    def assign(self, nets, images: Tensor, feats: dict[str, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """Each image's nearest centroid (cosine) and its softmax probability at tau.
        ``feats``: this batch's :meth:`cluster_features`, so h is not computed twice."""
        D = nets["D"]
        h = feats["h"] if feats is not None else D.semantic(images).float()
        logits = cosine_logits(h, D.centres().float(), self.cfg.tau)
        p = logits.softmax(1)
        conf, idx = p.max(1)
        return idx, conf

    def cluster_features(self, nets, images: Tensor) -> dict[str, Tensor]:
        return {"h": F.normalize(nets["D"].semantic(images).float(), dim=1)}

    def centroids(self, nets) -> Tensor:
        return F.normalize(nets["D"].centres().float(), dim=1)

    # ---------------------------------------------------------------- pictures
    def grids(self, nets, generator: torch.Generator, which: str = "train") -> dict[str, Grid]:
        g = {}
        codes = self.sample_codes(16, generator)
        out = self.generate(nets, codes)
        g["samples"] = Grid(out["image"], 8)
        n = 6
        cols = ["background", "mask", "fg", "image"]
        fg = out["mask"] * out["foreground"]
        layer = {"background": out["background"], "mask": as_rgb(out["mask"].float()), "fg": fg, "image": out["image"]}
        g["layers"] = Grid(torch.stack([layer[k][:n].float() for k in cols], 1).flatten(0, 1), len(cols),
                           [f"c={int(v)}" for v in codes["c"][:n]],
                           ["background", "mask", "masked foreground", "image"])
        rows, ncol = min(self.k, 6), 8
        cs = torch.randperm(self.k, generator=generator)[:rows]
        # fixed c per row, z (pose and background) varies along the row
        z = torch.randn(ncol, self.cfg.z_dim, generator=generator).repeat(rows, 1)
        cz = torch.randn(ncol, self.cfg.cz_dim, generator=generator).repeat(rows, 1)
        cr = cs.repeat_interleave(ncol)
        g["fix_c_vary_z"] = Grid(self.generate(nets, {"z": z, "cz": cz, "c": cr})["image"], ncol,
                                 [f"c={int(v)}" for v in cs], [f"z{j}" for j in range(ncol)])
        if which == "train":
            return g
        # fixed z per row, c varies along the row (same clusters in every row)
        ncol = min(self.k, 8)
        cols_c = torch.randperm(self.k, generator=generator)[:ncol]
        z = torch.randn(rows, self.cfg.z_dim, generator=generator).repeat_interleave(ncol, 0)
        cz = torch.randn(rows, self.cfg.cz_dim, generator=generator).repeat_interleave(ncol, 0)
        g["fix_z_vary_c"] = Grid(self.generate(nets, {"z": z, "cz": cz, "c": cols_c.repeat(rows)})["image"], ncol,
                                 [f"z{i}" for i in range(rows)], [f"c={int(v)}" for v in cols_c])
        return g
