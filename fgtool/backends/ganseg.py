"""GANSeg (He, Wandt & Rhodin, CVPR 2022): part segmentation from a hierarchical GAN.

Two architectures. ``arch = "paper"`` is the authors' public code, tensor for tensor
(PaperGenerator, PaperDiscriminator, their penalties; with ``d_reg = "gp"``,
``d_first = true`` and ``seg_dice = "per_image"`` also their losses and iteration:
tests/reference/test_reference_ganseg.py, docs/models/ganseg.md). ``arch = "compact"`` (the
default, ours, in ganseg_nets.py) is the model the CPU recipes train.

Compact generation, level by level (all sizes from the config, so one file builds the paper's
128 px model and the 32 px CPU variants):

1. points: three independent noises (points, part appearance, background appearance).
   ``tanh(MLP(z_point) / 20)`` gives K parts x n_per points; a part's centre is the mean
   of its points and its scale the deviation of eq. 1. Part embeddings are
   ``MLP(z_app) * w_k`` with a learned constant ``w_k`` per part.
2. masks: a relative Fourier encoding of ``p - x_k^i`` (no absolute coordinates) starts
   a stack of SPADE ResBlocks conditioned on ``sum_k H_k(p) w_k`` (Gaussian heatmaps
   times embeddings); a softmax gives K + 1 masks, the last one the background.
3. foreground: SPADE ResBlocks on ``sum_k M_k(p) w_k`` from an encoding of ``p - x_k``;
   background: AdaIN ConvBlocks from an encoding of ``p - u`` with a random shift
   ``u ~ U[-1, 1]^2``; ``image = tanh(conv(conv((1 - m_bg) F + m_bg B)))``.

Every map carries a margin of ``margin`` pixels on each side; after each 2x upsampling the
doubled margin is cropped back (translation equivariance: moving every point and the
background shift by one pixel of the first resolution moves the image, see the tests).

Compact discriminator: a DCGAN-style stack of stride-2 4x4 convs with LeakyReLU and no
normalisation, down to 4x4 and one 4x4 conv to a logit (the authors' is residual, see
PaperDiscriminator).

Training: softplus (non-saturating) losses; every 16 steps a regulariser of D on real
images (``d_reg``: our lazy R1, or the authors' gradient penalty inside the D step), in
fp32; every second G step the concentration (x10) and area (x1) penalties. From
``seg_start`` the GAN stops and only the segmenter S moves: it learns from fresh
image/mask pairs of the frozen generator (eval mode), with 0.5 CE + 0.5 Dice against the
argmax of the K + 1 masks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import FgtoolError
from ..nn.blocks import (
    SmallSegmenter,
    TorchvisionSegmenter,
    eval_mode,
)
from ..nn.selftrain import (
    SelfTrainConfig,
    camouflage,
    check_self_train,
    jitter_all,
    pseudo_labels,
    segmenter_probs,
    self_training_loss,
    soft_dice_loss,
)
from ..registry import register
from .base import Backend, Grid, PartSegmenter, Phase, as_rgb
from .ganseg_nets import (
    GANSegDiscriminator,
    GANSegGenerator,
    PaperDiscriminator,
    PaperGenerator,
    Teacher,
    _f32,
    dice_per_image,
    gradient_penalty,
    paper_penalties,
    r1_penalty,
)

SEG_ARCHS = ("small", *TorchvisionSegmenter.ARCHS)


@dataclass
class GANSegConfig(SelfTrainConfig):
    # "paper": the authors' networks (PaperGenerator, PaperDiscriminator) and their penalties;
    # "compact" (ours): one generator block per resolution, the masks at the first resolution
    # only, Gaussian heatmaps, a plain strided-conv D (GANSegGenerator, GANSegDiscriminator)
    arch: str = "compact"
    n_parts: int = 8  # K (10 for Taichi in the paper)
    n_per: int = 4  # points per part
    z_dim: int = 256  # each of the three noises (points, part appearance, background appearance)
    mlp_hidden: int = 512  # the 3-layer MLPs of level 1 and of the background appearance
    point_div: float = 20.0  # points = tanh(MLP(z) / point_div)
    # ours, 0 = off (the paper): > 0 adds one object position per image from its own MLP,
    # points = tanh(MLP_obj(z) / object_div + MLP(z) / point_div), so the parts start
    # clustered around a random object centre and move as one object from step 0
    object_div: float = 0.0
    emb_dim: int = 64  # part embedding D_emb (conditions the SPADE blocks)
    start_div: int = 4  # first resolution = size / start_div (128 px -> 32: the paper's 32, 32, 64, 128)
    mask_ch: int = 256  # width of the mask generator
    mask_blocks: int = 3  # SPADE ResBlocks of the mask generator (at the first resolution)
    gen_ch: int = 256  # foreground/background width at the first resolution; halves per upsampling
    gen_min_ch: int = 64
    spade_hidden: int = 128
    # border kept around every map, in pixels at every resolution. auto: the paper's 10 px at
    # 128 px, scaled with the image size (64 px -> 5) and never below 3 (32 px -> 3): two 3x3
    # convs per block need about 2 px for their zero padding to stay out of the image
    margin: int | Literal["auto"] = "auto"
    # where foreground and background meet: "feature" (the paper) blends the feature maps and
    # renders the blend with to_rgb's two 3x3 convs, so a mask may spill a pixel or two past
    # the object it draws; "rgb" renders each layer and blends the pictures, so the mask's
    # edge is the object's edge (ours, for segmenters trained on the generated masks)
    blend: str = "feature"
    sigma_floor: float = 0.0  # added in quadrature to each part scale in the heatmaps (paper: 0)
    ndf: int = 64  # discriminator base width
    lr_g: float = 1e-4
    lr_d: float = 4e-4
    betas: tuple[float, float] = (0.5, 0.9)
    w_r1: float = 10.0
    r1_every: int = 16
    # the regulariser of D on real images, every r1_every steps: "r1_lazy" (ours) E||grad||^2 in
    # a phase of its own, scaled by 0.5 r1_every; "gp" (the authors) E(||grad|| - 1)^2 x w_r1
    # added to that step's D loss, unscaled
    d_reg: str = "r1_lazy"
    # the authors: D steps first on a render of its own, then G on a fresh render (two G
    # forwards per step); off (ours): G steps first and D re-uses its render, detached
    d_first: bool = False
    w_con: float = 10.0  # geometric concentration penalty (30 for flowers / Taichi)
    w_area: float = 1.0
    pen_every: int = 2  # the penalties join the G loss every pen_every-th step
    seg_start: int | Literal["never"] = 30000  # step where the GAN stops and the segmenter starts, or never
    seg_arch: str = "deeplabv3_resnet50"  # or deeplabv3_mobilenet_v3_large, or small (SmallSegmenter)
    seg_batch: int | Literal["auto"] = "auto"  # generated pairs per segmenter step; auto: train.batch_size
    # the segmenter's Dice term: "pooled" (ours) over the batch and pixels per class, smoothed
    # by 1; "per_image" (the authors) per image and class, smoothed by 1e-8, then averaged
    seg_dice: str = "pooled"
    # ours, 0 = off: this share of the segmenter's pairs put the generated foreground (its
    # rendered layer, cut out by its mask) on a real background, the box-outside crops of
    # data.bg_crops (real boxes only), so that backgrounds the GAN never learned to draw are
    # still seen as background
    seg_real_bg: float = 0.0
    # ours, 0 = off: colour jitter of the segmenter's generated images: brightness, contrast and
    # saturation by up to seg_jitter, hue by up to seg_hue turns (0.5: any hue), so that object
    # colours the generator never draws are still seen as objects
    seg_jitter: float = 0.0
    seg_hue: float = 0.0
    # ours, off: jitter the object and its background with separate draws, then blend them with
    # the generated mask (rather than one draw over the blended image), so that an object of any
    # colour is seen on backgrounds of any colour, a green object on real grass included
    seg_jitter_split: bool = False
    # ours, 0 = off: this share of the pairs has the object's far side of a random line through
    # its centre painted flat in its background's mean colour (the mask unchanged), so that the
    # segmenter learns to follow a silhouette where part of the object matches its surroundings
    # (a green half of a star on grass). It re-blends the layers, so any colour jitter is then
    # drawn apart for object and background, as with seg_jitter_split
    seg_camo: float = 0.0
    # ours: the painted colour is the background's mean moved by a random RGB offset of length
    # U[seg_camo_shift / 2, seg_camo_shift] (image units, [-1, 1]): close to the surroundings but
    # with an edge to follow, so the segmenter learns faint boundaries rather than to fill in
    # an invisible half (0 = exactly the mean: masks grow into flat backgrounds)
    seg_camo_shift: float = 0.0
    # ours, never by default: self-training. From this step (>= seg_start) the segmenter also learns
    # from the batch's real photos against its own predictions on them: the teacher is S in
    # eval mode on the clean photo, its map refined by self_refine; the student sees the
    # photo colour-jittered (self_jitter) and flipped. The generated pairs keep their loss.
    # The other self_* keys, seg_width, lr_s, seg_betas, w_ce and w_dice:
    # fgtool.nn.selftrain.SelfTrainConfig
    self_start: int | Literal["never"] = "never"
    w_self: float = 1.0
    # the teacher: 0 = S itself (live); 1 = a copy of S taken at self_start and then frozen;
    # between = an EMA of S with this decay, from that copy. A fixed or slow teacher cannot
    # chase its own mistakes, so pseudo-labels that shrink a mask do not feed on themselves
    self_ema: float = 0.0


# ----------------------------------------------------------------------------- backend


@register
class GANSeg(Backend, PartSegmenter):
    name = "ganseg"
    Config = GANSegConfig
    ema = ("G",)  # not S: an EMA that starts averaging at ema_start would mix in the untrained S
    inference_nets = ("G", "S")
    uses_boxes = False

    def __init__(self, cfg: GANSegConfig, size: int):
        super().__init__(cfg, size)
        c = cfg
        if c.n_parts < 1 or c.n_per < 2:
            raise FgtoolError("model.n_parts must be >= 1 and model.n_per >= 2 (a part's scale needs two points)")
        if c.start_div < 1 or c.start_div & (c.start_div - 1) or size % c.start_div:
            raise FgtoolError(f"model.start_div must be a power of two that divides data.size={size}, "
                              f"got {c.start_div}")
        if c.margin != "auto" and c.margin < 0:
            raise FgtoolError(f"model.margin must be >= 0 pixels or \"auto\", got {c.margin}")
        if c.seg_arch not in SEG_ARCHS:
            raise FgtoolError(f"model.seg_arch must be one of {', '.join(SEG_ARCHS)}, got {c.seg_arch!r}")
        if c.arch not in ("compact", "paper"):
            raise FgtoolError(f"model.arch must be 'compact' or 'paper', got {c.arch!r}")
        if c.d_reg not in ("r1_lazy", "gp"):
            raise FgtoolError(f"model.d_reg must be 'r1_lazy' or 'gp', got {c.d_reg!r}")
        if c.seg_dice not in ("pooled", "per_image"):
            raise FgtoolError(f"model.seg_dice must be 'pooled' or 'per_image', got {c.seg_dice!r}")
        if c.arch == "paper":
            n_res = int(round(math.log2(c.start_div))) + 1
            if c.gen_ch >> n_res < 1 or size < 4:
                raise FgtoolError(f"model.arch 'paper' halves model.gen_ch ({c.gen_ch}) {n_res - 1} times "
                                  f"after the first: it must be at least {2 ** n_res}")
            ours = {"blend": (c.blend, "feature"), "sigma_floor": (c.sigma_floor, 0.0),
                    "object_div": (c.object_div, 0.0)}
            bad = [f"model.{k} = {v!r}" for k, (v, off) in ours.items() if v != off]
            if bad:
                raise FgtoolError(f"model.arch 'paper' is the authors' generator, which has none of: "
                                  f"{', '.join(bad)} (options of the compact arch)")
        if c.blend not in ("feature", "rgb"):
            raise FgtoolError(f"model.blend must be 'feature' or 'rgb', got {c.blend!r}")
        if c.seg_start != "never" and c.seg_start < 1:
            raise FgtoolError(f"model.seg_start must be a step >= 1 or \"never\" (no segmenter stage), "
                              f"got {c.seg_start}")
        if c.r1_every < 1 or c.pen_every < 1:
            raise FgtoolError("model.r1_every and model.pen_every must be >= 1")
        if not 0.0 <= c.seg_real_bg <= 1.0:
            raise FgtoolError(f"model.seg_real_bg is a share in [0, 1], got {c.seg_real_bg}")
        if c.self_start != "never" and (c.seg_start == "never" or c.self_start < c.seg_start):
            raise FgtoolError(f"model.self_start ({c.self_start}) needs a segmenter stage that starts no later: "
                              f"model.seg_start is {c.seg_start}")
        check_self_train(c)
        if min(c.seg_jitter, c.seg_hue) < 0 or c.seg_hue > 0.5:
            raise FgtoolError("model.seg_jitter must be >= 0 and model.seg_hue in [0, 0.5]")
        if not 0.0 <= c.seg_camo <= 1.0:
            raise FgtoolError(f"model.seg_camo is a share in [0, 1], got {c.seg_camo}")
        if c.seg_camo_shift < 0:
            raise FgtoolError(f"model.seg_camo_shift is a colour distance >= 0, got {c.seg_camo_shift}")
        if not 0.0 <= c.self_ema <= 1.0:
            raise FgtoolError(f"model.self_ema is a decay in [0, 1] (0 = S itself, 1 = frozen), got {c.self_ema}")
        if c.point_div <= 0 or c.object_div < 0:
            raise FgtoolError(f"model.point_div must be > 0 and model.object_div >= 0 (0 = off), "
                              f"got {c.point_div} and {c.object_div}")
        self.k = c.n_parts

    # ---------------------------------------------------------------- nets and phases
    def build(self) -> dict[str, nn.Module]:
        c = self.cfg
        seg = (SmallSegmenter(self.k + 1, c.seg_width) if c.seg_arch == "small"
               else TorchvisionSegmenter(c.seg_arch, self.k + 1))
        if c.arch == "paper":
            nets = {"G": PaperGenerator(c, self.size), "D": PaperDiscriminator(c.ndf, self.size), "S": seg}
        else:
            nets = {"G": GANSegGenerator(c, self.size), "D": GANSegDiscriminator(c.ndf, self.size), "S": seg}
        if c.self_start != "never" and c.self_ema > 0:
            nets["T"] = Teacher(seg)
        return nets

    def phases(self) -> list[Phase]:
        c = self.cfg
        s = None if c.seg_start == "never" else c.seg_start
        betas = tuple(c.betas)
        g = Phase("G", ("G",), lr=c.lr_g, betas=betas, stop=s)
        d = Phase("D", ("D",), lr=c.lr_d, betas=betas, stop=s)
        # d_first: D, then G, each on its own render; else G first: its fake batch is cached
        # and re-used, detached, by D (one G forward per step)
        ph = [d, g] if c.d_first else [g, d]
        if c.d_reg == "r1_lazy":
            ph.append(Phase("D_r1", ("D",), every=c.r1_every, lr=c.lr_d, betas=betas, stop=s))
        if s is not None:  # stage 2: only the segmenter moves
            ph.append(Phase("S", ("S",), lr=c.lr_s, betas=tuple(c.seg_betas), start=s))
        return ph

    def segment_ready(self, step: int) -> bool:
        """Whether a checkpoint at ``step`` holds a trained segmenter."""
        return self.cfg.seg_start != "never" and step > self.cfg.seg_start

    # ---------------------------------------------------------------- codes
    def sample_codes(self, n: int, generator: torch.Generator | None = None, device=None, **fix) -> dict[str, Tensor]:
        kw = {"generator": generator, "device": device}
        z = self.cfg.z_dim
        codes = {"z_point": torch.randn(n, z, **kw), "z_app": torch.randn(n, z, **kw),
                 "z_bg": torch.randn(n, z, **kw), "u_bg": torch.rand(n, 2, **kw) * 2 - 1}
        for k, v in fix.items():
            if k not in codes and k != "points":
                raise FgtoolError(f"unknown GANSeg code {k!r}; codes are {', '.join(codes)}")
            codes[k] = v.to(device) if torch.is_tensor(v) else v
        return codes

    def code_sizes(self) -> dict[str, int]:
        return {"z_point": 0, "z_app": 0, "z_bg": 0}

    def generate(self, nets, codes, geometry: bool = False) -> dict[str, Tensor]:
        """image [N,3,S,S]; mask (foreground = 1 - background) [N,1,S,S]; parts [N,K+1,S,S]
        (softmax, last channel background); foreground, background [N,3,S,S] (each layer
        rendered alone). ``geometry``: also points [N,K,n_per,2], centres [N,K,2] and
        sigma [N,K] (image coordinates in [-1,1]). ``codes`` may hold ``points`` to
        place the parts by hand."""
        G = nets["G"]
        dev = next(G.parameters()).device
        out = G({k: v.to(dev) for k, v in codes.items()}, layers=True)
        keep = ["image", "mask", "parts", "foreground", "background"]
        if geometry:
            keep += ["points", "centres", "sigma"]
        return {k: out[k] for k in keep}

    # ---------------------------------------------------------------- losses
    def loss(self, phase, nets, batch, step) -> dict[str, Tensor]:
        return {"G": self._loss_g, "D": self._loss_d, "D_r1": self._loss_r1, "S": self._loss_s}[phase](
            nets, batch, step)

    def _fake(self, nets, batch, grad: bool, phase: str = "G") -> dict[str, Tensor]:
        key = f"fake_{phase}" if self.cfg.d_first else "fake"
        return self.fake_batch(nets, batch, grad, render=lambda n, codes: n["G"](codes), key=key)[0]

    def penalties(self, out: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Concentration (eq. 16) and area (eq. 17) at the mask resolution, summed over
        parts (the background is free) and pixels, averaged over the batch."""
        if "masks_low" not in out:  # arch "paper": the authors' forms, on the full-size masks
            return paper_penalties(out, self.k, self.cfg.n_per, self.size)
        masks = out["masks_low"][:, :self.k].float()  # [N, K, h, w]
        grid, centre = out["grid"], out["centres"]
        d2 = ((grid[None, None] - centre[:, :, None, None, :]) ** 2).sum(-1)
        mass = masks.sum((2, 3))
        con = ((masks * d2).sum((2, 3)) / (mass + 1e-6)).sum(1).mean()
        area = F.relu(out["heat"].float().sum((2, 3)) - mass).sum(1).mean()
        return con, area

    def _loss_g(self, nets, batch, step) -> dict[str, Tensor]:
        c = self.cfg
        out = self._fake(nets, batch, grad=True, phase="G")
        g_adv = F.softplus(-_f32(nets["D"](out["image"]))).mean()
        loss = g_adv
        parts = {"g_adv": g_adv}
        if step % c.pen_every == 0:
            con, area = self.penalties(out)
            loss = loss + c.w_con * con + c.w_area * area
            parts.update(con=con, area=area)
        with torch.no_grad():
            parts["fg_area"] = out["mask"].float().mean()
            parts["sigma"] = out["sigma"].mean()
        return {"loss": loss, **parts}

    def _loss_d(self, nets, batch, step) -> dict[str, Tensor]:
        c = self.cfg
        fake = self._fake(nets, batch, grad=False, phase="D")["image"].detach()
        D = nets["D"]
        gp = c.d_reg == "gp" and step % c.r1_every == 0
        if gp:
            with torch.autocast(device_type=batch["image"].device.type, enabled=False):
                out_real, pen = gradient_penalty(D, _f32(batch["image"]))
        else:
            out_real = D(batch["image"])
        d_real = F.softplus(-_f32(out_real)).mean()
        d_fake = F.softplus(_f32(D(fake))).mean()
        parts = {"loss": d_real + d_fake, "d_real": d_real, "d_fake": d_fake}
        if gp:
            parts.update(loss=parts["loss"] + c.w_r1 * pen, gp=pen)
        return parts

    def _loss_r1(self, nets, batch, step) -> dict[str, Tensor]:
        c = self.cfg
        r1 = r1_penalty(nets["D"], batch["image"])
        # lazy regularisation: applied every r1_every steps, so scaled by r1_every
        return {"loss": 0.5 * c.w_r1 * c.r1_every * r1, "r1": r1}

    def _loss_s(self, nets, batch, step) -> dict[str, Tensor]:
        c = self.cfg
        n = batch["image"].shape[0] if c.seg_batch == "auto" else c.seg_batch
        dev = batch["image"].device
        G = nets["G"]
        real_bg = c.seg_real_bg > 0 and "bg_crop" in batch
        jitter = c.seg_jitter > 0 or c.seg_hue > 0
        layered = (jitter and c.seg_jitter_split) or c.seg_camo > 0  # re-blend the layers ourselves
        with torch.no_grad(), eval_mode(G):
            out = G(self.sample_codes(n, device=dev), layers=real_bg or layered)
        target = out["parts"].float().argmax(1)
        image = out["image"].detach()
        if real_bg:  # which of the first m pairs get a real background crop
            crops, ok = batch["bg_crop"].float(), batch["bg_crop_ok"] > 0.5
            m = min(n, crops.shape[0])
            pick = ((torch.rand(m, device=dev) < c.seg_real_bg) & ok[:m])[:, None, None, None]
        fg = out["mask"].float()
        fore = out["foreground"].float() if (real_bg or layered) else None
        if layered:  # the blend of the two layers, each with its own colours
            bg = out["background"].float()
            if real_bg:
                bg = torch.cat([torch.where(pick, crops[:m], bg[:m]), bg[m:]])
            if jitter:
                fore, bg = jitter_all(fore, c.seg_jitter, c.seg_hue), jitter_all(bg, c.seg_jitter, c.seg_hue)
            if c.seg_camo > 0:
                fore = camouflage(fore, bg, fg, torch.rand(n, device=dev) < c.seg_camo, c.seg_camo_shift)
            image = (fg * fore + (1 - fg) * bg).to(image.dtype)
        else:
            if real_bg:
                pasted = fg[:m] * fore[:m] + (1 - fg[:m]) * crops[:m]
                image = torch.cat([torch.where(pick, pasted.to(image.dtype), image[:m]), image[m:]])
            if jitter:
                image = jitter_all(image, c.seg_jitter, c.seg_hue)
        logits = _f32(nets["S"](image))
        ce = F.cross_entropy(logits, target)
        dice = soft_dice_loss(logits, target) if c.seg_dice == "pooled" else dice_per_image(logits, target)
        extra = {}
        if c.self_start != "never" and step >= c.self_start:
            teacher = nets["S"]
            if "T" in nets:
                nets["T"].follow(nets["S"], c.self_ema)
                teacher = nets["T"].net
            gen_fg = (target != self.k).flatten(1).float().mean(1)
            extra = self._self_training(nets["S"], batch["image"], teacher, fg_range=gen_fg.aminmax())
        with torch.no_grad():
            pred = logits.argmax(1)
            acc = (pred == target).float().mean()
            pf, tf = pred != self.k, target != self.k
            inter = (pf & tf).flatten(1).sum(1).float()
            union = (pf | tf).flatten(1).sum(1).float()
            fg_iou = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union)).mean()
        loss = c.w_ce * ce + c.w_dice * dice
        if extra:
            loss = loss + c.w_self * extra["s_self"]
        return {"loss": loss, "s_ce": ce, "s_dice": dice, "s_acc": acc, "s_fg_iou": fg_iou, **extra}

    def pseudo_labels(self, S: nn.Module, real: Tensor,
                      fg_range: tuple[Tensor | float, Tensor | float] | None = None) -> tuple[Tensor, Tensor]:
        """The self-training targets of real photos: labels [N, H, W] in 0..K (K = background)
        and a weight map [N, H, W] (0 = ignored), from S in eval mode on the clean photos.
        With self_guard, ``fg_range`` (the smallest and largest foreground share of the
        step's generated masks) bounds the foreground share a kept label may have."""
        return pseudo_labels(self.cfg, segmenter_probs(S, real, self.cfg.self_tta), real, fg_range)

    def _self_training(self, S: nn.Module, real: Tensor, teacher: nn.Module | None = None,
                       fg_range: tuple[Tensor | float, Tensor | float] | None = None) -> dict[str, Tensor]:
        lab, weight = self.pseudo_labels(S if teacher is None else teacher, real, fg_range)
        return self_training_loss(self.cfg, S, real, lab, weight)

    # ---------------------------------------------------------------- segmentation
    def segment_parts(self, nets, images: Tensor) -> Tensor:
        """Softmax over K + 1 labels [N, K+1, H, W]; the last channel is the background."""
        return nets["S"](images).float().softmax(1)

    def segment(self, nets, images: Tensor) -> Tensor:
        """Foreground probability [N, 1, H, W] = 1 - p(background)."""
        return 1.0 - self.segment_parts(nets, images)[:, self.k:]

    def part_centres(self, probs: Tensor, min_mass: float = 0.002) -> Tensor:
        """Centres of mass [N, K, 2] of the part probability maps (image coordinates in
        [-1, 1]); NaN for a part that covers less than ``min_mass`` of the image."""
        from ..metrics.parts import mass_centres

        c = mass_centres(probs[:, :self.k].detach().float().cpu().numpy(), min_mass)
        return torch.from_numpy(c).to(device=probs.device, dtype=torch.float32)

    def n_parts(self) -> int:
        return self.k

    # ---------------------------------------------------------------- pictures
    def part_picture(self, images: Tensor, parts: Tensor, centres: Tensor | None = None,
                     points: Tensor | None = None) -> Tensor:
        """Parts coloured over the image (background uncoloured), centres as outlined dots
        and the individual points as single pixels (paper Figs 18-21)."""
        from ..io.images import draw_points, part_overlay

        lab = parts.float().argmax(1)
        lab = torch.where(lab == self.k, torch.full_like(lab, -1), lab)
        x = part_overlay(images.float(), lab, self.k, alpha=0.45)
        r = max(1, images.shape[-1] // 48)
        if points is not None:
            pts = points.flatten(1, 2)
            cols = [c for c in _palette(self.k) for _ in range(points.shape[2])]
            x = draw_points(x, pts, radius=0, colors=cols, outline=False)
        if centres is not None:
            x = draw_points(x, centres, radius=r)
        return x

    def grids(self, nets, generator: torch.Generator, which: str = "train") -> dict[str, Grid]:
        g = {}
        codes = self.sample_codes(16, generator)
        out = self.generate(nets, codes, geometry=True)
        img = out["image"].float()
        g["samples"] = Grid(img, 8)
        g["parts"] = Grid(self.part_picture(img, out["parts"], out["centres"], out["points"]), 8)
        n = 6
        cols = {"image": img, "parts": self.part_picture(img, out["parts"], out["centres"]),
                "mask": as_rgb(out["mask"].float()), "foreground": out["foreground"].float(),
                "background": out["background"].float()}
        g["layers"] = Grid(torch.stack([v[:n] for v in cols.values()], 1).flatten(0, 1), len(cols),
                           [f"#{i}" for i in range(n)], list(cols))
        # what the segmenter makes of generated images (untrained before model.seg_start)
        with eval_mode(nets["S"]):
            sp = self.segment_parts(nets, img[:8])
        g["segmenter"] = Grid(torch.stack([img[:8], self.part_picture(img[:8], out["parts"][:8]),
                                           self.part_picture(img[:8], sp)], 1).flatten(0, 1), 3,
                              [f"#{i}" for i in range(8)], ["image", "generator parts", "segmenter parts"])
        if which == "train":
            return g
        # same points and part appearance per row, background code and shift along the row
        rows, ncol = 4, 6
        base = self.sample_codes(rows, generator)
        rep = {k: v.repeat_interleave(ncol, 0) for k, v in base.items()}
        bgc = self.sample_codes(ncol, generator)
        rep["z_bg"], rep["u_bg"] = bgc["z_bg"].repeat(rows, 1), bgc["u_bg"].repeat(rows, 1)
        g["vary_bg"] = Grid(self.generate(nets, rep)["image"], ncol, [f"fg{i}" for i in range(rows)],
                            [f"bg{j}" for j in range(ncol)])
        # same background and appearance per row, points along the row
        rep = {k: v.repeat_interleave(ncol, 0) for k, v in base.items()}
        rep["z_point"] = bgc["z_point"].repeat(rows, 1)
        g["vary_points"] = Grid(self.generate(nets, rep)["image"], ncol, [f"row{i}" for i in range(rows)],
                                [f"points{j}" for j in range(ncol)])
        return g


def _palette(k: int) -> list[tuple[int, int, int]]:
    from ..io.images import PART_PALETTE

    return [PART_PALETTE[j % len(PART_PALETTE)] for j in range(k)]
