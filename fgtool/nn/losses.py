"""Loss pieces shared by the backends."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def at_least_fp32(x: Tensor) -> Tensor:
    """At least fp32: half precision goes up to fp32, float64 stays float64."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def cosine_logits(h: Tensor, centres: Tensor, tau: float) -> Tensor:
    """[N, K] cosine similarities of features to centres, divided by a temperature."""
    return F.normalize(at_least_fp32(h), dim=1) @ F.normalize(at_least_fp32(centres), dim=1).t() / tau


def nt_xent(a: Tensor, b: Tensor, tau: float) -> Tensor:
    """SimCLR's NT-Xent: a[i] and b[i] are two views of one image, every other row of the
    2N batch is a negative."""
    f = F.normalize(at_least_fp32(torch.cat([a, b])), dim=1)
    n = a.shape[0]
    sim = f @ f.t() / tau
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=sim.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(sim.device)
    return F.cross_entropy(sim, target)


def binary_entropy(m: Tensor, eps: float = 1e-6) -> Tensor:
    """Elementwise -m log m - (1 - m) log(1 - m): pushes soft masks towards 0 or 1."""
    m = at_least_fp32(m).clamp(eps, 1 - eps)
    return -(m * m.log() + (1 - m) * (1 - m).log())


def bce(logits: Tensor, target: float | Tensor, reduction: str = "mean") -> Tensor:
    """Binary cross-entropy on logits, in fp32; ``target`` may be a number."""
    if not torch.is_tensor(target):
        target = torch.full_like(logits, float(target))
    return F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction=reduction)


def background_real_terms(Dbg, batch: dict, step: int, thresh: float, warmup: int,
                          full: Tensor | None = None, labels=None,
                          aux_sets: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """The real side of FineGAN's background patch discriminator (also OneGAN's): real
    patches count only where they are background (outside the real or pseudo box), rescaled
    by N / sum(w); the aux head learns background (1) vs object (0) patches.

    Small images leave few background patches (2-12% at 32-64 px), and a patch D trained on
    so few real patches stalls the background generator at a flat colour. ``warmup`` starts
    from every patch counting as real and fades to the box labels. With ``data.bg_crops`` the batch also holds a
    box-outside crop per image (``bg_crop``, ``bg_crop_ok``): all its patches count as real
    background for both heads. ``full`` replaces the batch's full view, and ``labels(n)``, when
    given, makes the patch labels for an n x n map (FineGAN: from the box coordinates).
    The aux term is the BCE averaged over all patches (FineGAN's code); ``aux_sets``: the mean
    over the background patches plus the mean over the object patches (OneGAN's eq. 10, two
    expectations, one per set). Returns (bg_real, bg_aux, w)."""
    r_adv, r_aux = Dbg(batch.get("full", batch["image"]) if full is None else full)
    if labels is not None:
        w = labels(r_adv.shape[-1]).to(r_adv.dtype)
    elif "fg" in batch:
        w = Dbg.patch_weights(batch["fg"], tuple(r_adv.shape[-2:]), thresh)
    else:  # box_mode none: every patch counts as background
        w = torch.ones_like(r_adv)
    a = max(1.0 - step / warmup, 0.0) if warmup > 0 else 0.0
    w_adv = w + (1.0 - w) * a if a > 0 else w
    real, n_real = (bce(r_adv, 1.0, "none") * w_adv).sum(), w_adv.sum()
    if "bg_crop" not in batch:
        return real / n_real.clamp(min=1.0), (_aux_sets(r_aux, w) if aux_sets else bce(r_aux, w)), w
    # data.bg_crops: box-outside crops, every patch of them real background (OneGAN's set)
    ok = batch["bg_crop_ok"].float().view(-1, 1, 1, 1)
    c_adv, c_aux = Dbg(batch["bg_crop"])
    wc = ok.expand_as(c_adv)
    real, n_real = real + (bce(c_adv, 1.0, "none") * wc).sum(), n_real + wc.sum()
    if aux_sets:
        return real / n_real.clamp(min=1.0), _aux_sets(r_aux, w, c_aux, wc), w
    aux = bce(r_aux, w, "none").sum() + (bce(c_aux, 1.0, "none") * wc).sum()
    return real / n_real.clamp(min=1.0), aux / (w.numel() + wc.sum()), w


def _aux_sets(r_aux: Tensor, w: Tensor, c_aux: Tensor | None = None, wc: Tensor | None = None) -> Tensor:
    """-(mean over background patches of log D + mean over object patches of log(1 - D)):
    the photos' patches by their labels ``w`` (1 background), and crop patches (weights
    ``wc``) as background."""
    bg, n_bg = (bce(r_aux, 1.0, "none") * w).sum(), w.sum()
    if c_aux is not None:
        bg, n_bg = bg + (bce(c_aux, 1.0, "none") * wc).sum(), n_bg + wc.sum()
    obj, n_obj = (bce(r_aux, 0.0, "none") * (1.0 - w)).sum(), (1.0 - w).sum()
    return bg / n_bg.clamp(min=1.0) + obj / n_obj.clamp(min=1.0)
