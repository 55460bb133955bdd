"""FineGAN (Singh, Ojha & Lee, CVPR 2019): background, parent (shape) and child
(appearance) stages stitched with generated masks, disentangled by information losses.

Stages:  P = Pm*Pf + (1-Pm)*B,   C = Cm*Cf + (1-Cm)*P.
Codes:   z ~ N(0, I); c uniform over n_child; p = c // (n_child / n_parent); b = c while
         training (ducks on water), free at sample time.
Losses:  G:  10*bg_adv + bg_aux + child_adv + info_p + info_c
         D:  10*(bg_real + bg_fake) + bg_aux + child_real + child_fake
One iteration, as the authors' loop: G renders one batch; the discriminators step on it
(detached), then G steps through the updated discriminators on the same batch.
Clustering (paper 3.2): phi_p / phi_c re-predict p and c from generated images; their
pooled features of real images, concatenated, go to k-means.

The networks equal the authors' at every size (tests/reference/test_reference.py checks them against
tensors recorded from their code): the child stage reads the parent's halved features at
half the parent's width; the parent and child Ds end in a 2x-wide down-block and a 3x3
conv back; the background D has neither BatchNorm nor conv bias, and reads images resized
(bilinear, corners aligned) to the side its patches tile exactly (126 at 128 px), with
patch labels computed from the box coordinates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import FgtoolError
from ..nn.augment import perturb_ranges, random_affine, shift_window, similarity_grid, warp
from ..nn.blocks import (
    Classifier,
    CodeToImageBackbone,
    InfoDiscriminator,
    PatchDiscriminator,
    ResBlock,
    code_block,
    conv3x3,
    init_weights,
    n_up,
    resize_square,
    same_block,
)
from ..nn.compose import child_parent_codes, composite, full_code, one_hot
from ..nn.losses import background_real_terms, bce, binary_entropy
from ..registry import register
from .base import Backend, Clusterer, Grid, Phase, as_rgb


@dataclass
class FineGANConfig:
    n_child: int = 200  # Nc: fine classes (CUB 200)
    n_parent: int = 20  # Np: shapes; n_child must be a multiple of it
    z_dim: int = 100
    ngf: int = 64  # generator base width (backbones start at 16*ngf channels)
    ndf: int = 64  # discriminator base width
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    w_bg_adv: float = 10.0
    w_bg_aux: float = 1.0
    w_child_adv: float = 1.0
    w_info_p: float = 1.0
    w_info_c: float = 1.0
    bg_patch_thresh: float = 1.0  # share of a patch's field that must be outside the box (paper: 1)
    bg_warmup: int = 0  # steps over which real background patches fade from all to box-outside ones
    w_mask_area: float = 0.0  # optional prior: hinge on mean child-mask area outside mask_area range
    mask_area: tuple[float, float] = (0.1, 0.9)
    # the child mask *is* the parent mask (ours): the child stage paints the whole silhouette,
    # so the object's look is c's alone and its outline p's alone
    child_fills_parent: bool = False
    # what info_p reads: "masked" = parent mask * parent image (the paper); "mask" = the
    # silhouette alone, so p must be told by the outline, not by a colour (ours)
    info_p_input: str = "masked"
    # the background stage paints a canvas twice the image's side; training shows a random
    # window of it, everything else the centre (ours, after GANSeg's randomly shifted
    # background): a blob painted into the background lands anywhere but under the object,
    # so the background cannot stand in for the object layer
    bg_shift: bool = False
    # z poses a canonical object (ours): the parent stage draws phi(p) from p alone and a
    # linear head turns z into a similarity warp (scale, rotation, shift, mirror) of that
    # feature map, so the silhouette is p's and z only moves, turns, scales and mirrors it
    pose_warp: bool = False
    # b = c in the training batch (the paper: ducks on water); false draws b on its own, so a
    # background cannot know which object will stand on it
    tie_b: bool = True
    w_mask_binary: float = 0.0  # optional: binary entropy of both masks (C3-GAN's), pushes them to 0 or 1
    # random affine warp of the parent and child layers (mask and foreground, one warp per
    # sample) before they are laid over the background, in training only (not in the
    # paper; C3-GAN's trick): the background stage cannot know where the object will land,
    # so it cannot paint it. none, weak or strong
    perturb: str = "none"
    # cluster heads step every N iterations, or never. 4, not 2: on the synthetic set the
    # clusters were no worse and the heads cost half as much (docs/benchmarks.md)
    phi_every: int | Literal["never"] = 4
    # first step of the cluster heads (the authors' loop has none; the paper trains them
    # after the GAN): later starts keep them out of most of the run's steps
    phi_start: int = 0
    # the authors' last stage: from this step on, every second iteration trains on the
    # hardest codes, the batch of 10 random batches whose child layer Dc's information head
    # finds least like its own code (their 1,500 "hard negative" iterations), or never
    hard_start: int | Literal["never"] = "never"


def _tail(widths: list[int], k: int) -> list[int]:
    """The last k widths of a 128 px list (fewer up-blocks at smaller sizes keep the end)."""
    return widths[-k:] if k <= len(widths) else [widths[0]] * (k - len(widths)) + widths


class GeneratorFG(nn.Module):
    """FineGAN's generator, or with ``layout="mixnmatch"`` MixNMatch's narrower one.

    FineGAN (ngf = g): backbones 16g at 4x4 halving to g; the parent stage has a joint conv,
    2 ResBlocks at g and a halving block to g/2 that its heads read; the child stage reads
    that g/2 map, works at g/2 and halves to g/4. MixNMatch: backbones 8g at 4x4, the
    background ending at g/2 (128 px: 512-256-128-64-64-32) and the parent at g/4
    (512-256-128-64-16-16); the parent stage has 3 ResBlocks at g/4 and no halving (its
    heads and the child read phi directly, the map feature mode replaces); the child's
    joint conv goes to g/2 and halves to g/4."""

    def __init__(self, cfg: FineGANConfig, size: int, layout: str = "finegan"):
        super().__init__()
        ngf, nc, npar = cfg.ngf, cfg.n_child, cfg.n_parent
        self.size, self.bg_shift = size, cfg.bg_shift
        bg_size = size * 2 if cfg.bg_shift else size
        if layout == "finegan":
            bg = CodeToImageBackbone(cfg.z_dim + nc, ngf, bg_size)
            pb = CodeToImageBackbone(cfg.z_dim + npar, ngf, size)
            p_ch, n_res, head_ch, c_ch = ngf, 2, ngf // 2, ngf // 2
        elif layout == "mixnmatch":
            g = ngf
            bg = CodeToImageBackbone(cfg.z_dim + nc, ngf, bg_size, top_mult=8,
                                     widths=_tail([4 * g, 2 * g, g, g, g // 2], n_up(bg_size)))
            pb = CodeToImageBackbone(cfg.z_dim + npar, ngf, size, top_mult=8,
                                     widths=_tail([4 * g, 2 * g, g, g // 4, g // 4], n_up(size)))
            p_ch, n_res, head_ch, c_ch = g // 4, 3, g // 4, g // 2
        else:
            raise ValueError(f"layout must be finegan or mixnmatch, got {layout!r}")
        # background stage: its own backbone on z + b (b has n_child values: b = c in training)
        self.bg_backbone = bg
        self.bg_head = nn.Sequential(conv3x3(bg.out_ch, 3), nn.Tanh())
        # parent stage: backbone on z + p, joint conv with tiled p, ResBlocks (phi), then
        # (FineGAN) a halving block; heads
        self.p_backbone = pb
        self.p_joint = same_block(pb.out_ch + npar, p_ch)
        self.p_res = nn.Sequential(*[ResBlock(p_ch) for _ in range(n_res)])
        self.p_half = same_block(p_ch, head_ch) if head_ch != p_ch else nn.Identity()
        self.p_img = nn.Sequential(conv3x3(head_ch, 3), nn.Tanh())
        self.p_mask = nn.Sequential(conv3x3(head_ch, 1), nn.Sigmoid())
        self.phi_ch = p_ch
        # child stage: the parent's head features + tiled c; no new z
        self.c_joint = same_block(head_ch + nc, c_ch)
        self.c_res = nn.Sequential(ResBlock(c_ch), ResBlock(c_ch))
        self.c_half = same_block(c_ch, c_ch // 2)
        self.c_img = nn.Sequential(conv3x3(c_ch // 2, 3), nn.Tanh())
        self.c_mask = nn.Sequential(conv3x3(c_ch // 2, 1), nn.Sigmoid())
        self.nc, self.np = nc, npar
        self.child_fills_parent = cfg.child_fills_parent
        self.pose = nn.Linear(cfg.z_dim, 5) if cfg.pose_warp else None

    def forward(self, z: Tensor, b: Tensor, p: Tensor, c: Tensor, perturb: tuple | None = None) -> dict[str, Tensor]:
        b1, p1, c1 = one_hot(b, self.nc).to(z), one_hot(p, self.np).to(z), one_hot(c, self.nc).to(z)
        return self.compose(self.parent_features(z, p1), self.background(z, b1), c1, perturb)

    # The stages, callable one by one (MixNMatch: a separate z for the background, soft
    # codes, and an image feature map in place of phi(p, z)). Codes here are [N, K] vectors.
    def background(self, z: Tensor, b1: Tensor) -> Tensor:
        B = self.bg_head(self.bg_backbone(torch.cat([z, b1], 1)))
        return shift_window(B, self.size, self.training) if self.bg_shift else B

    def parent_features(self, z: Tensor, p1: Tensor) -> Tensor:
        """phi(p, z): the parent stage's feature map, which the parent heads and the child stage read."""
        if self.pose is None:
            h = self.p_backbone(torch.cat([z, p1], 1))
            return self.p_res(code_block(self.p_joint, h, p1))
        h = self.p_backbone(torch.cat([torch.zeros_like(z), p1], 1))
        hp = self.p_res(code_block(self.p_joint, h, p1))
        return warp(hp, self.pose_grid(z, hp))

    def pose_grid(self, z: Tensor, like: Tensor) -> Tensor:
        """The sampling grid of z's pose: grid scale exp(0.3 tanh), rotation 30 deg tanh,
        shift 0.3 tanh (half-widths), mirror tanh(2a) on x."""
        a = self.pose(z.float()).float()
        return similarity_grid(torch.exp(0.3 * torch.tanh(a[:, 0])), torch.tanh(a[:, 1]) * (math.pi / 6),
                               0.3 * torch.tanh(a[:, 2]), 0.3 * torch.tanh(a[:, 3]), like,
                               mirror=torch.tanh(2 * a[:, 4]))

    def compose(self, hp: Tensor, B: Tensor, c1: Tensor, perturb: tuple | None = None) -> dict[str, Tensor]:
        """``perturb``: (scale, rot_deg, shift) ranges of one random warp per sample, shared
        by the parent and child masks and foregrounds (training only)."""
        hp2 = self.p_half(hp)
        Pf, Pm = self.p_img(hp2), self.p_mask(hp2)
        hc = self.c_half(self.c_res(code_block(self.c_joint, hp2, c1)))
        Cf, Cm = self.c_img(hc), self.c_mask(hc)
        if self.child_fills_parent:
            Cm = Pm
        if perturb is not None:
            Pm, grid = random_affine(Pm, *perturb)
            Pf, Cf, Cm = (random_affine(t, *perturb, grids=grid)[0] for t in (Pf, Cf, Cm))
        P = composite(Pf, Pm, B)
        # one layer over the background when the child fills the parent (soft masks would
        # otherwise let the parent's colours through at the edges)
        C = composite(Cf, Cm, B if self.child_fills_parent else P)
        return {"image": C, "background": B, "parent": P, "parent_fg": Pf, "parent_mask": Pm,
                "child_fg": Cf, "child_mask": Cm}


@register
class FineGAN(Backend, Clusterer):
    name = "finegan"
    Config = FineGANConfig
    ema = ("G",)
    inference_nets = ("G", "phi_p", "phi_c")

    def __init__(self, cfg: FineGANConfig, size: int):
        super().__init__(cfg, size)
        if cfg.n_child % cfg.n_parent:
            raise FgtoolError(f"model.n_child ({cfg.n_child}) must be a multiple of model.n_parent ({cfg.n_parent})")
        if cfg.info_p_input not in ("masked", "mask"):
            raise FgtoolError(f"model.info_p_input must be masked or mask, got {cfg.info_p_input!r}")
        if cfg.ngf < 4 or cfg.ngf % 4:
            raise FgtoolError(f"model.ngf must be a positive multiple of 4 (the child stage is ngf/4 wide), "
                              f"got {cfg.ngf}")
        if cfg.hard_start != "never" and cfg.hard_start < 0:
            raise FgtoolError(f"model.hard_start is a step, at least 0, or \"never\", got {cfg.hard_start}")
        if cfg.phi_every != "never" and cfg.phi_every < 1:
            raise FgtoolError(f"model.phi_every must be >= 1 or \"never\", got {cfg.phi_every}")
        self.ratio = cfg.n_child // cfg.n_parent
        self.bg_d = cfg.w_bg_adv > 0 or cfg.w_bg_aux > 0  # the background D is used at all
        self.perturb = None if cfg.perturb == "none" else perturb_ranges(cfg.perturb)

    # ---------------------------------------------------------------- nets and phases
    def build(self) -> dict[str, nn.Module]:
        c, s = self.cfg, self.size
        nets = {
            "G": GeneratorFG(c, s),
            "Dbg": PatchDiscriminator(c.ndf, s),
            # Dp's real/fake head is never read (the authors' parent D has one too, untrained)
            "Dp": InfoDiscriminator(c.ndf, s, c.n_parent, adv=True, top="wide"),
            "Dc": InfoDiscriminator(c.ndf, s, c.n_child, adv=True, top="wide"),
            "phi_p": Classifier(c.ndf, s, c.n_parent),
            "phi_c": Classifier(c.ndf, s, c.n_child),
        }
        for m in nets.values():
            init_weights(m, "orthogonal")
        return nets

    def phases(self) -> list[Phase]:
        c = self.cfg
        # The authors' order: D steps on the batch G renders (detached), then G steps through
        # the updated Ds on the same render, so G runs forward once per iteration.
        ph = [Phase("D", ("Dbg", "Dc.trunk", "Dc.adv"), lr=c.lr_d, graph=("G",)),
              Phase("G", ("G", "Dp", "Dc.info"), lr=c.lr_g)]
        if c.phi_every != "never":
            ph.append(Phase("phi", ("phi_p", "phi_c"), every=c.phi_every, lr=c.lr_d, start=c.phi_start))
        return ph

    # ---------------------------------------------------------------- codes
    def sample_codes(self, n: int, generator: torch.Generator | None = None, device=None,
                     tie_b: bool | None = None, **fix) -> dict[str, Tensor]:
        """c uniform (or among the children of a fixed p); p = c // ratio; b = c unless
        ``tie_b=False`` (default: ``model.tie_b``) or b is fixed. Fixed values may be ints or
        [n] tensors."""
        tie_b = self.cfg.tie_b if tie_b is None else tie_b
        c_cfg = self.cfg
        kw = {"generator": generator, "device": device}
        z = fix["z"] if "z" in fix else torch.randn(n, c_cfg.z_dim, **kw)
        c, p = child_parent_codes(n, c_cfg.n_child, self.ratio, fix, generator, device)
        if "b" in fix:
            b = full_code(fix["b"], n, device)
        else:
            b = c.clone() if tie_b else torch.randint(0, c_cfg.n_child, (n,), **kw)
        for name, v, hi in (("c", c, c_cfg.n_child), ("b", b, c_cfg.n_child)):
            if v.numel() and (v.min() < 0 or v.max() >= hi):
                raise FgtoolError(f"code {name} must be in 0..{hi - 1}")
        return {"z": z, "b": b, "p": p, "c": c}

    def code_sizes(self) -> dict[str, int]:
        return {"z": 0, "b": self.cfg.n_child, "p": self.cfg.n_parent, "c": self.cfg.n_child}

    def generate(self, nets, codes, perturb: bool = False) -> dict[str, Tensor]:
        """``perturb``: warp the object layers by ``model.perturb`` (the training batch only)."""
        dev = next(nets["G"].parameters()).device
        z, b, p, c = (codes[k].to(dev) for k in ("z", "b", "p", "c"))
        return nets["G"](z, b, p, c, self.perturb if perturb else None)

    # ---------------------------------------------------------------- losses
    def loss(self, phase, nets, batch, step) -> dict[str, Tensor]:
        if phase == "D":
            return self._loss_d(nets, batch, step)
        return {"G": self._loss_g, "phi": self._loss_phi}[phase](nets, batch)

    def _fake(self, nets, batch, grad: bool, step: int | None = None) -> tuple[dict, dict]:
        codes = None
        if self.hard_step(step) and "fake" not in batch.get("cache", {}):
            codes = self.hard_codes(nets, batch["image"].shape[0], batch["image"].device)
        return self.fake_batch(nets, batch, grad, render=lambda n, codes: self.generate(n, codes, perturb=True),
                               codes=codes)

    def hard_step(self, step: int | None) -> bool:
        """Whether ``step`` trains on hard codes: every second step from ``hard_start`` (the
        first one is an ordinary step, as the authors' count starts)."""
        h = self.cfg.hard_start
        return h != "never" and step is not None and step >= h and (step - h) % 2 == 1

    def hard_codes(self, nets, n: int, device=None, tries: int = 10) -> dict[str, Tensor]:
        """The authors' hard-negative mining: ``tries`` batches of random codes, rendered
        without gradients; the ``n`` whose masked child layer gets the lowest probability of
        its own code from Dc's information head."""
        cands, probs = [], []
        with torch.no_grad():
            for _ in range(tries):
                codes = self.sample_codes(n, device=device)
                out = self.generate(nets, codes)
                logits = nets["Dc"].forward_info(out["child_mask"] * out["child_fg"]).float()
                probs.append(logits.softmax(1).gather(1, codes["c"].to(logits.device)[:, None])[:, 0])
                cands.append(codes)
        keep = torch.cat(probs).argsort()[:n].to(cands[0]["c"].device)
        return {k: torch.cat([cd[k] for cd in cands])[keep] for k in cands[0]}

    def _loss_g(self, nets, batch) -> dict[str, Tensor]:
        c = self.cfg
        out, codes = self._fake(nets, batch, grad=True)
        if self.bg_d:
            f_adv, f_aux = nets["Dbg"](self.bg_view(nets, out["background"]))
            bg_adv, bg_aux = bce(f_adv, 1.0), bce(f_aux, 1.0)  # aux: 1 = background
        else:  # no background D (both its weights 0): the background learns from the image D alone
            bg_adv = bg_aux = out["image"].new_zeros((), dtype=torch.float32)
        child_adv = bce(nets["Dc"].forward_adv(out["image"]), 1.0)
        info_p, info_c = self.info_terms(nets, out, codes)
        loss = (c.w_bg_adv * bg_adv + c.w_bg_aux * bg_aux + c.w_child_adv * child_adv
                + c.w_info_p * info_p + c.w_info_c * info_c)
        parts = {"g_bg_adv": bg_adv, "g_bg_aux": bg_aux, "g_child_adv": child_adv, "info_p": info_p,
                 "info_c": info_c}
        area = out["child_mask"].float().mean()
        if c.w_mask_area > 0:  # keep both masks' mean inside the expected object size
            lo, hi = c.mask_area
            prior = 0.0
            for k in ("parent_mask", "child_mask"):
                per = out[k].float().mean(dim=(1, 2, 3))
                prior = prior + (F.relu(lo - per) + F.relu(per - hi)).mean()
            loss = loss + c.w_mask_area * prior
            parts["mask_prior"] = prior
        if c.w_mask_binary > 0:
            ent = sum(binary_entropy(out[k]).mean() for k in ("parent_mask", "child_mask"))
            loss = loss + c.w_mask_binary * ent
            parts["mask_entropy"] = ent
        parts["mask_area"] = area.detach()
        return {"loss": loss, **parts}

    def info_terms(self, nets, out: dict, codes: dict) -> tuple[Tensor, Tensor]:
        """FineGAN's information losses: p from the parent layer (or its silhouette, with
        ``model.info_p_input = "mask"``), c from the child layer."""
        if self.cfg.info_p_input == "mask":
            xp = (out["parent_mask"] * 2 - 1).expand(-1, 3, -1, -1)
        else:
            xp = out["parent_mask"] * out["parent_fg"]
        info_p = F.cross_entropy(nets["Dp"].forward_info(xp).float(), codes["p"])
        info_c = F.cross_entropy(nets["Dc"].forward_info(out["child_mask"] * out["child_fg"]).float(), codes["c"])
        return info_p, info_c

    @staticmethod
    def bg_view(nets, x: Tensor) -> Tensor:
        """What the background D reads: ``x`` resized (bilinear, corners aligned, as the
        authors' 128 -> 126) to the side its patches tile exactly."""
        return resize_square(x, nets["Dbg"].side)

    def _loss_d(self, nets, batch, step: int = 0) -> dict[str, Tensor]:
        c = self.cfg
        out, _ = self._fake(nets, batch, grad=True, step=step)  # G's graph is kept for the G phase
        fake_bg, fake_img = out["background"].detach(), out["image"].detach()
        if self.bg_d:
            Dbg = nets["Dbg"]
            full = batch.get("full", batch["image"])
            labels = None
            if "box" in batch:  # patch labels from the box, in the D's input pixels
                box = batch["box"] * (Dbg.side / full.shape[-1])
                labels = lambda n: Dbg.box_labels(box, n, c.bg_patch_thresh)  # noqa: E731
            bg_real, bg_aux, w = background_real_terms(Dbg, batch, step, c.bg_patch_thresh, c.bg_warmup,
                                                       full=self.bg_view(nets, full), labels=labels)
            bg_fake = bce(Dbg(self.bg_view(nets, fake_bg))[0], 0.0)
        else:
            bg_real = bg_aux = bg_fake = w = fake_img.new_zeros((), dtype=torch.float32)
        Dc = nets["Dc"]
        child_real = bce(Dc.forward_adv(batch["image"]), 1.0)
        child_fake = bce(Dc.forward_adv(fake_img), 0.0)
        loss = c.w_bg_adv * (bg_real + bg_fake) + c.w_bg_aux * bg_aux + child_real + child_fake
        return {"loss": loss, "d_bg_real": bg_real, "d_bg_fake": bg_fake, "d_bg_aux": bg_aux,
                "d_child_real": child_real, "d_child_fake": child_fake, "bg_patches": w.mean()}

    def _loss_phi(self, nets, batch) -> dict[str, Tensor]:
        # Paper 3.2: codes drawn freely (b independent of c), so phi_c cannot lean on the
        # background and phi_p must read the shape.
        n, dev = batch["image"].shape[0], batch["image"].device
        codes = self.sample_codes(n, device=dev, tie_b=False)
        with torch.no_grad():
            img = self.generate(nets, codes)["image"]
            flip = torch.rand(n, device=dev) < 0.5
            img = torch.where(flip[:, None, None, None], img.flip(3), img)
        lp = nets["phi_p"](img).float()
        lc = nets["phi_c"](img).float()
        loss_p, loss_c = F.cross_entropy(lp, codes["p"]), F.cross_entropy(lc, codes["c"])
        acc_c = (lc.argmax(1) == codes["c"]).float().mean()
        return {"loss": loss_p + loss_c, "phi_p": loss_p, "phi_c": loss_c, "phi_acc_c": acc_c}

    # ---------------------------------------------------------------- capabilities
    def cluster_features(self, nets, images: Tensor) -> dict[str, Tensor]:
        fp = F.normalize(nets["phi_p"].features(images).float(), dim=1)
        fc = F.normalize(nets["phi_c"].features(images).float(), dim=1)
        return {"parent": fp, "child": fc}

    def grids(self, nets, generator: torch.Generator, which: str = "train") -> dict[str, Grid]:
        c = self.cfg
        g = {}
        codes = self.sample_codes(16, generator)
        out = self.generate(nets, codes)
        g["samples"] = Grid(out["image"], 8)
        # per-stage layers (paper Fig. 3): one row per sample
        n = 6
        cols = ["background", "parent_mask", "parent", "child_mask", "image"]
        layer_imgs = torch.stack([as_rgb(out[k][:n].float()) for k in cols], 1).flatten(0, 1)
        g["layers"] = Grid(layer_imgs, len(cols), [f"c={int(v)}" for v in codes["c"][:n]],
                           ["background", "parent mask", "parent image", "child mask", "child image"])
        if which == "train":
            return g
        rows = min(c.n_parent, 6)
        ncol = min(self.ratio, 8)
        # fix p (row) and z, b; vary c among p's children (Fig. 4)
        z = torch.randn(rows, c.z_dim, generator=generator).repeat_interleave(ncol, 0)
        p = torch.arange(rows).repeat_interleave(ncol)
        cc = p * self.ratio + torch.arange(ncol).repeat(rows)
        b = torch.randint(0, c.n_child, (rows,), generator=generator).repeat_interleave(ncol)
        g["fix_p_vary_c"] = Grid(self.generate(nets, {"z": z, "b": b, "p": p, "c": cc})["image"], ncol,
                                 [f"p={i}" for i in range(rows)], [f"child {j}" for j in range(ncol)])
        # fix c (row) and b; vary z (pose)
        nz = 8
        cc = torch.randint(0, c.n_child, (rows,), generator=generator)
        z = torch.randn(nz, c.z_dim, generator=generator).repeat(rows, 1)
        cr = cc.repeat_interleave(nz)
        g["fix_c_vary_z"] = Grid(self.generate(nets, {"z": z, "b": cr, "p": cr // self.ratio, "c": cr})["image"],
                                 nz, [f"c={int(v)}" for v in cc], [f"z{j}" for j in range(nz)])
        # fix p, c and z (row); vary b
        nb = min(c.n_child, 8)
        bvals = torch.randperm(c.n_child, generator=generator)[:nb]
        z = torch.randn(rows, c.z_dim, generator=generator).repeat_interleave(nb, 0)
        cr = cc.repeat_interleave(nb)
        g["fix_pc_vary_b"] = Grid(self.generate(nets, {"z": z, "b": bvals.repeat(rows), "p": cr // self.ratio,
                                                       "c": cr})["image"],
                                  nb, [f"c={int(v)}" for v in cc], [f"b={int(v)}" for v in bvals])
        return g

