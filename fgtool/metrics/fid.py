"""FID and KID from InceptionV3 pool features.

Weights come from a LOCAL torchvision ``inception_v3`` state dict (``--inception-weights``
or ``FGTOOL_INCEPTION_WEIGHTS``); nothing is ever downloaded. Note that torchvision's
ImageNet Inception is not the TF "pt_inception-2015-12-05" network used by most papers,
so absolute numbers are comparable between fgtool runs, not with published tables.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from fgtool.errors import FgtoolError

WEIGHTS_ENV = "FGTOOL_INCEPTION_WEIGHTS"
_MISSING_WEIGHTS_MSG = (
    "FID/KID need InceptionV3 weights: pass --inception-weights FILE or set "
    "FGTOOL_INCEPTION_WEIGHTS (a torchvision inception_v3 state dict)"
)
# torchvision's Inception expects ImageNet-normalised input when transform_input=False
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


# ----------------------------------------------------------------------------- math


def feature_stats(feats) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and covariance [D, D] (float64, unbiased) of features [N, D]."""
    x = np.asarray(feats, dtype=np.float64)
    if x.ndim != 2:
        raise FgtoolError(f"features must be [N, D], got shape {tuple(x.shape)}")
    if len(x) < 2:
        raise FgtoolError(f"FID needs at least 2 feature vectors per set, got {len(x)}")
    return x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def _sqrtm_real(a: np.ndarray) -> tuple[np.ndarray, bool]:
    import warnings

    from scipy.linalg import LinAlgWarning, sqrtm

    with warnings.catch_warnings():
        # singular products are expected (few samples, dead features); handled by the caller
        warnings.simplefilter("ignore", LinAlgWarning)
        s = sqrtm(a)
    ok = bool(np.isfinite(s).all())
    if ok and np.iscomplexobj(s):
        # tiny imaginary parts are numerical noise on a PSD product; large ones mean trouble
        ok = bool(np.allclose(np.diagonal(s).imag, 0, atol=1e-3))
        s = s.real
    return np.asarray(s, dtype=np.float64), ok


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """||mu1-mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2}), in float64.

    As in the reference implementation, if the matrix square root of S1 S2 is singular /
    not finite (or has a large imaginary part) both covariances get ``eps * I`` added and
    it is recomputed; a remaining small imaginary component is discarded.
    """
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    s1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    s2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise FgtoolError(
            f"Frechet distance shape mismatch: mu {mu1.shape} vs {mu2.shape}, sigma {s1.shape} vs {s2.shape}"
        )
    diff = mu1 - mu2
    covmean, ok = _sqrtm_real(s1 @ s2)
    if not ok:
        offset = np.eye(s1.shape[0]) * eps
        covmean, _ = _sqrtm_real((s1 + offset) @ (s2 + offset))
    val = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))
    # the true value is >= 0; rounding on near-identical sets can dip just below
    return max(val, 0.0)


def fid_from_features(f1, f2) -> float:
    """FID between two feature sets [N1, D] and [N2, D]."""
    mu1, s1 = feature_stats(f1)
    mu2, s2 = feature_stats(f2)
    return frechet_distance(mu1, s1, mu2, s2)


def kid_from_features(
    f1, f2, n_subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """KID: unbiased MMD^2 with the cubic kernel k(x,y) = (x.y/d + 1)^3, averaged over
    random subsets (drawn without replacement). Returns (mean, std) over subsets.
    ``subset_size`` is clipped to the smaller set size."""
    x = np.asarray(f1, dtype=np.float64)
    y = np.asarray(f2, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise FgtoolError(f"KID needs two [N, D] feature sets with equal D, got {x.shape} and {y.shape}")
    m = min(int(subset_size), len(x), len(y))
    if m < 2:
        raise FgtoolError(f"KID needs at least 2 feature vectors per set, got {len(x)} and {len(y)}")
    if int(n_subsets) < 1:
        raise FgtoolError(f"KID n_subsets must be >= 1, got {n_subsets}")
    d = x.shape[1]
    rng = np.random.default_rng(seed)
    vals = np.empty(int(n_subsets))
    for i in range(int(n_subsets)):
        a = x[rng.choice(len(x), m, replace=False)]
        b = y[rng.choice(len(y), m, replace=False)]
        kxx = (a @ a.T / d + 1) ** 3
        kyy = (b @ b.T / d + 1) ** 3
        kxy = (a @ b.T / d + 1) ** 3
        # unbiased: drop the diagonal of the within-set kernels
        within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        vals[i] = within - 2.0 * kxy.sum() / (m * m)
    return float(vals.mean()), float(vals.std())


# ----------------------------------------------------------------------------- weights


def resolve_inception_weights(path: str | os.PathLike | None) -> Path:
    """The weights file from ``path``, else ``$FGTOOL_INCEPTION_WEIGHTS``; must exist.
    (Whether it is a valid state dict is checked when it is loaded.)"""
    chosen = path if path not in (None, "") else os.environ.get(WEIGHTS_ENV) or None
    if chosen is None:
        raise FgtoolError(_MISSING_WEIGHTS_MSG)
    p = Path(chosen).expanduser()
    if not p.is_file():
        raise FgtoolError(f"InceptionV3 weights file not found: {p}")
    return p


def _load_state_dict(path: Path) -> dict:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle/zip errors come in many types
        raise FgtoolError(f"cannot load InceptionV3 weights from {path}: {type(e).__name__}: {e}") from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise FgtoolError(f"{path} is not a torchvision inception_v3 state dict")
    # checkpoints saved from DataParallel/DDP prefix every key with "module."
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


class InceptionFeatures(nn.Module):
    """torchvision InceptionV3 up to the 2048-d average pool, from local weights.

    forward: images [N,3,H,W] (or [N,1,H,W]) in [-1,1] -> features [N,2048] float32.
    """

    def __init__(self, weights: str | os.PathLike | None = None):
        super().__init__()
        from torchvision.models import inception_v3

        path = resolve_inception_weights(weights)
        state = _load_state_dict(path)
        net = inception_v3(weights=None, aux_logits=True, init_weights=False)
        try:
            missing, unexpected = net.load_state_dict(state, strict=False)
        except RuntimeError as e:  # size mismatches raise even with strict=False
            first = str(e).strip().splitlines()
            raise FgtoolError(
                f"{path} does not match torchvision inception_v3: {first[-1] if first else e}"
            ) from None
        # AuxLogits is unused at eval time and fc is dropped below, so both may be absent
        tolerated = ("AuxLogits.", "fc.")
        missing = [k for k in missing if not k.startswith(tolerated)]
        unexpected = [k for k in unexpected if not k.startswith("AuxLogits.")]
        if missing or unexpected:
            bad = (missing or unexpected)[:3]
            what = "missing" if missing else "unexpected"
            raise FgtoolError(
                f"{path} is not a torchvision inception_v3 state dict ({what} keys e.g. {', '.join(bad)})"
            )
        net.fc = nn.Identity()
        self.net = net
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.eval()
        self.requires_grad_(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise FgtoolError(f"Inception expects images [N,3,H,W], got {tuple(images.shape)}")
        x = images.float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-2:] != (299, 299):
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = ((x + 1) / 2 - self.mean) / self.std
        out = self.net(x)
        if not isinstance(out, torch.Tensor):  # InceptionOutputs if someone put it in train mode
            out = out[0]
        return out.float()


# ----------------------------------------------------------------------------- pipeline


def _batches(images_iter, batch_size: int):
    if isinstance(images_iter, torch.Tensor):
        images_iter = (images_iter,)
    for batch in images_iter:
        if isinstance(batch, (list, tuple)):  # (images, labels) from a DataLoader
            batch = batch[0]
        if not isinstance(batch, torch.Tensor):
            batch = torch.as_tensor(np.asarray(batch))
        if batch.ndim == 3:
            batch = batch[None]
        for start in range(0, len(batch), batch_size):
            yield batch[start : start + batch_size]


@torch.no_grad()
def extract_features(
    model: nn.Module, images_iter: Iterable, device="cpu", batch_size: int = 50
) -> np.ndarray:
    """Run ``model`` over batches of images in [-1,1] and stack the [B, D] outputs.

    ``images_iter`` yields float tensors [B,3,H,W] (or (images, ...) tuples); a single
    tensor [N,3,H,W] works too. Batches are re-chunked to ``batch_size``. The model is
    put in eval mode for the pass and its previous mode restored afterwards.
    """
    if int(batch_size) < 1:
        raise FgtoolError(f"batch_size must be >= 1, got {batch_size}")
    was_training = model.training
    model.eval()
    feats = []
    try:
        for batch in _batches(images_iter, int(batch_size)):
            if batch.ndim != 4:
                raise FgtoolError(f"image batches must be [B,C,H,W], got {tuple(batch.shape)}")
            batch = batch.to(device=device, dtype=torch.float32)
            # catches the common mistake of feeding 0..255 images instead of [-1,1]
            if batch.numel() and (batch.min() < -1.5 or batch.max() > 1.5):
                raise FgtoolError(
                    f"images for FID/KID must be in [-1,1], got range [{batch.min():.3g}, {batch.max():.3g}]"
                )
            out = model(batch)
            if not isinstance(out, torch.Tensor):
                out = out[0]
            feats.append(out.reshape(len(batch), -1).double().cpu().numpy())
    finally:
        model.train(was_training)
    if not feats:
        raise FgtoolError("no images to compute features from")
    return np.concatenate(feats, axis=0)


def fid_kid(
    real_iter,
    fake_iter,
    model: nn.Module,
    device="cpu",
    batch_size: int = 50,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
) -> dict:
    """``{"fid", "kid", "kid_std", "n_real", "n_fake"}`` between two image streams."""
    fr = extract_features(model, real_iter, device=device, batch_size=batch_size)
    ff = extract_features(model, fake_iter, device=device, batch_size=batch_size)
    kid, kid_std = kid_from_features(fr, ff, n_subsets=kid_subsets, subset_size=kid_subset_size, seed=seed)
    return {
        "fid": fid_from_features(fr, ff),
        "kid": kid,
        "kid_std": kid_std,
        "n_real": int(len(fr)),
        "n_fake": int(len(ff)),
    }
