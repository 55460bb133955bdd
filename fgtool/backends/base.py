"""The backend contract: pure model math, no devices, autocast, backward or file I/O.

The trainer owns the loop (optimisers, autocast, backward, EMA, logging, checkpoints);
a backend describes *what* to optimise through :class:`Phase` and :meth:`Backend.loss`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from ..errors import FgtoolError


@dataclass(frozen=True)
class Phase:
    """One optimiser step of some modules, e.g. the discriminators or the generator."""

    name: str
    trains: tuple[str, ...]  # keys of the nets dict; "Dc.info" names a sub-module
    # nets whose forward in this phase keeps its graph for a later phase of the same
    # iteration, without being stepped here (FineGAN: the D phase renders the fake that the
    # G phase then backpropagates through, as the authors' loop does)
    graph: tuple[str, ...] = ()
    every: int = 1  # lazy regularisation: run on steps where step % every == 0
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    start: int = 0  # first step this phase runs (e.g. a second training stage)
    stop: int | None = None  # first step this phase no longer runs; None: it never stops

    def active(self, step: int) -> bool:
        return step >= self.start and (self.stop is None or step < self.stop) and step % self.every == 0


@dataclass
class Grid:
    """A picture for people: images [N,C,H,W] (C=3 in [-1,1], or C=1 masks in [0,1])."""

    images: Tensor
    nrow: int
    row_labels: list[str] | None = None
    col_labels: list[str] | None = None


def as_rgb(x: Tensor) -> Tensor:
    """Masks [N,1,H,W] in [0,1] -> grey RGB in [-1,1]; RGB passes through."""
    return x.repeat(1, 3, 1, 1) * 2 - 1 if x.shape[1] == 1 else x


class Backend(ABC):
    """Base class of every model. Subclasses set ``name`` and ``Config`` and register."""

    name: ClassVar[str]
    Config: ClassVar[type]
    ema: ClassVar[tuple[str, ...]] = ("G",)  # nets the trainer keeps an EMA of
    # nets needed after training (sample/cluster/...); others are dropped from exports
    inference_nets: ClassVar[tuple[str, ...] | None] = None
    uses_boxes: ClassVar[bool] = True  # False: data.box_mode "auto" feeds whole images, no box mask

    def __init__(self, cfg, size: int):
        self.cfg = cfg
        self.size = size

    # ---- required -------------------------------------------------------------------
    @abstractmethod
    def build(self) -> dict[str, nn.Module]: ...

    @abstractmethod
    def phases(self) -> list[Phase]: ...

    @abstractmethod
    def loss(self, phase: str, nets: dict[str, nn.Module], batch: dict, step: int) -> dict[str, Tensor]:
        """Return {"loss": scalar, **parts}; parts are logged (detached by the trainer)."""

    @abstractmethod
    def sample_codes(self, n: int, generator: torch.Generator | None = None, **fix) -> dict[str, Tensor]: ...

    @abstractmethod
    def generate(self, nets: dict[str, nn.Module], codes: dict[str, Tensor]) -> dict[str, Tensor]:
        """Return {"image": [N,3,H,W] in [-1,1], plus layers and masks}."""

    def code_sizes(self) -> dict[str, int]:
        """The code schema of :meth:`sample_codes`: code name -> number of categories
        (0: a continuous code). ``fgtool sample --fix/--vary`` accept the categorical ones."""
        return {}

    def on_phase_start(self, phase: str, nets: dict[str, nn.Module], step: int) -> None:
        """A change of state at a schedule boundary. The trainer calls it, without gradients, at
        the start of the step where phase ``phase``'s schedule begins (``step == Phase.start``),
        before any phase of that step runs; ``nets`` are the modules themselves (not compiled
        wrappers). A run resumed past that step has the result in its checkpoint, one resumed
        before it gets the call at the same step as an uninterrupted run. Default: nothing.
        (OneGAN copies its generation-path discriminators into the reconstruction paths'.)"""

    def ema_active(self, name: str, step: int) -> bool:
        """Whether the EMA of net ``name`` follows it at ``step``. Where this turns false the
        trainer gives the net its averaged weights, which then stay as they are (MixNMatch's
        stage 2 renders from the frozen averaged generator, as the authors' does)."""
        return True

    # ---- helpers ------------------------------------------------------------------------
    def fake_batch(self, nets, batch: dict, grad: bool, render=None, key: str = "fake",
                   codes: dict | None = None) -> tuple[dict, dict]:
        """(outputs, codes) of this iteration's generated batch. The first phase that asks
        renders it (with gradients if it wants them); later phases get the same tensors from
        ``batch["cache"]``, which the trainer empties every iteration, and detach them.
        ``render(nets, codes)`` defaults to :meth:`generate`; ``codes`` (default: drawn by
        :meth:`sample_codes`) are the codes of that first render."""
        cache = batch.setdefault("cache", {})
        if key not in cache:
            n, dev = batch["image"].shape[0], batch["image"].device
            codes = self.sample_codes(n, device=dev) if codes is None else codes
            with torch.set_grad_enabled(grad):
                cache[key] = ((render or self.generate)(nets, codes), codes)
        return cache[key]

    def grids(self, nets, generator: torch.Generator, which: str = "train") -> dict[str, Grid]:
        """Named pictures. ``which="train"``: the fixed-seed grids saved every N steps;
        ``"all"``: everything ``fgtool sample`` writes."""
        codes = self.sample_codes(16, generator)
        return {"samples": Grid(self.generate(nets, codes)["image"], 8)}

    @classmethod
    def capabilities(cls) -> list[str]:
        """What the model can do: the base contract's commands, then one name per ability
        protocol (below) the class declares, in the order of :data:`CAPABILITIES`."""
        return ["train", "sample", "gif"] + [cap for cap, proto in CAPABILITIES.items() if issubclass(cls, proto)]

    @classmethod
    def require(cls, cap: str) -> None:
        if cap not in cls.capabilities():
            raise FgtoolError(
                f"model '{cls.name}' cannot {cap}; it can: {', '.join(cls.capabilities())}"
            )


# ---- optional abilities ------------------------------------------------------------------
# A backend declares an ability by subclassing its protocol next to Backend, e.g.
# ``class OneGAN(Backend, Encoder, Clusterer, Segmenter, ObjectRemover, Translator)``.
# Generic code checks ``isinstance(backend, Segmenter)`` (or ``Backend.require``) and calls
# the protocol's methods; it never probes a backend for a method by name.
# tests/backends/test_contract.py checks every registered model against each protocol it declares.


class Clusterer(ABC):
    """``cluster``: per-image features to cluster real photos with."""

    @abstractmethod
    def cluster_features(self, nets, images: Tensor) -> dict[str, Tensor]:
        """Feature groups by name, each [N, D] float (e.g. {"parent": ..., "child": ...})."""

    def n_clusters(self) -> int | None:
        """The model's own number of clusters (the default ``--k``); None: it has none."""
        return None


class CentroidClusterer(Clusterer):
    """``centroids``: a clusterer with learned centroids that assigns images itself (C3-GAN)."""

    @abstractmethod
    def assign(self, nets, images: Tensor, feats: dict[str, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """(cluster ids [N] int64 in 0..n_clusters()-1, confidences [N] in [0, 1]); ``feats``:
        this batch's :meth:`cluster_features`, so they are not computed twice."""

    @abstractmethod
    def centroids(self, nets) -> Tensor:
        """The centroids [n_clusters(), D], L2-normalised."""

    @abstractmethod
    def n_clusters(self) -> int: ...


class Encoder(ABC):
    """``mix``: photos -> codes in the schema of :meth:`Backend.code_sizes`."""

    @abstractmethod
    def encode(self, nets, images: Tensor, hard: bool = False) -> dict[str, Tensor]:
        """Every key of ``code_sizes()``: a continuous code (size 0) as [N, D]; a categorical
        code of K categories as softmax vectors [N, K], or (``hard``) argmax indices [N]."""


class FeatureEncoder(Encoder):
    """``feature-mix``: an encoder with a pixel-aligned shape-feature extractor trained in a
    later stage (MixNMatch's feature mode)."""

    @abstractmethod
    def shape_features(self, nets, images: Tensor) -> Tensor:
        """The shape-and-pose feature map [N, C, h, w] of each photo."""

    @abstractmethod
    def feature_ready(self, step: int) -> bool:
        """Whether a checkpoint at ``step`` holds a trained extractor."""


class Segmenter(ABC):
    """``segment``: foreground masks of photos."""

    @abstractmethod
    def segment(self, nets, images: Tensor) -> Tensor:
        """Foreground probability [N, 1, H, W] in [0, 1]."""

    def segment_ready(self, step: int) -> bool:
        """Whether a checkpoint at ``step`` holds a trained segmenter."""
        return True


class PartSegmenter(Segmenter):
    """``parts``: part maps and their centres (GANSeg)."""

    @abstractmethod
    def segment_parts(self, nets, images: Tensor) -> Tensor:
        """Softmax over K + 1 labels [N, K+1, H, W]; the last channel is the background."""

    @abstractmethod
    def part_centres(self, probs: Tensor, min_mass: float = 0.002) -> Tensor:
        """Centres [N, K, 2] of :meth:`segment_parts` maps in [-1, 1]; NaN for a missing part."""

    @abstractmethod
    def n_parts(self) -> int:
        """K, the number of parts (background not counted)."""


class ObjectRemover(ABC):
    """``remove``: each photo with its object removed."""

    @abstractmethod
    def remove_object(self, nets, images: Tensor, fill: str = "gan") -> Tensor:
        """[N, 3, H, W] in [-1, 1]."""


class Translator(ABC):
    """``translate``: a photo re-rendered with another fine class (its code ``c``)."""

    @abstractmethod
    def translate(self, nets, images: Tensor, child: Tensor | int) -> Tensor:
        """[N, 3, H, W] in [-1, 1]; ``child`` an int or [N] ids in 0..code_sizes()["c"]-1."""


# capability name -> the protocol that provides it (train, sample and gif: every Backend)
CAPABILITIES: dict[str, type] = {
    "cluster": Clusterer,
    "mix": Encoder,
    "segment": Segmenter,
    "parts": PartSegmenter,
    "centroids": CentroidClusterer,
    "feature-mix": FeatureEncoder,
    "remove": ObjectRemover,
    "translate": Translator,
}
PROTOCOLS: tuple[type, ...] = tuple(CAPABILITIES.values())
