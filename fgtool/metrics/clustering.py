"""Clustering metrics for unsupervised fine-grained discovery (NMI, ACC, ARI) and the
pixel k-means floor that every method should beat.

Labels and predictions may be any hashable values (non-contiguous ints, strings): they
are mapped to contiguous ints internally, so only the partition matters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from fgtool.errors import FgtoolError

NMI_VARIANTS = ("arithmetic", "max")
METRIC_NAMES = ("nmi", "nmi_max", "acc", "ari")


def _to_index(values, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim > 1 and arr.size == max(arr.shape):
        arr = arr.reshape(-1)  # column/row vectors [N,1] are fine
    if arr.ndim != 1:
        raise FgtoolError(f"{name} must be a 1-D sequence of labels, got shape {tuple(arr.shape)}")
    # np.unique sorts, so the mapping is deterministic; strings and ints both work
    _, idx = np.unique(arr, return_inverse=True)
    return idx.reshape(-1).astype(np.int64)


def _pair(labels, pred) -> tuple[np.ndarray, np.ndarray]:
    y = _to_index(labels, "labels")
    p = _to_index(pred, "pred")
    if len(y) == 0:
        raise FgtoolError("clustering metrics need at least one sample, got an empty label list")
    if len(y) != len(p):
        raise FgtoolError(f"labels and pred differ in length: {len(y)} vs {len(p)}")
    return y, p


def _contingency(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Counts [n_classes, n_clusters]."""
    c = np.zeros((y.max() + 1, p.max() + 1), dtype=np.int64)
    np.add.at(c, (y, p), 1)
    return c


def nmi(labels, pred, variant: str = "arithmetic") -> float:
    """Normalised mutual information (sklearn's ``normalized_mutual_info_score``).

    variant="arithmetic": MI / mean(H(labels), H(pred)), sklearn's default.
    variant="max": MI / max(H(labels), H(pred)), as C3-GAN reports it.
    A single cluster on one side gives 0.0; a single cluster on both sides gives 1.0.
    """
    from sklearn.metrics import normalized_mutual_info_score

    if variant not in NMI_VARIANTS:
        raise FgtoolError(f"unknown NMI variant {variant!r}; choose one of {', '.join(NMI_VARIANTS)}")
    y, p = _pair(labels, pred)
    return float(normalized_mutual_info_score(y, p, average_method=variant))


def acc(labels, pred, overcluster: int | None = None) -> float:
    """Clustering accuracy under the best cluster->class assignment (Hungarian).

    With K clusters > C classes each class is repeated ``overcluster`` times in the cost
    matrix (default ceil(K / C)), so up to that many clusters can map to one class, as in
    C3-GAN's over-clustering evaluation. With K <= C (or overcluster=1) it is the usual
    one-to-one matching; unmatched clusters count as wrong.
    """
    from scipy.optimize import linear_sum_assignment

    y, p = _pair(labels, pred)
    c = _contingency(y, p)
    n_classes, n_clusters = c.shape
    if overcluster is not None and int(overcluster) < 1:
        raise FgtoolError(f"overcluster must be >= 1, got {overcluster}")
    if n_clusters > n_classes:
        reps = math.ceil(n_clusters / n_classes) if overcluster is None else int(overcluster)
    else:
        reps = 1
    if reps > 1:
        c = np.repeat(c, reps, axis=0)
    rows, cols = linear_sum_assignment(c, maximize=True)
    return float(c[rows, cols].sum() / len(y))


def ari(labels, pred) -> float:
    """Adjusted Rand index (sklearn)."""
    from sklearn.metrics import adjusted_rand_score

    y, p = _pair(labels, pred)
    return float(adjusted_rand_score(y, p))


def cluster_metrics(
    labels,
    pred,
    metrics: Sequence[str] = ("nmi", "acc", "ari"),
    overcluster: int | None = None,
) -> dict:
    """Several clustering metrics at once.

    "nmi" yields both ``nmi`` (arithmetic) and ``nmi_max`` (C3-GAN's); "nmi_max" alone
    yields only the latter. Always includes ``n``, ``k_pred`` and ``k_true``.
    """
    if isinstance(metrics, str):
        metrics = (metrics,)
    unknown = [m for m in metrics if m not in METRIC_NAMES]
    if unknown:
        raise FgtoolError(
            f"unknown clustering metric(s) {', '.join(unknown)}; choose from {', '.join(METRIC_NAMES)}"
        )
    y, p = _pair(labels, pred)
    out: dict = {}
    for m in metrics:
        if m == "nmi":
            out["nmi"] = nmi(y, p, "arithmetic")
            out["nmi_max"] = nmi(y, p, "max")
        elif m == "nmi_max":
            out["nmi_max"] = nmi(y, p, "max")
        elif m == "acc":
            out["acc"] = acc(y, p, overcluster=overcluster)
        elif m == "ari":
            out["ari"] = ari(y, p)
    out["n"] = int(len(y))
    out["k_pred"] = int(p.max() + 1)
    out["k_true"] = int(y.max() + 1)
    return out


def kmeans(features, k: int, seed: int = 0, n_init: int = 10, normalize: bool = False) -> np.ndarray:
    """k-means labels [N] for features [N, D]. ``normalize`` L2-normalises rows first
    (cosine-like clustering, common for deep features)."""
    from sklearn.cluster import KMeans

    x = np.asarray(features, dtype=np.float64)
    if x.ndim > 2:
        x = x.reshape(len(x), -1)
    if x.ndim != 2 or len(x) == 0:
        raise FgtoolError(
            f"kmeans needs a non-empty [N, D] feature array, got shape {tuple(np.shape(features))}"
        )
    k = int(k)
    if not 1 <= k <= len(x):
        raise FgtoolError(f"kmeans k must be between 1 and the number of samples ({len(x)}), got {k}")
    if not np.isfinite(x).all():
        raise FgtoolError("kmeans features contain NaN or inf")
    if normalize:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    km = KMeans(n_clusters=k, n_init=n_init, random_state=seed)
    return km.fit_predict(x).astype(np.int64)


def _images_to_float_nhwc(images) -> np.ndarray:
    import torch

    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    x = np.asarray(images)
    if x.ndim == 3:  # grayscale [N,H,W]
        x = x[..., None]
    if x.ndim != 4:
        raise FgtoolError(f"images must be [N,H,W,C] (or [N,C,H,W]), got shape {tuple(x.shape)}")
    if x.shape[-1] not in (1, 3) and x.shape[1] in (1, 3):
        x = x.transpose(0, 2, 3, 1)  # channels-first tensors
    # uint8 -> [0,1]; float scale is irrelevant to k-means up to a global factor
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)


def pixel_kmeans_floor(images, labels, k: int, size: int = 32, seed: int = 0, **metric_kw) -> dict:
    """Baseline: k-means on raw pixels resized to ``size`` x ``size``, scored against labels.

    images: uint8 [N,H,W,3] or float array/tensor. Resizing is bilinear with antialiasing.
    Extra keywords go to :func:`cluster_metrics` (e.g. ``overcluster``).
    """
    import torch
    import torch.nn.functional as F

    x = _images_to_float_nhwc(images)
    if len(x) != len(np.asarray(labels).reshape(-1)):
        raise FgtoolError(
            f"images and labels differ in length: {len(x)} vs {len(np.asarray(labels).reshape(-1))}"
        )
    if x.shape[1:3] != (size, size):
        t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        x = t.numpy().transpose(0, 2, 3, 1)
    pred = kmeans(x.reshape(len(x), -1), k, seed=seed)
    return cluster_metrics(labels, pred, **metric_kw)
