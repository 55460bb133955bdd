"""Evaluation metrics: clustering (NMI/ACC/ARI), foreground masks (IoU/DICE), FID/KID/IS."""

from fgtool.metrics.clustering import (
    acc,
    ari,
    cluster_metrics,
    kmeans,
    nmi,
    pixel_kmeans_floor,
)
from fgtool.metrics.fid import (
    InceptionFeatures,
    extract_features,
    feature_stats,
    fid_from_features,
    frechet_distance,
    generation_metrics,
    inception_score,
    kid_from_features,
    resolve_inception_weights,
)
from fgtool.metrics.segmentation import dice, fg_iou, part_iou, seg_metrics

__all__ = [
    "acc",
    "ari",
    "cluster_metrics",
    "kmeans",
    "nmi",
    "pixel_kmeans_floor",
    "InceptionFeatures",
    "extract_features",
    "feature_stats",
    "fid_from_features",
    "frechet_distance",
    "generation_metrics",
    "inception_score",
    "kid_from_features",
    "resolve_inception_weights",
    "dice",
    "fg_iou",
    "part_iou",
    "seg_metrics",
]
