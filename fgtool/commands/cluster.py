"""``fgtool cluster``: cluster real photos by a model's features (or its centroids) into a JSON and contact sheets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import checkpoint as ckpt
from ..backends.base import CentroidClusterer
from ..data.evalset import batches, eval_set
from ..errors import FgtoolError
from ..io.paths import check_output
from ..io.sheets import cluster_sheet_paths, write_cluster_sheets
from ..loading import Loaded, load
from .options import Progress, check_count, check_seed


@torch.no_grad()
def features(m: Loaded, data: str, split: str | None = None, max_images: int = 0, workers: int = 2,
             progress: Progress = None) -> tuple[Any, dict[str, np.ndarray]]:
    m.backend.require("cluster")
    imageset, ds = eval_set(m, data, split, max_images)
    feats: dict[str, list] = {}
    done = 0
    direct = isinstance(m.backend, CentroidClusterer)
    for batch in batches(ds, workers=workers):
        x = batch["image"].to(m.device)
        with m.autocast():
            fb = m.backend.cluster_features(m.nets, x)
        fb = {k: v.float() for k, v in fb.items()}  # assignments compare features in fp32
        for k, v in fb.items():
            feats.setdefault(k, []).append(v.cpu().numpy())
        if direct:  # models with centroids (C3-GAN) assign images themselves
            idx, conf = m.backend.assign(m.nets, x, fb)
            feats.setdefault("_assign", []).append(idx.cpu().numpy())
            feats.setdefault("_conf", []).append(conf.float().cpu().numpy())
        done += x.shape[0]
        if progress:
            progress("features", done, len(ds))
    return imageset, {k: np.concatenate(v) for k, v in feats.items()}


def _select(feats: dict[str, np.ndarray], which: str) -> np.ndarray:
    names = sorted(k for k in feats if not k.startswith("_"))
    if which == "all":
        return np.concatenate([feats[k] for k in names], axis=1)
    if which not in names:
        raise FgtoolError(f"--features {which}: this model has {', '.join(['all', *names])}")
    return feats[which]


def _predict(m: Loaded, feats: dict[str, np.ndarray], k: int | None, features_: str, seed: int,
             n_classes: int = 0):
    """Cluster ids, per-image confidences (or None) and a description of the method.

    A model with centroids assigns each image to its most similar centroid; ``k`` then
    groups the K over-clusters into k by k-means on the centroids (weighted by their
    sizes). Other models (or ``--features`` naming a feature group) run k-means with ``k``
    (default: the model's number of fine classes).
    """
    from ..metrics.clustering import kmeans

    if "_assign" in feats and features_ == "all":
        pred, conf = feats["_assign"].astype(np.int64), feats["_conf"]
        kk = m.backend.n_clusters()
        how = {"method": "centroids", "k_model": kk, "overcluster": int(getattr(m.cfg.model_cfg, "overcluster", 1))}
        if k is not None and k != kk:
            used = np.unique(pred)
            if not 1 <= k <= len(used):
                raise FgtoolError(f"--k must be between 1 and the {len(used)} clusters in use, got {k}")
            with torch.no_grad():
                cents = m.backend.centroids(m.nets).cpu().numpy()[used]
            from sklearn.cluster import KMeans

            counts = np.bincount(pred, minlength=kk)[used]
            group = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(cents, sample_weight=counts).labels_
            remap = np.zeros(kk, dtype=np.int64)
            remap[used] = group
            pred = remap[pred]
            how = {"method": f"centroids grouped into {k} by k-means", "k_model": kk}
            kk = k
        return pred, conf, kk, how
    X = _select(feats, features_)
    # default k: the model's own cluster count, else the data's classes (folder names)
    kk = k if k is not None else (m.backend.n_clusters() or n_classes)
    if not kk:
        raise FgtoolError("pass --k (neither the model nor the data says how many classes there are)")
    if kk < 1 or kk > len(X):
        if k is None:  # the default, not the user's number: say where it came from
            raise FgtoolError(f"{len(X)} images are too few for the model's {kk} clusters: give more images, "
                              "or a smaller --k")
        raise FgtoolError(f"--k must be between 1 and the number of images ({len(X)}), got {kk}")
    return kmeans(X, kk, seed=seed), None, kk, {"method": "k-means", "features": features_}


def _labels(imageset, label: str) -> np.ndarray | None:
    attr = {"class": "label", "child": "label", "parent": "parent", "bg": "bg"}.get(label)
    if attr is None:
        raise FgtoolError(f"--label must be class, parent or bg, got {label!r}")
    y = np.array([getattr(r, attr) for r in imageset.records])
    return None if (y < 0).all() else y


def cluster(ckpt_path: str, data: str, out: str, k: int | None = None, features_: str = "all",
            split: str | None = None, max_images: int = 0, label: str = "class", seed: int = 0,
            sheets: bool = True, workers: int = 2, progress: Progress = None) -> dict:
    from ..metrics.clustering import cluster_metrics

    check_count(k, "--k")
    check_count(max_images, "--max-images", 0)
    check_seed(seed)
    _cluster_outputs(out, [data, ckpt_path], sheets)
    m = load(ckpt_path)
    imageset, feats = features(m, data, split, max_images, workers, progress)
    pred, conf, kk, how = _predict(m, feats, k, features_, seed, n_classes=len(imageset.classes) or 10)
    result = _write_clusters(imageset, pred, out, kk, extra={"checkpoint": str(ckpt_path), **how},
                             sheets=sheets, conf=conf)
    y = _labels(imageset, label)
    if y is not None:
        result["metrics"] = cluster_metrics(y[y >= 0], pred[y >= 0], overcluster=how.get("overcluster"))
        result["metrics"]["label"] = label
    return result


def _cluster_outputs(out, inputs: list, sheets: bool = True) -> None:
    check_output(out, inputs, suffix=".json")
    if sheets:
        sheet_dir, overview = cluster_sheet_paths(out)
        check_output(sheet_dir, inputs, folder=True, holds=False)
        check_output(overview, inputs)


def _write_clusters(imageset, pred: np.ndarray, out: str, k: int, extra: dict, sheets: bool = True,
                    conf: np.ndarray | None = None) -> dict:
    outp = Path(out)
    items = []
    for i, (r, c) in enumerate(zip(imageset.records, pred.tolist())):
        it = {"path": str(r.path), "cluster": int(c), "label": int(r.label)}
        if conf is not None:
            it["confidence"] = round(float(conf[i]), 4)
        if r.label >= 0 and imageset.classes:
            it["class"] = imageset.classes[r.label]
        items.append(it)
    doc = {"k": int(k), "n": len(items), "data": str(imageset.root), **extra, "items": items}
    ckpt.atomic_write_text(outp, json.dumps(doc, indent=1) + "\n")
    result = {"clusters": str(outp), "k": int(k), "n": len(items)}
    if sheets:
        sheet_dir, overview = write_cluster_sheets(imageset, pred, k, conf, outp)
        result["overview"] = str(overview)
        result["sheets"] = str(sheet_dir)
    return result
