"""FID, KID and Inception Score on the standard Inception network of the GAN literature.

The feature network is torch-fidelity's ``inception-v3-compat``: the layers, the resize to
299 px and the 8-bit input of the TensorFlow Inception graph of 2015-12-05, with its 2048-d
pool features (FID, KID) and its 1008-way logits (IS). Its weights are read from a LOCAL
file, ``pt_inception-2015-12-05-6726825d.pth`` (``--inception-weights`` or
``FGTOOL_INCEPTION_WEIGHTS``); nothing is ever downloaded. The statistics are
torch-fidelity's too: FID from the features' means and covariances, KID the unbiased MMD^2
with the kernel (x.y/d + 1)^3 over 100 random subsets of up to 1000, IS exp(E KL(p(y|x) ||
p(y))) on the logits without their bias over 10 splits, subsets and splits drawn with its
default seed. Generated images are rounded to 8 bits first, as saving them as PNG would.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from fgtool.errors import FgtoolError

WEIGHTS_ENV = "FGTOOL_INCEPTION_WEIGHTS"
WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{WEIGHTS_FILE}"
WEIGHTS_HINT = f"download {WEIGHTS_URL} and pass --inception-weights FILE or set {WEIGHTS_ENV}=FILE"
_MISSING_WEIGHTS_MSG = f"fid, kid and is need the Inception weights {WEIGHTS_FILE}: {WEIGHTS_HINT}"
RNG_SEED = 2020  # torch-fidelity's seed for KID subsets and IS splits: its numbers for the same features
IS_SPLITS = 10


# ----------------------------------------------------------------------------- math


def _features(feats, what: str = "FID") -> np.ndarray:
    x = np.asarray(feats, dtype=np.float64)
    if x.ndim != 2:
        raise FgtoolError(f"features must be [N, D], got shape {tuple(x.shape)}")
    if len(x) < 2:
        raise FgtoolError(f"{what} needs at least 2 feature vectors per set, got {len(x)}")
    return x


def feature_stats(feats) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and covariance [D, D] (float64, unbiased) of features [N, D]."""
    from torch_fidelity.metric_fid import fid_features_to_statistics

    x = _features(feats)
    st = fid_features_to_statistics(torch.from_numpy(x))
    return st["mu"], np.asarray(st["sigma"]).reshape(x.shape[1], x.shape[1])


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1-mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2}) in float64, by torch-fidelity (the trace
    of the root as the sum of the square roots of the eigenvalues of S1 S2). Rounding can put
    the value of two near-identical sets a hair below 0; it is reported as 0."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    s1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    s2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise FgtoolError(
            f"Frechet distance shape mismatch: mu {mu1.shape} vs {mu2.shape}, sigma {s1.shape} vs {s2.shape}"
        )
    val = fid_statistics_to_metric({"mu": mu1, "sigma": s1}, {"mu": mu2, "sigma": s2}, verbose=False)
    return max(float(val[KEY_METRIC_FID]), 0.0)


def fid_from_features(f1, f2) -> float:
    """FID between two feature sets [N1, D] and [N2, D]."""
    mu1, s1 = feature_stats(f1)
    mu2, s2 = feature_stats(f2)
    return frechet_distance(mu1, s1, mu2, s2)


def kid_from_features(f1, f2, n_subsets: int = 100, subset_size: int = 1000, seed: int = RNG_SEED
                      ) -> tuple[float, float]:
    """KID (mean, std over subsets) by torch-fidelity: the unbiased MMD^2 with the kernel
    (x.y/d + 1)^3 on ``n_subsets`` pairs of random subsets drawn without replacement.
    ``subset_size`` is clipped to the smaller set."""
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    x = _features(f1, "KID")
    y = _features(f2, "KID")
    if x.shape[1] != y.shape[1]:
        raise FgtoolError(f"KID needs two [N, D] feature sets with equal D, got {x.shape} and {y.shape}")
    if int(n_subsets) < 1:
        raise FgtoolError(f"KID n_subsets must be >= 1, got {n_subsets}")
    m = min(int(subset_size), len(x), len(y))
    if m < 2:
        raise FgtoolError(f"KID subsets need at least 2 feature vectors, got subset size {subset_size}")
    out = kid_features_to_metric(torch.from_numpy(x), torch.from_numpy(y), kid_subsets=int(n_subsets),
                                 kid_subset_size=m, rng_seed=int(seed), verbose=False)
    return float(out[KEY_METRIC_KID_MEAN]), float(out[KEY_METRIC_KID_STD])


def inception_score(logits, splits: int = IS_SPLITS, seed: int = RNG_SEED) -> tuple[float, float]:
    """IS (mean, std over ``splits``) by torch-fidelity from class logits [N, C]: the samples
    are shuffled with ``seed``, cut into ``splits`` parts, and each part scores
    exp(mean KL(softmax(logits) || its mean softmax))."""
    from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric

    x = _features(logits, "IS")
    if len(x) < int(splits):
        raise FgtoolError(f"IS needs at least {splits} images ({splits} splits), got {len(x)}")
    out = isc_features_to_metric(torch.from_numpy(x), splits=int(splits), shuffle=True, rng_seed=int(seed))
    return float(out[KEY_METRIC_ISC_MEAN]), float(out[KEY_METRIC_ISC_STD])


# ----------------------------------------------------------------------------- weights


def resolve_inception_weights(path: str | os.PathLike | None) -> Path:
    """The weights file from ``path``, else ``$FGTOOL_INCEPTION_WEIGHTS``; must exist.
    (Whether it holds the right network is checked when it is loaded.)"""
    chosen = path if path not in (None, "") else os.environ.get(WEIGHTS_ENV) or None
    if chosen is None:
        raise FgtoolError(_MISSING_WEIGHTS_MSG)
    p = Path(chosen).expanduser()
    if not p.is_file():
        raise FgtoolError(f"Inception weights file not found: {p} ({WEIGHTS_HINT})")
    return p


def _wrong_file(path: Path, why: str) -> FgtoolError:
    return FgtoolError(f"{path} is not {WEIGHTS_FILE} ({why}); {WEIGHTS_HINT}")


def _check_state_dict(path: Path) -> None:
    """Refuses anything but a plain dict of tensors, read without running pickled code;
    only then does torch-fidelity load the file."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle/zip errors come in many types
        raise _wrong_file(path, f"cannot load it: {type(e).__name__}: {' '.join(str(e).split())[:200]}") from None
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise _wrong_file(path, "not a state dict of tensors")


class InceptionFeatures(nn.Module):
    """The 2015-12-05 Inception from local weights (see the module docs).

    forward: images [N,3,H,W] (or [N,1,H,W]) in [-1,1] -> (pool [N,2048], logits [N,1008]) float32.
    """

    def __init__(self, weights: str | os.PathLike | None = None):
        super().__init__()
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        path = resolve_inception_weights(weights)
        _check_state_dict(path)
        try:
            self.net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                                   feature_extractor_weights_path=str(path))
        except RuntimeError as e:  # missing, unexpected or differently shaped tensors
            lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
            raise _wrong_file(path, (lines[1] if len(lines) > 1 else str(e))[:200]) from None
        self.eval()
        self.requires_grad_(False)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise FgtoolError(f"Inception expects images [N,3,H,W], got {tuple(images.shape)}")
        x = images.float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        pool, logits = self.net(x)
        return pool.float(), logits.float()


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
def extract_features(model: nn.Module, images_iter: Iterable, device="cpu", batch_size: int = 50
                     ) -> dict[str, np.ndarray]:
    """Run ``model`` over batches of images in [-1,1]: ``{"pool": [N, D]}``, plus
    ``"logits": [N, C]`` when the model returns (pool, logits).

    ``images_iter`` yields float tensors [B,3,H,W] (or (images, ...) tuples); a single
    tensor [N,3,H,W] works too. Batches are re-chunked to ``batch_size``. The model is
    put in eval mode for the pass and its previous mode restored afterwards.
    """
    if int(batch_size) < 1:
        raise FgtoolError(f"batch_size must be >= 1, got {batch_size}")
    was_training = model.training
    model.eval()
    feats: dict[str, list] = {}
    try:
        for batch in _batches(images_iter, int(batch_size)):
            if batch.ndim != 4:
                raise FgtoolError(f"image batches must be [B,C,H,W], got {tuple(batch.shape)}")
            batch = batch.to(device=device, dtype=torch.float32)
            # catches the common mistake of feeding 0..255 images instead of [-1,1]
            if batch.numel() and (batch.min() < -1.5 or batch.max() > 1.5):
                raise FgtoolError(
                    f"images for FID/KID/IS must be in [-1,1], got range [{batch.min():.3g}, {batch.max():.3g}]"
                )
            out = model(batch)
            outs = (out,) if isinstance(out, torch.Tensor) else tuple(out)
            for name, o in zip(("pool", "logits"), outs):
                feats.setdefault(name, []).append(o.reshape(len(batch), -1).double().cpu().numpy())
    finally:
        model.train(was_training)
    if not feats:
        raise FgtoolError("no images to compute features from")
    return {name: np.concatenate(v, axis=0) for name, v in feats.items()}


def generation_metrics(real_iter, fake_iter, model: nn.Module, metrics=("fid", "kid"), device="cpu",
                       batch_size: int = 50, kid_subsets: int = 100, kid_subset_size: int = 1000) -> dict:
    """The ``metrics`` asked for ("fid", "kid", "is") of generated images ``fake_iter`` against
    real ones ``real_iter`` (IS alone needs no real images; pass None): ``fid``, ``kid`` and
    ``kid_std``, ``is`` and ``is_std``, with ``n_real`` and ``n_fake``."""
    bad = sorted(set(metrics) - {"fid", "kid", "is"})
    if bad or not metrics:
        raise FgtoolError(f"unknown generation metric {', '.join(bad) or '(none)'}; choose from fid, kid, is")
    out: dict = {}
    if {"fid", "kid"} & set(metrics):
        fr = extract_features(model, real_iter, device=device, batch_size=batch_size)["pool"]
        out["n_real"] = int(len(fr))
    ff = extract_features(model, fake_iter, device=device, batch_size=batch_size)
    out["n_fake"] = int(len(ff["pool"]))
    if "fid" in metrics:
        out["fid"] = fid_from_features(fr, ff["pool"])
    if "kid" in metrics:
        out["kid"], out["kid_std"] = kid_from_features(fr, ff["pool"], n_subsets=kid_subsets,
                                                       subset_size=kid_subset_size)
    if "is" in metrics:
        if "logits" not in ff:
            raise FgtoolError("is needs a feature network that returns class logits")
        out["is"], out["is_std"] = inception_score(ff["logits"])
    return out
