"""Self-training of a segmenter on real photos, shared by the backends that train one
(GANSeg's segmenter stage, OneGAN's distilled segmenter).

A teacher's soft map of a batch of photos becomes hard labels: its foreground refined by
GrabCut (:func:`fgtool.nn.refine.grabcut_refine`) or its confident pixels, optionally with a
guard that drops labels GrabCut rewrote. The student sees the photos colour-jittered and
flipped and learns CE + soft Dice against those labels (:func:`self_training_loss`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import FgtoolError
from .augment import color_jitter
from .blocks import eval_mode
from .refine import flip_average, grabcut_refine


@dataclass
class SelfTrainConfig:
    """The keys of a segmenter that learns from photos (model config fields)."""

    seg_width: int = 32  # width of the small segmenter
    # "grabcut": the teacher's foreground (> 0.5) refined by GrabCut in a band of self_band
    # pixels either side of its edge (fgtool.nn.refine); "none": the teacher's argmax where
    # its probability is at least self_conf, other pixels ignored
    self_refine: str = "grabcut"
    self_conf: float = 0.9
    self_band: int | Literal["auto"] = "auto"  # auto: size // 16 (2 px at 32 px)
    self_iters: int = 5  # GrabCut rounds
    self_jitter: float = 0.3  # brightness, contrast and saturation range; hue a quarter of it
    # ours, 0 = off: a photo's pseudo-label is dropped when GrabCut changed its foreground area by
    # more than this share of the teacher's own (> 0.5) area (a refinement that rewrites a mask
    # rather than its edge), when the teacher found less than 1% foreground, or when the label's
    # foreground share is outside a plausible range (GANSeg: that of the same step's generated
    # masks; OneGAN: model.self_fg_range). A self-trained segmenter can drift to "all object" or
    # "no object" on a kind of background, and GrabCut, with no sure background or no sure
    # foreground to learn from, cannot pull it back
    self_guard: float = 0.0
    # ours, off: the teacher's map is the mean of its maps of the photo and of its mirror image
    # (as `--tta flip` at inference): steadier labels, and no left-right bias to feed on itself
    self_tta: bool = False
    lr_s: float = 3e-4
    seg_betas: tuple[float, float] = (0.9, 0.999)
    w_ce: float = 0.5
    w_dice: float = 0.5


def check_self_train(c: SelfTrainConfig) -> None:
    """One-line errors for out-of-range self-training keys."""
    if c.self_refine not in ("grabcut", "none"):
        raise FgtoolError(f"model.self_refine must be 'grabcut' or 'none', got {c.self_refine!r}")
    if c.self_band != "auto" and c.self_band < 0:
        raise FgtoolError(f"model.self_band must be >= 0 pixels or \"auto\", got {c.self_band}")
    if c.self_jitter < 0 or not 0.5 <= c.self_conf <= 1.0:
        raise FgtoolError("model.self_jitter must be >= 0 and model.self_conf in [0.5, 1]")
    if c.self_guard < 0:
        raise FgtoolError(f"model.self_guard is a share >= 0 (0 = off), got {c.self_guard}")
    if c.seg_width < 1:
        raise FgtoolError(f"model.seg_width must be >= 1, got {c.seg_width}")


def soft_dice_loss(logits: Tensor, target: Tensor, eps: float = 1.0, weight: Tensor | None = None) -> Tensor:
    """1 - mean over classes of the soft Dice between softmax(logits) and one-hot(target),
    pooled over the batch and the pixels; pixels of weight 0 ([N, H, W]) are left out."""
    p = logits.float().softmax(1)
    onehot = F.one_hot(target, p.shape[1]).permute(0, 3, 1, 2).to(p)
    if weight is not None:
        w = weight.to(p)[:, None]
        p, onehot = p * w, onehot * w
    inter = (p * onehot).sum((0, 2, 3))
    denom = p.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    return 1.0 - ((2 * inter + eps) / (denom + eps)).mean()


def jitter_all(x: Tensor, strength: float, hue: float) -> Tensor:
    """Colour jitter of every image: brightness, contrast and saturation by up to
    ``strength``, hue by up to ``hue`` turns; no grayscale."""
    return color_jitter(x, p=1.0, brightness=strength, contrast=strength, saturation=strength,
                        hue=hue, p_gray=0.0)


def camouflage(fore: Tensor, back: Tensor, mask: Tensor, pick: Tensor, shift: float = 0.0) -> Tensor:
    """``fore`` [N, 3, H, W] with, for the picked images, the pixels beyond a random line through
    the centre of ``mask`` [N, 1, H, W] set to the mean colour of ``back`` outside the mask,
    moved by a random offset of length U[shift / 2, shift] in a random RGB direction."""
    n, _, h, w = fore.shape
    ys = torch.arange(h, device=fore.device, dtype=fore.dtype).view(1, 1, h, 1)
    xs = torch.arange(w, device=fore.device, dtype=fore.dtype).view(1, 1, 1, w)
    mass = mask.sum((2, 3), keepdim=True).clamp_min(1e-6)
    cy, cx = (mask * ys).sum((2, 3), keepdim=True) / mass, (mask * xs).sum((2, 3), keepdim=True) / mass
    a = torch.rand(n, 1, 1, 1, device=fore.device) * 2 * math.pi
    far = ((xs - cx) * a.cos() + (ys - cy) * a.sin()) > 0
    out_w = 1 - mask
    mean = (out_w * back).sum((2, 3), keepdim=True) / out_w.sum((2, 3), keepdim=True).clamp_min(1e-6)
    if shift > 0:
        kw = {"device": fore.device, "dtype": fore.dtype}
        d = F.normalize(torch.randn(n, 3, 1, 1, **kw), dim=1) * shift * (0.5 + 0.5 * torch.rand(n, 1, 1, 1, **kw))
        mean = (mean + d).clamp(-1, 1)
    return torch.where(far & pick.view(n, 1, 1, 1), mean.expand_as(fore), fore)


def teacher_probs(fn, real: Tensor, tta: bool) -> Tensor:
    """``fn``'s maps [N, K+1, H, W] of the photos (no gradients), averaged with those of
    their mirror images when ``tta``."""
    with torch.no_grad():
        return (flip_average(fn, real) if tta else fn(real)).float()


def segmenter_probs(S: nn.Module, real: Tensor, tta: bool) -> Tensor:
    """A segmenter's softmax maps [N, K+1, H, W] of the photos, in eval mode, without
    gradients, mirror-averaged when ``tta``: the teacher when S teaches itself."""
    with eval_mode(S):
        return teacher_probs(lambda x: S(x).float().softmax(1), real, tta)


def pseudo_labels(c: SelfTrainConfig, prob: Tensor, real: Tensor,
                  fg_range: tuple[Tensor | float, Tensor | float] | None = None,
                  guard: float | None = None) -> tuple[Tensor, Tensor]:
    """Labels [N, H, W] in 0..K (K = background, the last channel of ``prob`` [N, K+1, H, W])
    and a weight map [N, H, W] (0 = ignored) for the photos ``real`` [N, 3, H, W].
    With a guard (``guard``, default ``c.self_guard``), ``fg_range`` bounds the foreground
    share a kept label may have."""
    guard = c.self_guard if guard is None else guard
    k = prob.shape[1] - 1
    conf, lab = prob.max(1)
    if c.self_refine == "none":
        return lab, (conf >= c.self_conf).float()
    band = max(1, real.shape[-1] // 16) if c.self_band == "auto" else c.self_band
    fg = grabcut_refine(real, 1.0 - prob[:, k], band=band, iters=c.self_iters).to(prob.device)
    part = prob[:, :k].argmax(1)
    weight = torch.ones_like(conf)
    if guard > 0:
        raw = (lab != k).flatten(1).float().mean(1)
        new = fg.flatten(1).float().mean(1)
        keep = (raw >= 0.01) & ((new - raw).abs() <= guard * raw)
        if fg_range is not None:  # an all-object or no-object label feeds on itself
            lo, hi = (torch.as_tensor(v, device=new.device) for v in fg_range)
            keep = keep & (new >= lo) & (new <= hi)
        weight = weight * keep[:, None, None].to(weight)
    return torch.where(fg, part, torch.full_like(part, k)), weight


def paste_pairs(real: Tensor, lab: Tensor, weight: Tensor, crops: Tensor, ok: Tensor,
                share: float, k: int, camo: float = 0.0, camo_shift: float = 0.0
                ) -> tuple[Tensor, Tensor, Tensor] | None:
    """Extra pairs with exact labels: ``share`` x N objects of the photos ``real`` [N, 3, H, W]
    whose labels ``lab`` [N, H, W] (0..k, k = background) are kept (``weight`` [N, H, W] > 0 somewhere), cut out by
    their labels and put on random box-outside crops ``crops`` [M, 3, H, W] (``ok`` [M] True
    where a crop exists). (images, labels, weights), or None when there is nothing to paste.
    An object that is hard to see on its own background (a green star on grass) is easy on
    another (sky), so its label from there teaches the other. ``camo``: this share of them
    half painted near their new background's colour (:func:`camouflage`)."""
    n = int(round(share * real.shape[0]))
    kept = (weight.flatten(1).amax(1) > 0).nonzero()[:, 0]
    good = ok.nonzero()[:, 0]
    if n == 0 or not len(kept) or not len(good):
        return None
    dev = real.device
    src = kept[torch.randint(len(kept), (n,), device=dev)]
    dst = good[torch.randint(len(good), (n,), device=dev)]
    fg = (lab[src] != k)[:, None].to(real.dtype)
    fore, back = real[src], crops[dst].to(real.dtype)
    if camo > 0:
        fore = camouflage(fore, back, fg, torch.rand(n, device=dev) < camo, camo_shift)
    return fg * fore + (1 - fg) * back, lab[src], weight[src]


def self_training_loss(c: SelfTrainConfig, S: nn.Module, real: Tensor, lab: Tensor,
                       weight: Tensor) -> dict[str, Tensor]:
    """CE + soft Dice of ``S`` on the photos (colour-jittered by ``c.self_jitter``, half of
    them mirrored with their labels) against ``lab`` where ``weight`` > 0."""
    x = jitter_all(real, c.self_jitter, c.self_jitter / 4) if c.self_jitter > 0 else real
    flip = torch.rand(x.shape[0], device=x.device) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    lab = torch.where(flip[:, None, None], lab.flip(-1), lab)
    weight = torch.where(flip[:, None, None], weight.flip(-1), weight)
    logits = S(x).float()
    k = logits.shape[1] - 1
    ce = (F.cross_entropy(logits, lab, reduction="none") * weight).sum() / weight.sum().clamp_min(1.0)
    loss = c.w_ce * ce + c.w_dice * soft_dice_loss(logits, lab, weight=weight)
    return {"s_self": loss, "s_self_fg": (lab != k).float().mean(), "s_self_used": weight.mean()}
