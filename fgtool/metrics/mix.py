"""Mix fidelity (``fgtool eval --metric mix``) on the synthetic set.

Protocol (the paper's, with probes instead of keypoints): draw pairs (A, B) of real images;
mix texture and background from A with shape and pose from B; a probe classifier then
judges whether the mixed image has B's shape (parent label) and A's texture (child label).

Texture on the synthetic set: every child id is one (hue, pattern) appearance, unique over
the whole set, and children nest in parents, so in real images texture and shape always
come together. A probe trained on them could name the texture from the shape. The probe
is therefore trained on freshly rendered images where shape and appearance are drawn
independently (``synth.render_one(..., shape=...)``: any silhouette with any child's
appearance), seen through the same crop as the model's training views. Its texture head
names the appearance (child id), its shape head the silhouette (parent id).

Scores are percentages; chance is 100 / n_parents (shape) and 100 / n_children (texture).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from ..backends.base import FeatureEncoder
from ..errors import FgtoolError


class Probe(nn.Module):
    """Three conv-BN-ReLU stages pooled to a 4x4 map (the views are centred object crops,
    so the layout of the map tells the silhouette), a shape head and a texture head."""

    def __init__(self, n_shapes: int, n_textures: int, width: int = 16):
        super().__init__()
        w = width
        self.trunk = nn.Sequential(
            nn.Conv2d(3, w, 3, 1, 1), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, 1, 1), nn.BatchNorm2d(2 * w), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, 1, 1), nn.BatchNorm2d(4 * w), nn.ReLU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.shape = nn.Linear(64 * w, n_shapes)
        self.texture = nn.Linear(64 * w, n_textures)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.trunk(x)
        return self.shape(h), self.texture(h)


def synth_meta(data, metric: str = "mix") -> dict:
    p = Path(data) / "meta.json"
    try:
        meta = json.loads(p.read_text())
        if meta.get("generator") != "fgtool.synth":
            raise ValueError
    except (OSError, ValueError, AttributeError):
        raise FgtoolError(f"--metric {metric} needs the synthetic set (fgtool data synth): {data} has no "
                          "synthetic meta.json") from None
    return meta


def render_factorial(meta: dict, size: int, n: int, seed: int, crop_scale: float | None
                     ) -> tuple[Tensor, Tensor, Tensor]:
    """``n`` synthetic images whose silhouette (shape label) and appearance (texture label,
    a child id) are drawn independently: [n,3,S,S] in [-1,1], shape [n], texture [n].
    ``crop_scale``: the model's object view (square crop of crop_scale * max(w, h) around
    the object); None: the full image."""
    from ..data.boxes import crop_box_around
    from ..data.datasets import _render
    from ..data.synth import config_from_meta, render_one

    cfg = config_from_meta(meta)
    rng = np.random.default_rng([seed, 7])
    shapes = rng.integers(cfg.parents, size=n)
    imgs, textures = np.zeros((n, size, size, 3), np.uint8), np.zeros(n, np.int64)
    S0 = cfg.size
    for i in range(n):
        rgb, _, lab = render_one(i, seed + 1_000_003, cfg, shape=int(shapes[i]))
        region = crop_box_around(lab["box"], S0, S0, crop_scale) if crop_scale else (0, 0, S0, S0)
        imgs[i] = np.asarray(_render(Image.fromarray(rgb), region, size, Image.BICUBIC))
        textures[i] = lab["child"]
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1
    return x, torch.from_numpy(shapes).long(), torch.from_numpy(textures)


def train_probe(x: Tensor, shape: Tensor, texture: Tensor, n_shapes: int, n_textures: int, steps: int = 300,
                batch: int = 64, seed: int = 0, width: int = 16) -> Probe:
    """Fit the probe on factorial images, each also seen slightly blurred (generated images
    are soft), with faint noise. Deterministic for a seed; the global RNG is untouched."""
    from torchvision.transforms.functional import gaussian_blur

    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        probe = Probe(n_shapes, n_textures, width)
    x = torch.cat([x, gaussian_blur(x, [3, 3], [0.7, 0.7])])
    shape, texture = torch.cat([shape, shape]), torch.cat([texture, texture])
    opt = torch.optim.Adam(probe.parameters(), lr=2e-3)
    probe.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a net this small only loses to thread hand-offs (5-10x on a busy CPU)
    try:
        for _ in range(steps):
            idx = torch.randint(0, x.shape[0], (min(batch, x.shape[0]),), generator=g)
            xb = (x[idx] + torch.randn(x[idx].shape, generator=g) * 0.03).clamp(-1, 1)
            ls, lt = probe(xb)
            loss = F.cross_entropy(ls, shape[idx]) + F.cross_entropy(lt, texture[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return probe.eval()


@torch.no_grad()
def predict(probe: Probe, images: Tensor, batch: int = 256) -> tuple[Tensor, Tensor]:
    s, t = [], []
    for chunk in images.float().split(batch):
        ls, lt = probe(chunk)
        s.append(ls.argmax(1))
        t.append(lt.argmax(1))
    return torch.cat(s), torch.cat(t)


def score_mixed(probe: Probe, mixed: Tensor, shape_labels, texture_labels) -> dict[str, float]:
    """Percent of ``mixed`` images whose probed shape is ``shape_labels`` (the shape
    reference's parent) and whose probed texture is ``texture_labels`` (the texture
    reference's child)."""
    ps, pt = predict(probe, mixed)
    ys, yt = torch.as_tensor(np.asarray(shape_labels)), torch.as_tensor(np.asarray(texture_labels))
    return {"shape": round(100.0 * (ps == ys).float().mean().item(), 2),
            "texture": round(100.0 * (pt == yt).float().mean().item(), 2)}


def silhouette(out: dict) -> Tensor | None:
    """The generated object's mask [N,1,S,S]: ``mask``, or for FineGAN's two stages the union
    1 - (1 - parent_mask)(1 - child_mask); None if the generator gives no mask."""
    if "mask" in out:
        return out["mask"]
    if "parent_mask" in out and "child_mask" in out:
        return 1 - (1 - out["parent_mask"]) * (1 - out["child_mask"])
    return None


def mix_fidelity(m, data: str, n_pairs: int = 1000, seed: int = 0, probe_images: int = 3000,
                 probe_steps: int = 300, progress=None) -> dict:
    """Shape % and texture % of mixes (texture + background from A, shape + pose from B),
    in code mode and, for a checkpoint past stage 2, in feature mode too. Pose: where the
    set has masks, ``*_pose_iou`` is the IoU between the mix's generated object mask and B's
    true mask (B gives shape and pose, so a mix that keeps B's pose puts its object there)."""
    from ..data.evalset import eval_set
    from ..mixing import mix_images
    from .segmentation import fg_iou

    m.backend.require("mix")
    meta = synth_meta(data)
    imageset, ds = eval_set(m, data)
    with_masks = imageset.has_masks
    if with_masks:
        imageset, ds = eval_set(m, data, with_masks=True)
    parent = np.array([r.parent for r in imageset.records])
    child = np.array([r.label for r in imageset.records])
    if (parent < 0).any() or (child < 0).any():
        raise FgtoolError(f"{data}: every image needs parent and child labels for --metric mix")
    if n_pairs < 1:
        raise FgtoolError(f"--n-fake (pairs for mix) must be >= 1, got {n_pairs}")
    n_sh, n_tx = len(meta["parents"]), int(meta["n_children"])
    S = m.cfg.data.size
    crop = ds.crop_scale if ds.use_real else None
    x_all, s_all, t_all = render_factorial(meta, S, probe_images + 500, seed, crop)
    if progress:
        progress("mix probe", 0, probe_steps)
    probe = train_probe(x_all[:probe_images], s_all[:probe_images], t_all[:probe_images], n_sh, n_tx,
                        steps=probe_steps, seed=seed)
    held = score_mixed(probe, x_all[probe_images:], s_all[probe_images:], t_all[probe_images:])

    rng = np.random.default_rng([seed, 11])
    A = rng.integers(len(ds), size=n_pairs)
    B = rng.integers(len(ds), size=n_pairs)
    cache: dict[int, dict] = {}

    def views(idx, key: str = "image") -> Tensor:
        for i in idx:
            if int(i) not in cache:
                cache[int(i)] = ds[int(i)]
        return torch.stack([cache[int(i)][key] for i in idx])

    ready = isinstance(m.backend, FeatureEncoder) and m.backend.feature_ready(m.step)
    modes = ["code"] + (["feature"] if ready else [])
    mixed = {k: [] for k in modes}
    pose = {k: [] for k in modes}
    chunk = 64
    for j in range(0, n_pairs, chunk):
        xa, xb = views(A[j:j + chunk]), views(B[j:j + chunk])
        refs = {"bg": xa, "texture": xa, "shape": xb, "pose": xb}
        for k in modes:  # every factor is given: the generator only keeps the global RNG untouched
            o = mix_images(m, refs, mode=k, generator=torch.Generator().manual_seed(seed), outputs=True)
            mixed[k].append(o["image"])
            sil = silhouette(o)
            if with_masks and sil is not None:
                gt = views(B[j:j + chunk], "mask")
                pose[k].append(fg_iou(sil[:, 0], gt[:, 0]) * len(gt))
        if progress:
            progress("mix", min(j + chunk, n_pairs), n_pairs)
    real = score_mixed(probe, views(B), parent[B], child[B])  # the probe on real references
    out = {"mix_pairs": int(n_pairs), "mix_chance_shape": round(100.0 / n_sh, 2),
           "mix_chance_texture": round(100.0 / n_tx, 2),
           "mix_probe_shape": held["shape"], "mix_probe_texture": held["texture"],
           "mix_probe_real_shape": real["shape"], "mix_probe_real_texture": real["texture"]}
    differ = parent[A] != parent[B]
    for k in modes:
        imgs = torch.cat(mixed[k])
        sc = score_mixed(probe, imgs, parent[B], child[A])
        pre = "mix" if k == "code" else "mix_feature"
        out[f"{pre}_shape"], out[f"{pre}_texture"] = sc["shape"], sc["texture"]
        if pose[k]:
            out[f"{pre}_pose_iou"] = round(sum(pose[k]) / n_pairs, 4)
        if differ.any():  # how often the shape came from the texture reference instead
            leak = score_mixed(probe, imgs[torch.from_numpy(differ)], parent[A][differ], child[A][differ])
            out[f"{pre}_shape_from_texture_ref"] = leak["shape"]
    out["mix_modes"] = modes
    return out
