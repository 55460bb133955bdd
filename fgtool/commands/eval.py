"""``fgtool eval``: clustering, generation, segmentation, mixing, removal, part and landmark metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.evalset import batches, eval_set
from ..errors import FgtoolError
from ..loading import load, require_segmenter
from .cluster import _labels, _predict, features
from .options import Progress, check_count, check_seed
from .segment import _check_fill, _check_mask_options, _masks, _refined

CLUSTER_METRICS = {"nmi", "nmi_max", "acc", "ari"}

GEN_METRICS = {"fid", "kid", "is"}  # on the 2015-12-05 Inception (fgtool/metrics/fid.py)

SEG_METRICS = {"iou", "dice"}

MIX_METRICS = {"mix"}  # mix fidelity on the synthetic set (fgtool/metrics/mix.py)

REMOVAL_METRICS = {"removal"}  # object removal vs the true background, synthetic set (fgtool/metrics/removal.py)

PART_METRICS = {"parts"}  # part consistency in the object's canonical frame, synthetic set (fgtool/metrics/parts.py)

LANDMARK_METRICS = {"landmarks"}  # landmark regression error from part centres (fgtool/metrics/landmarks.py)

BASELINES = {"pixels": "k-means on 32 px pixels (nmi, acc, ari)",
             "centre": "a centred ellipse of the mean object area (iou, dice; fgtool/metrics/centre.py)"}


def evaluate(metrics: str, data: str, ckpt_path: str | None = None, pred: str | None = None,
             baseline: str | None = None, k: int | None = None, features_: str = "all", label: str = "class",
             split: str | None = None, max_images: int = 0, n_fake: int = 1000, inception: str | None = None,
             seed: int = 0, workers: int = 2, progress: Progress = None, refine: str = "none",
             tta: str = "none", fill: str = "gan", keypoints: str | None = None, eyes: str | None = None) -> dict:
    from ..metrics.clustering import cluster_metrics, pixel_kmeans_floor

    names = [x.strip().lower() for x in metrics.split(",") if x.strip()]
    known = CLUSTER_METRICS | GEN_METRICS | SEG_METRICS | MIX_METRICS | REMOVAL_METRICS | PART_METRICS \
        | LANDMARK_METRICS
    bad = [x for x in names if x not in known]
    if bad or not names:
        raise FgtoolError(f"unknown metric {', '.join(bad) or '(none)'}; choose from {', '.join(sorted(known))}")
    sources = [s for s in (ckpt_path, pred, baseline) if s]
    if len(sources) != 1:
        raise FgtoolError("pass exactly one of --ckpt, --pred or --baseline")
    if pred is not None:
        _check_pred(pred, names)
    if baseline is not None and baseline not in BASELINES:
        raise FgtoolError("--baseline must be " + " or ".join(f"'{b}' ({v})" for b, v in BASELINES.items()))
    check_count(k, "--k")
    check_count(max_images, "--max-images", 0)
    check_count(n_fake, "--n-fake", 1, 100_000)
    check_seed(seed)
    result: dict[str, Any] = {"data": str(data), "metrics": {}}
    overcluster = None
    cl = [x for x in names if x in CLUSTER_METRICS]
    if cl:
        if pred:
            from ..metrics.predictions import read_clusters

            imageset, y_pred = read_clusters(pred, data, split)
            result["source"] = str(pred)
        elif baseline:
            if baseline != "pixels":
                raise FgtoolError(f"--baseline {baseline} scores masks; clustering metrics take --baseline pixels")
            from ..data.datasets import drop_undecodable, scan

            imageset = drop_undecodable(scan(data, split=split, max_images=max_images))
            y = _labels(imageset, label)
            if y is None:
                raise FgtoolError(f"{data} has no labels to score against")
            imgs = _load_small(imageset, 32, progress)
            kk = k if k is not None else int(y.max() + 1)
            keep = y >= 0  # score only the labelled images, and only the metrics asked for
            result["metrics"] = pixel_kmeans_floor(imgs[keep], y[keep], kk, size=32, seed=seed, metrics=tuple(cl))
            result["source"] = "k-means on 32 px pixels"
            result["k"] = kk
            result["metrics"]["label"] = label
            return result
        else:
            m = load(ckpt_path)
            imageset, feats = features(m, data, split, max_images, workers, progress)
            y_pred, _, kk, how = _predict(m, feats, k, features_, seed, n_classes=len(imageset.classes))
            overcluster = how.get("overcluster")
            result.update(source=str(ckpt_path), k=int(kk), **how)
        y = _labels(imageset, label)
        if y is None:
            raise FgtoolError(f"{data} has no labels (folder names or image_class_labels.txt) to score against")
        keep = y >= 0
        scores = cluster_metrics(y[keep], y_pred[keep], metrics=tuple(cl), overcluster=overcluster)
        result["metrics"].update(scores)
        result["metrics"]["label"] = label
    gen = [x for x in names if x in GEN_METRICS]
    if gen:
        if not ckpt_path:
            raise FgtoolError("fid, kid and is need --ckpt (they score generated images)")
        result["metrics"].update(_generation(gen, ckpt_path, data, split, n_fake, inception, seed, workers))
    seg = [x for x in names if x in SEG_METRICS]
    if seg and baseline == "centre":
        from ..metrics.centre import centre_floor

        result["metrics"].update(centre_floor(data, split, max_images, progress))
        result["source"] = BASELINES["centre"]
    elif seg and pred:
        from ..metrics.predictions import mask_scores

        result["metrics"].update(mask_scores(pred, data, split, max_images, progress))
        result["source"] = str(pred)
    elif seg:
        if not ckpt_path:
            raise FgtoolError("iou/dice need --ckpt of a model that can segment, --pred with a folder of masks "
                              "or --baseline centre")
        result["metrics"].update(_seg_eval(ckpt_path, data, split, max_images, workers, refine, tta))
    if "mix" in names:
        if not ckpt_path:
            raise FgtoolError("mix needs --ckpt of a model that can mix")
        from ..metrics.mix import mix_fidelity

        result["metrics"].update(mix_fidelity(load(ckpt_path), data, n_pairs=n_fake, seed=seed, progress=progress))
    if "removal" in names:
        if not ckpt_path:
            raise FgtoolError("removal needs --ckpt of a model that can remove objects")
        from ..metrics.removal import removal_error

        _check_fill(fill)
        result["metrics"].update(removal_error(load(ckpt_path), data, split=split, max_images=max_images,
                                               workers=workers, fill=fill))
    if "parts" in names:
        if not ckpt_path:
            raise FgtoolError("parts needs --ckpt of a model with a part segmenter")
        from ..metrics.parts import part_consistency

        result["metrics"].update(part_consistency(load(ckpt_path), data, split=split, max_images=max_images,
                                                  workers=workers, progress=progress))
    if "landmarks" in names:
        if not ckpt_path:
            raise FgtoolError("landmarks needs --ckpt of a model with part centres")
        if split is not None:
            raise FgtoolError("landmarks fits on the train split and scores on the test split; drop --split")
        from ..metrics.landmarks import landmark_regression

        result["metrics"].update(landmark_regression(load(ckpt_path), data, keypoints=keypoints, eyes=eyes,
                                                     max_images=max_images, workers=workers, seed=seed,
                                                     progress=progress))
    return result


def _check_pred(pred: str, names: list[str]) -> None:
    """--pred is a clusters file for clustering metrics and a folder of masks for iou/dice."""
    p = Path(pred)
    if not p.exists():
        raise FgtoolError(f"predictions not found: {pred}")
    other = [x for x in names if x not in (SEG_METRICS if p.is_dir() else CLUSTER_METRICS)]
    if other and p.is_dir():
        raise FgtoolError(f"--pred {pred} is a folder of masks: it scores iou and dice, not {', '.join(other)}")
    if other:
        raise FgtoolError(f"--pred {pred} is a clusters file: it scores nmi, nmi_max, acc and ari, not "
                          f"{', '.join(other)} (iou and dice take a folder of mask PNGs)")


def _load_small(imageset, size: int, progress: Progress = None) -> np.ndarray:
    from ..io.images import load_image

    out = np.zeros((len(imageset.records), size, size, 3), np.uint8)
    for i, r in enumerate(imageset.records):
        out[i] = np.asarray(load_image(r.path).resize((size, size), resample=2))
        if progress and i % 200 == 0:
            progress("load", i, len(imageset.records))
    return out


def _generation(names, ckpt_path, data, split, n_fake, inception, seed, workers) -> dict:
    from ..metrics.fid import IS_SPLITS, InceptionFeatures, generation_metrics, resolve_inception_weights

    resolve_inception_weights(inception)  # clear error before any work
    if "is" in names and n_fake < IS_SPLITS:
        raise FgtoolError(f"is needs --n-fake of at least {IS_SPLITS} (it scores {IS_SPLITS} splits)")
    m = load(ckpt_path)
    model = InceptionFeatures(inception).to(m.device)
    g = torch.Generator().manual_seed(seed)

    def fakes():
        left = n_fake
        while left > 0:
            b = min(50, left)
            with torch.no_grad():
                yield m.backend.generate(m.nets, m.backend.sample_codes(b, g))["image"].float().cpu()
            left -= b

    reals = None
    if {"fid", "kid"} & set(names):
        _, ds = eval_set(m, data, split)
        reals = (b["image"] for b in batches(ds, 50, workers))
    return generation_metrics(reals, fakes(), model, metrics=names, device=str(m.device),
                              kid_subset_size=min(1000, n_fake))


def _seg_eval(ckpt_path, data, split, max_images, workers, refine: str = "none", tta: str = "none") -> dict:
    from ..data.evalset import photo_frame, photo_mask
    from ..metrics.centre import read_mask
    from ..metrics.segmentation import seg_metrics

    _check_mask_options(refine, tta)
    m = load(ckpt_path)
    require_segmenter(m)
    imageset, ds = eval_set(m, data, split, max_images)
    if not imageset.has_masks:
        raise FgtoolError(f"{data} has no segmentations/ to score against")
    # scored where users get the masks: each photo's mask as `segment` writes it (the model's map
    # upsampled to the photo, then thresholded) against the ground truth at its own resolution
    pred, gt = [], []
    with torch.no_grad(), m.autocast():  # as segment runs the nets
        for b in batches(ds, 64, workers):
            x = b["image"].to(m.device)
            fg = _refined(x, _masks(m, x, tta)[0], None, refine)[0].cpu()
            for i, j in enumerate(b["index"].tolist()):
                rec = imageset.records[j]
                pred.append(np.asarray(photo_mask(fg[i], photo_frame(ds, rec))) >= 128)
                gt.append(read_mask(rec.mask_path))
    bgs = [r.bg for r in imageset.records]
    if all(b < 0 for b in bgs):
        return seg_metrics(pred, gt)
    # background labels known (the synthetic set): where the masks fail, by background class
    names, classes = None, None
    try:
        meta = json.loads((imageset.root / "meta.json").read_text())
        names, classes = meta.get("backgrounds"), meta.get("child_names")
    except (OSError, ValueError, AttributeError):
        pass
    res = seg_metrics(pred, gt, groups=bgs, names=names)
    res["iou_by_background"] = res.pop("iou_by_group")
    if names and classes:  # the synthetic set: which class on which background fails
        labels = [r.label for r in imageset.records]
        nb = len(names)
        cells = [c * nb + b if c >= 0 and b >= 0 else -1 for c, b in zip(labels, bgs)]
        res["iou_by_class_background"] = seg_metrics(
            pred, gt, groups=cells, names=[f"{c}/{b}" for c in classes for b in names])["iou_by_group"]
    return res
