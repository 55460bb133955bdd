"""One plain function per CLI command. They return results and never print; the CLI
and the tests call the same functions. Each command lives in its own module under
:mod:`fgtool.commands`; this module gathers them under one name."""

from __future__ import annotations

from .commands.cluster import cluster, features
from .commands.data import data_synth
from .commands.eval import (
    BASELINES,
    CLUSTER_METRICS,
    GEN_METRICS,
    LANDMARK_METRICS,
    MIX_METRICS,
    PART_METRICS,
    REMOVAL_METRICS,
    SEG_METRICS,
    evaluate,
)
from .commands.export import export
from .commands.gif import MAX_FRAMES, MAX_GIF_N, gif
from .commands.info import info, models
from .commands.mix import mix
from .commands.options import Progress, check_count, check_seed
from .commands.sample import MAX_SAMPLES, parse_fix, sample
from .commands.segment import FILL, REFINE, TTA, segment, segment_centre
from .commands.train import resolve_config, train
from .loading import Loaded, load

__all__ = [
    "BASELINES",
    "check_count",
    "check_seed",
    "cluster",
    "CLUSTER_METRICS",
    "data_synth",
    "evaluate",
    "export",
    "features",
    "FILL",
    "GEN_METRICS",
    "gif",
    "info",
    "LANDMARK_METRICS",
    "load",
    "Loaded",
    "MAX_FRAMES",
    "MAX_GIF_N",
    "MAX_SAMPLES",
    "mix",
    "MIX_METRICS",
    "models",
    "parse_fix",
    "PART_METRICS",
    "Progress",
    "REFINE",
    "REMOVAL_METRICS",
    "resolve_config",
    "sample",
    "SEG_METRICS",
    "segment",
    "segment_centre",
    "train",
    "TTA",
]
