"""The synthetic set's drawing: the object shapes (polygons, keypoints, areas) and the
procedural backgrounds (see fgtool/data/synth.py)."""

from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np


def _circle(cx: float, cy: float, rx: float, ry: float | None = None, k: int = 48, rot: float = 0.0):
    ry = rx if ry is None else ry
    t = np.linspace(0, 2 * np.pi, k, endpoint=False)
    x, y = rx * np.cos(t), ry * np.sin(t)
    c, s = math.cos(rot), math.sin(rot)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], 1)


def _bird():
    # a plump, perching bird: compact enough to fill ~40% of a square frame, with the head,
    # beak and tail that make it a bird rather than an ellipse
    return [
        (_circle(0.0, 0.1, 1.0, 0.72, k=64, rot=-0.25), 1),  # body, tilted nose-up
        (_circle(0.72, -0.55, 0.46), 1),  # head
        (np.array([[1.1, -0.7], [1.45, -0.55], [1.12, -0.42]]), 1),  # beak
        (np.array([[-0.75, 0.05], [-1.35, -0.55], [-1.4, -0.15], [-0.62, 0.42]]), 1),  # tail
    ]


def _star(points: int = 5, inner: float = 0.55):
    # inner ratio 0.55 (a regular pentagram is 0.38): fat enough to fill 45% of the frame
    # at small rotations, still unmistakably a star at 32 px
    t = -np.pi / 2 + np.arange(2 * points) * np.pi / points
    r = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return [(np.stack([r * np.cos(t), r * np.sin(t)], 1), 1)]


def _heart():
    t = np.linspace(0, 2 * np.pi, 96, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return [(np.stack([x, y], 1) / 16.0, 1)]


def _crescent():
    # a thick crescent opening to the right; the carved disc is offset up-right so the horns
    # are asymmetric enough for Hu moments to tell it from a flipped copy of itself
    return [(_circle(0.0, 0.0, 1.0, k=64), 1), (_circle(0.55, -0.08, 0.78, k=64), 0)]


def _cross(a: float = 0.36):
    p = [(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a), (a, 1), (-a, 1), (-a, a), (-1, a),
         (-1, -a), (-a, -a)]
    return [(np.array(p, float), 1)]


def _roundsquare(r: float = 0.38):
    # corners are quarter circles of radius r; straight sides in between
    pts = []
    for cx, cy, a0 in ((1 - r, 1 - r, 0), (-(1 - r), 1 - r, 90), (-(1 - r), -(1 - r), 180),
                       (1 - r, -(1 - r), 270)):
        t = np.deg2rad(a0 + np.linspace(0, 90, 10))
        pts.append(np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1))
    return [(np.concatenate(pts), 1)]


# Five keypoints per silhouette, in the frame its function above draws it in (x right, y down).
KEYPOINTS = {
    "bird": (("beak", (1.45, -0.55)), ("eye", (0.86, -0.64)), ("tail", (-1.375, -0.35)),
             ("back", (-0.18, -0.60)), ("belly", (0.18, 0.80))),
    "star": tuple((f"tip{j + 1}", (round(math.cos(-math.pi / 2 + 2 * math.pi * j / 5), 4),
                                   round(math.sin(-math.pi / 2 + 2 * math.pi * j / 5), 4))) for j in range(5)),
    "heart": (("notch", (0.0, -0.3125)), ("left_lobe", (-0.489, -0.745)), ("right_lobe", (0.489, -0.745)),
              ("tip", (0.0, 1.0625)), ("middle", (0.0, 0.35))),
    "crescent": (("upper_horn", (0.512, -0.859)), ("lower_horn", (0.735, 0.678)), ("back", (-1.0, 0.0)),
                 ("upper_back", (-0.5, -0.866)), ("lower_back", (-0.5, 0.866))),
    "cross": (("top", (0.0, -1.0)), ("right", (1.0, 0.0)), ("bottom", (0.0, 1.0)), ("left", (-1.0, 0.0)),
              ("middle", (0.0, 0.0))),
    "roundsquare": (("top_left", (-0.8887, -0.8887)), ("top_right", (0.8887, -0.8887)),
                    ("bottom_right", (0.8887, 0.8887)), ("bottom_left", (-0.8887, 0.8887)),
                    ("middle", (0.0, 0.0))),
}


N_KEYPOINTS = 5


_SHAPES = {"bird": _bird, "star": _star, "heart": _heart, "crescent": _crescent, "cross": _cross,
           "roundsquare": _roundsquare}


@lru_cache(maxsize=None)
def _shape_centre(name: str) -> np.ndarray:
    filled = np.concatenate([p for p, v in _SHAPES[name]() if v])
    return (filled.min(0) + filled.max(0)) / 2


@lru_cache(maxsize=None)
def _shape(name: str):
    # centred on the bounding box of the filled parts so placement maths is symmetric
    c = _shape_centre(name)
    return tuple((np.ascontiguousarray(p - c), v) for p, v in _SHAPES[name]())


def keypoints(name: str, A: np.ndarray, t: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The silhouette's keypoints in an image of pose ``A``, ``t`` (:func:`scene`):
    ([5, 2] pixel coordinates x, y; [5] bool, True where the point lies inside the image)."""
    u = np.array([q for _, q in KEYPOINTS[name]], np.float64) - _shape_centre(name)
    xy = u @ np.asarray(A, np.float64).T + np.asarray(t, np.float64)
    return xy, ((xy >= 0) & (xy <= size)).all(1)


def _fill(canvas: np.ndarray, parts, shift: int = 4) -> None:
    f = 1 << shift
    for poly, v in parts:
        cv2.fillPoly(canvas, [np.round(poly * f).astype(np.int32)], int(v), lineType=cv2.LINE_8,
                     shift=shift)


@lru_cache(maxsize=None)
def _unit_area(name: str) -> float:
    """Area of the canonical shape in unit^2, measured by rasterising it finely (exact
    enough, and it handles the carved and overlapping parts without polygon booleans)."""
    k = 256.0
    parts = [(p * k + 2 * k, v) for p, v in _shape(name)]
    canvas = np.zeros((int(4 * k), int(4 * k)), np.uint8)
    _fill(canvas, parts)
    return float(canvas.sum()) / (k * k)


# --------------------------------------------------------------------------- backgrounds
def _noise(rng, S: int, cells: int) -> np.ndarray:
    """Smooth value noise in ~[0, 1]: a random (cells+1)^2 grid, upsampled bicubically and
    cropped at a random sub-cell offset so the texture phase differs per image."""
    g = rng.random((cells + 2, cells + 2)).astype(np.float32)
    big = cv2.resize(g, ((cells + 2) * S // cells, (cells + 2) * S // cells), interpolation=cv2.INTER_CUBIC)
    oy, ox = rng.integers(0, S // cells + 1, size=2)
    return big[oy:oy + S, ox:ox + S]


def _mix(a, b, t):
    t = t[..., None]
    return np.asarray(a, np.float32) * (1 - t) + np.asarray(b, np.float32) * t


def _bg_sky(rng, S):
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32) / S
    t = np.clip(yy + rng.uniform(-0.3, 0.3) * (xx - 0.5) + rng.uniform(-0.2, 0.2), 0, 1)
    img = _mix(np.array([35, 105, 205]) * rng.uniform(0.85, 1.05), (185, 222, 250), t)
    cloud = np.clip((_noise(rng, S, 3) - rng.uniform(0.5, 0.7)) * 4, 0, 0.85)
    return _mix(img, (250, 250, 252), cloud)


def _bg_grass(rng, S):
    blobs = _noise(rng, S, 4)
    # tall thin noise -> vertical blade streaks that vary slowly along y
    blades = cv2.resize(rng.random((max(2, S // 12), S)).astype(np.float32), (S, S),
                        interpolation=cv2.INTER_LINEAR)
    t = np.clip(0.45 * blobs + 0.55 * blades, 0, 1)
    return _mix((25, 80, 20), (125, 180, 55), t) * rng.uniform(0.9, 1.1)


def _bg_bricks(rng, S):
    bh = S / rng.uniform(5.0, 7.0)
    bw = bh * rng.uniform(1.8, 2.4)
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32)
    v = (yy + rng.uniform(0, bh)) / bh
    row = np.floor(v).astype(np.int32)
    u = (xx + rng.uniform(0, bw)) / bw + 0.5 * (row % 2)
    col = np.floor(u).astype(np.int32)
    jit = rng.uniform(0.78, 1.12, size=(row.max() + 1, col.max() + 1)).astype(np.float32)
    img = np.array([160, 68, 45], np.float32) * jit[row, col][..., None]
    mw = max(1.0, S / 48) / bh, max(1.0, S / 48) / bw  # mortar ~1 px at 32-64 px
    mortar = ((v - row) < mw[0]) | ((u - col) < mw[1])
    img[mortar] = (200, 195, 185)
    return img


def _bg_water(rng, S):
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32) / S
    f1, f2 = rng.uniform(4, 6.5), rng.uniform(1, 2.5)
    w = np.sin(2 * np.pi * (f1 * yy + 0.25 * np.sin(2 * np.pi * f2 * xx + rng.uniform(0, 6.3)))
               + rng.uniform(0, 6.3))
    w = 0.7 * w + 0.3 * (2 * _noise(rng, S, 3) - 1)
    img = _mix((15, 60, 105), (55, 140, 175), np.clip(0.5 + 0.5 * w, 0, 1))
    glint = np.clip((w - 0.75) * 4, 0, 1)
    return _mix(img, (200, 235, 245), glint)


_LEAF_COLOURS = np.array([(60, 110, 30), (95, 140, 40), (140, 150, 45), (45, 85, 35), (170, 120, 40)],
                         np.float32)


def _bg_leaves(rng, S):
    img = np.zeros((S, S, 3), np.float32)
    img[:] = (30, 48, 22)
    # relatively more leaves at small sizes, or a 32 px image is mostly the dark ground
    k = int(10 + 30 * (S / 64) ** 2)
    cs = rng.integers(0, S, size=(k, 2))
    ax = rng.uniform(S / 12, S / 6.5, size=k)
    ratio = rng.uniform(0.3, 0.5, size=k)
    ang = rng.uniform(0, 180, size=k)
    cols = _LEAF_COLOURS[rng.integers(0, len(_LEAF_COLOURS), size=k)] * rng.uniform(0.8, 1.15, (k, 1))
    for c, a, r, t, col in zip(cs, ax, ratio, ang, cols):
        cv2.ellipse(img, (int(c[0]), int(c[1])), (int(a), max(1, int(a * r))), float(t), 0, 360,
                    col.tolist(), -1, cv2.LINE_AA)
    return img


_BACKGROUNDS = (_bg_sky, _bg_grass, _bg_bricks, _bg_water, _bg_leaves)
