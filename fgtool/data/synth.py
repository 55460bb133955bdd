"""Ground-truth synthetic fine-grained dataset.

Every image is generated from known factors, so every model in fgtool can be scored
against them:

* parent     = silhouette family (bird, star, heart, crescent, cross, rounded square)
* child      = appearance within a parent (fill hue + pattern); the child id is global,
               ``child = parent * children + j``
* background = texture class (sky, grass, bricks, water, leaves)
* pose (z)   = position, scale, rotation, horizontal flip (not a label, but random)

The on-disk layout mirrors CUB-200-2011 so the real-data loaders read it unchanged:
``images.txt``, ``image_class_labels.txt`` (1-based), ``bounding_boxes.txt``,
``classes.txt``, ``images/<class>/<index>.png`` and ``segmentations/<class>/<index>.png``,
``parts/parts.txt`` and ``parts/part_locs.txt`` (keypoints, below), plus ``parent_labels.txt``,
``background_labels.txt`` and ``meta.json``.

Keypoints: every silhouette has five fixed points (``KEYPOINTS``: the bird's beak, eye,
tail, back and belly; the star's five tips; ...), moved by the object's pose like the
silhouette itself. ``parts/part_locs.txt`` holds them in CUB's format,
``<image id> <point id> <x> <y> <visible>`` (1-based ids, pixel coordinates where pixel c
covers [c, c + 1)); ``visible`` is 1 unless the point lies outside the image (then x = y = 0,
as CUB writes it). Point j is the j-th point of whichever silhouette the image shows;
``meta.json`` names them per silhouette.

In-memory labels (``render_one``, ``synth_arrays``, the lists in ``meta.json``) are
0-based; the text files are 1-based like CUB.

Determinism: image ``i`` is drawn from ``np.random.default_rng([seed, i])`` and its class
from a per-block permutation seeded the same way, so the output does not depend on how
many worker processes rendered it.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from fgtool.errors import FgtoolError

from .synth_shapes import (
    _BACKGROUNDS,
    KEYPOINTS,
    N_KEYPOINTS,
    _fill,
    _mix,
    _shape,
    _shape_centre,
    _unit_area,
    keypoints,
)

VERSION = 1
GENERATOR = "fgtool.synth"

PARENT_NAMES = ("bird", "star", "heart", "crescent", "cross", "roundsquare")
# bricks sits third (before water) so the default 3 backgrounds are blue / green / red-brown:
# three textures that no model can confuse, while sky and water (both blue) only meet at 4+.
BACKGROUND_NAMES = ("sky", "grass", "bricks", "water", "leaves")
PATTERN_NAMES = ("solid", "stripes", "spots", "twotone")
# Eight hues spread round the colour wheel. Saturated, so the object stands out from the
# (less saturated) background textures.
PALETTE = (
    ("red", (215, 40, 40)),
    ("orange", (245, 135, 20)),
    ("yellow", (240, 210, 40)),
    ("green", (50, 170, 60)),
    ("teal", (30, 190, 190)),
    ("blue", (45, 80, 225)),
    ("purple", (135, 55, 195)),
    ("pink", (240, 105, 175)),
)

SS = 4  # mask supersampling factor: fill at 4x, INTER_AREA down -> anti-aliased edges
MARGIN = 1.0  # px kept clear at the image border so the object is never cut
MAX_ROT = 30.0  # degrees; beyond this the bird/heart stop looking "upright"
# requested max area fraction, at most. Each shape is capped further at what it can fill
# upright (_max_area): ~0.33 for the bird, 0.42 star, 0.39 crescent, 0.45+ for the rest.
AREA_LIMIT = 0.5


# --------------------------------------------------------------------------- shapes
# Each shape is a list of (polygon, value) parts in canonical units (roughly [-1.6, 1.6]),
# x right, y down. Parts are filled in order, value 0 carves (crescent). Union by repeated
# fillPoly calls rather than one call, because fillPoly with several contours uses an
# even-odd rule and would punch holes where the bird's parts overlap.


# --------------------------------------------------------------------------- appearance
def _appearance_table(n_parents: int, children: int):
    """(hue index, pattern index) per global child id.

    Children of one parent get distinct patterns (pattern = (j + p) % 4) and hues chosen
    greedily to sit far apart on the colour wheel; no (hue, pattern) pair is used twice in the
    whole set, so every child is identifiable from appearance alone. Parent p's children do
    not depend on how many parents follow, so a 4-parent set is a prefix of a 6-parent one.
    """
    used_pairs: set[tuple[int, int]] = set()
    use_count = [0] * len(PALETTE)
    table = []
    for p in range(n_parents):
        hues: list[int] = []
        for j in range(children):
            pat = (j + p) % len(PATTERN_NAMES)
            best = None
            for h in range(len(PALETTE)):
                if h in hues or (h, pat) in used_pairs:
                    continue
                d = min((min(abs(h - g), len(PALETTE) - abs(h - g)) for g in hues), default=99)
                key = (-d, use_count[h], h)
                if best is None or key < best[0]:
                    best = (key, h)
            h = best[1]
            hues.append(h)
            used_pairs.add((h, pat))
            use_count[h] += 1
            table.append((h, pat))
    return tuple(table)


@dataclass(frozen=True)
class SynthConfig:
    """Everything that determines the rendered images except the seed and index."""

    size: int = 64
    parents: int = 4
    children: int = 3
    backgrounds: int = 3
    bg_corr: float = 0.5
    obj_area: tuple[float, float] = (0.20, 0.45)
    appearance: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "appearance", _appearance_table(self.parents, self.children))

    @property
    def n_children(self) -> int:
        return self.parents * self.children

    def child_to_parent(self) -> list[int]:
        return [k // self.children for k in range(self.n_children)]

    def home_background(self, parent: int) -> int:
        return parent % self.backgrounds

    def child_name(self, k: int) -> str:
        h, pat = self.appearance[k]
        return f"{k + 1:03d}.{PARENT_NAMES[k // self.children]}_{PALETTE[h][0]}_{PATTERN_NAMES[pat]}"


def config_from_meta(meta: dict) -> SynthConfig:
    """The :class:`SynthConfig` a set was rendered with, from its meta.json."""
    return SynthConfig(int(meta["size"]), len(meta["parents"]), int(meta["children_per_parent"]),
                       len(meta["backgrounds"]), float(meta["bg_corr"]), tuple(float(a) for a in meta["obj_area"]))


def validate(n: int, size: int, parents: int, children: int, backgrounds: int, bg_corr: float,
             obj_area=(0.20, 0.45), workers: int = 1) -> None:
    def _int(v, name):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise FgtoolError(f"{name} must be an integer, got {v!r}")

    for v, name in ((n, "n"), (size, "size"), (parents, "parents"), (children, "children"),
                    (backgrounds, "backgrounds"), (workers, "workers")):
        _int(v, name)
    if n < 1:
        raise FgtoolError(f"n must be >= 1, got {n}")
    if size < 16:
        raise FgtoolError(f"size must be >= 16 pixels, got {size}")
    if not 1 <= parents <= len(PARENT_NAMES):
        raise FgtoolError(f"parents must be in 1..{len(PARENT_NAMES)}, got {parents}")
    if not 2 <= children <= 4:
        raise FgtoolError(f"children must be in 2..4, got {children}")
    if not 1 <= backgrounds <= len(BACKGROUND_NAMES):
        raise FgtoolError(f"backgrounds must be in 1..{len(BACKGROUND_NAMES)}, got {backgrounds}")
    try:
        bc = float(bg_corr)
    except (TypeError, ValueError):
        raise FgtoolError(f"bg_corr must be a number in [0, 1], got {bg_corr!r}") from None
    if not 0.0 <= bc <= 1.0:  # also rejects NaN
        raise FgtoolError(f"bg_corr must be in [0, 1], got {bg_corr}")
    try:
        lo, hi = (float(a) for a in obj_area)
    except (TypeError, ValueError):
        raise FgtoolError(f"obj_area must be a pair (min, max), got {obj_area!r}") from None
    if not 0.05 <= lo <= hi <= AREA_LIMIT:
        raise FgtoolError(f"obj_area must satisfy 0.05 <= min <= max <= {AREA_LIMIT}, got {obj_area}")
    # the smallest object must fit every shape in use, or the lower bound would be broken
    tightest = min(PARENT_NAMES[:parents], key=lambda s: _max_area(s, size))
    if lo > _max_area(tightest, size):
        raise FgtoolError(f"obj_area min {lo} is too large: a {tightest} can fill at most "
                          f"{_max_area(tightest, size):.2f} of a {size} px image")
    if workers < 1:
        raise FgtoolError(f"workers must be >= 1, got {workers}")


# --------------------------------------------------------------------------- rendering
def _max_area(name: str, size: int) -> float:
    """Largest area fraction the shape can take upright while staying inside the frame.
    Elongated shapes (bird, crescent) hit the frame's width before they reach 45%."""
    filled = np.concatenate([p for p, v in _shape(name) if v])
    ext = (filled.max(0) - filled.min(0)).max()
    return _unit_area(name) / ext**2 * ((size - 2 * MARGIN) / size) ** 2


def _pose(rng, name: str, cfg: SynthConfig):
    """Scale from a target area fraction; rotation / flip random; translation uniform over
    the positions that keep the whole object inside the frame."""
    S = cfg.size
    filled = np.concatenate([p for p, v in _shape(name) if v])
    lo_a, hi_a = cfg.obj_area
    # cap the range per shape instead of clipping after sampling: a clip would pile many
    # images up at exactly the cap; this keeps the size distribution smooth for every parent
    hi_a = max(lo_a, min(hi_a, _max_area(name, S)))
    s = math.sqrt(rng.uniform(lo_a, hi_a) * S * S / _unit_area(name))  # px per canonical unit
    room = S - 2 * MARGIN
    for _ in range(8):
        rot = math.radians(rng.uniform(-MAX_ROT, MAX_ROT))
        flip = -1.0 if rng.random() < 0.5 else 1.0
        c, si = math.cos(rot), math.sin(rot)
        A = s * np.array([[c, -si], [si, c]]) @ np.diag([flip, 1.0])  # flip first, then rotate
        q = filled @ A.T
        lo, hi = q.min(0), q.max(0)
        if (hi - lo).max() <= room:
            break
    else:
        # a big object rarely fits tilted (the upper area range makes most tilts too wide):
        # stand it upright, where it fits by construction of hi_a (the shrink only absorbs
        # float rounding)
        A = np.diag([flip, 1.0]) * s
        q = filled @ A.T
        lo, hi = q.min(0), q.max(0)
        k = min(1.0, room / (hi - lo).max() * (1 - 1e-6))
        A, lo, hi = A * k, lo * k, hi * k
    t = np.array([rng.uniform(MARGIN - lo[0], max(MARGIN - lo[0], S - MARGIN - hi[0])),
                  rng.uniform(MARGIN - lo[1], max(MARGIN - lo[1], S - MARGIN - hi[1]))])
    return A, t


def _soft_mask(parts, A, t, S):
    big = np.zeros((S * SS, S * SS), np.uint8)
    # pixel centres: canvas coordinate c covers [c, c+1), so continuous x maps to x*SS - 0.5
    _fill(big, [((p @ A.T + t) * SS - 0.5, v) for p, v in parts])
    return cv2.resize(big.astype(np.float32), (S, S), interpolation=cv2.INTER_AREA)


def _foreground(rng, name, k, A, t, cfg: SynthConfig):
    """Fill colour + pattern, evaluated in the object's own frame so stripes and spots
    rotate, flip and scale with the object like a real marking would."""
    S = cfg.size
    h, pat = cfg.appearance[k]
    base = np.array(PALETTE[h][1], np.float32) * rng.uniform(0.9, 1.06) + rng.uniform(-8, 8, 3)
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32) + 0.5
    Ainv = np.linalg.inv(A).astype(np.float32)
    dx, dy = xx - t[0], yy - t[1]
    u = Ainv[0, 0] * dx + Ainv[0, 1] * dy
    v = Ainv[1, 0] * dx + Ainv[1, 1] * dy
    px = float(np.sqrt(abs(np.linalg.det(A))))  # pixels per canonical unit, for 1-px AA edges

    if pat == 0:  # solid
        img = np.broadcast_to(base, (S, S, 3)).astype(np.float32)
    elif pat == 1:  # stripes across the body, dark shade of the hue
        period = 0.5
        ph = (u / period + rng.uniform(0, 1)) % 1.0
        d = np.abs(ph - 0.5) * period  # distance (units) from the stripe's centre line
        m = np.clip((0.14 - d) * px + 0.5, 0, 1)
        img = _mix(base, base * 0.28, m)
    elif pat == 2:  # pale spots on a (hex-offset) grid with random phase
        sp = 0.55
        gy = v / sp + rng.uniform(0, 1)
        gx = u / sp + rng.uniform(0, 1) + 0.5 * np.floor(gy)
        d = np.hypot(gx % 1.0 - 0.5, gy % 1.0 - 0.5) * sp
        m = np.clip((0.15 - d) * px + 0.5, 0, 1)
        img = _mix(base, 0.2 * base + 0.8 * 255, m)
    else:  # two-tone: hue on top, pale belly below a soft split line
        m = np.clip((v - rng.uniform(-0.05, 0.15)) * px + 0.5, 0, 1)
        img = _mix(base, 0.3 * base + 0.7 * 245, m)

    # soft top-down light so objects read as 3-D rather than flat stickers
    img = img * (1.1 - 0.2 * (yy / S))[..., None]
    if name == "bird":  # dark beak and an eye: shape details shared by every bird child
        c = _shape_centre(name)  # back to the frame _bird() was drawn in
        ur, vr = u + c[0], v + c[1]
        img = _mix(img, (55, 50, 45), np.clip((ur - 1.16) * px + 0.5, 0, 1))
        eye = np.clip((0.09 - np.hypot(ur - 0.86, vr + 0.64)) * px + 0.5, 0, 1)
        img = _mix(img, (15, 15, 15), eye)
    return img


def scene(i: int, seed: int, cfg: SynthConfig, shape: int | None = None):
    """The first draws of image ``i``: (child, parent, background, shape name, A, t, rng).

    ``A`` (2x2) and ``t`` map the shape's canonical coordinates to canvas pixels
    (``x = A u + t``; pixel c covers [c, c + 1)); ``rng`` is left where the foreground and
    background draws continue. Every renderer of the set starts here, so the pose of an
    image can be recovered from its index (the part-consistency metric does)."""
    child = _child_of(i, seed, cfg.n_children)
    parent = child // cfg.children
    rng = np.random.default_rng([seed, i])
    # draw both numbers always, so bg_corr only changes the background, never the pose
    home, r, other = cfg.home_background(parent), rng.random(), int(rng.integers(cfg.backgrounds))
    bg = home if r < cfg.bg_corr else other
    name = PARENT_NAMES[parent if shape is None else shape]
    A, t = _pose(rng, name, cfg)
    return child, parent, bg, name, A, t, rng


def render_one(i: int, seed: int, cfg: SynthConfig, shape: int | None = None):
    """Render image ``i``. Returns (rgb uint8 HxWx3, mask bool HxW, labels) where labels
    holds 0-based ``child``, ``parent``, ``bg``, ``box`` = (x, y, w, h) of the mask,
    ``keypoints`` [5, 2] (x, y pixels) and ``visible`` [5] (:func:`keypoints`).

    ``shape`` (a parent id) draws that parent's silhouette with child ``i``'s appearance:
    shape and appearance then vary independently (the mix-fidelity probe trains on these)."""
    child, parent, bg, name, A, t, rng = scene(i, seed, cfg, shape)
    soft = _soft_mask(_shape(name), A, t, cfg.size)
    fg = _foreground(rng, name, child, A, t, cfg)
    back = _BACKGROUNDS[bg](rng, cfg.size)
    img = back + (fg - back) * soft[..., None]
    img += rng.normal(0, 2.0, img.shape).astype(np.float32)  # sensor noise: no exact colours
    rgb = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    mask = soft > 0.5
    ys, xs = np.nonzero(mask)
    box = (float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1))
    kp, vis = keypoints(name, A, t, cfg.size)
    return rgb, mask, {"child": child, "parent": parent, "bg": bg, "box": box, "keypoints": kp, "visible": vis}


def _child_of(i: int, seed: int, K: int) -> int:
    """Exactly balanced classes: each block of K consecutive images is a random permutation
    of the K child classes. Seeded by (seed, block) under its own spawn key so it never
    shares a stream with the per-image generators."""
    b, r = divmod(i, K)
    perm = np.random.default_rng(np.random.SeedSequence([seed, b], spawn_key=(1,))).permutation(K)
    return int(perm[r])


# --------------------------------------------------------------------------- drivers
def _rel_name(i: int, n: int, cfg: SynthConfig, child: int) -> str:
    width = max(5, len(str(n - 1)))
    return f"{cfg.child_name(child)}/{i:0{width}d}.png"


_WORKER: dict = {}


def _init_worker(args):
    import signal

    # the pool ends its workers with SIGTERM, and Ctrl-C is the parent's to handle: a worker
    # must not keep the CLI's handlers (each raised and printed a traceback)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cv2.setNumThreads(1)  # the pool already uses every core; nested threads only contend
    _WORKER["args"] = args


def _render_to_disk(i: int):
    out, n, seed, cfg = _WORKER["args"]
    rgb, mask, lab = render_one(i, seed, cfg)
    rel = _rel_name(i, n, cfg, lab["child"])
    # explicit compression level: PNG bytes then depend only on the pixels and OpenCV's zlib
    params = [cv2.IMWRITE_PNG_COMPRESSION, 3]
    if not cv2.imwrite(str(out / "images" / rel), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params):
        raise FgtoolError(f"could not write {out / 'images' / rel}")
    if not cv2.imwrite(str(out / "segmentations" / rel), mask.astype(np.uint8) * 255, params):
        raise FgtoolError(f"could not write {out / 'segmentations' / rel}")
    return i, rel, lab


def _render_to_memory(i: int):
    _, _, seed, cfg = _WORKER["args"]
    rgb, mask, lab = render_one(i, seed, cfg)
    return i, rgb, mask, lab


def _run(fn, args, n: int, workers: int, progress):
    """Yield fn(i) for i in range(n), in order, on 1 or more processes."""
    step = max(1, n // 200)
    if workers == 1 or n < 64:
        prev = dict(_WORKER)
        _WORKER["args"] = args
        try:
            for i in range(n):
                yield fn(i)
                if progress and ((i + 1) % step == 0 or i + 1 == n):
                    progress(i + 1, n)
        finally:
            _WORKER.clear()
            _WORKER.update(prev)
        return
    import multiprocessing as mp

    with mp.get_context().Pool(workers, initializer=_init_worker, initargs=(args,)) as pool:
        for done, res in enumerate(pool.imap(fn, range(n), chunksize=32), 1):
            yield res
            if progress and (done % step == 0 or done == n):
                progress(done, n)


def _meta(n, seed, cfg: SynthConfig, complete: bool) -> dict:
    return {
        "generator": GENERATOR,
        "version": VERSION,
        "complete": complete,
        "n": n,
        "size": cfg.size,
        "seed": seed,
        "parents": list(PARENT_NAMES[: cfg.parents]),
        "children_per_parent": cfg.children,
        "n_children": cfg.n_children,
        "backgrounds": list(BACKGROUND_NAMES[: cfg.backgrounds]),
        "bg_corr": float(cfg.bg_corr),
        "obj_area": [float(a) for a in cfg.obj_area],
        # lists below are indexed by 0-based ids; the .txt label files are 1-based
        "child_to_parent": cfg.child_to_parent(),
        "child_names": [cfg.child_name(k) for k in range(cfg.n_children)],
        "child_appearance": [{"colour": PALETTE[h][0], "pattern": PATTERN_NAMES[p]}
                             for h, p in cfg.appearance],
        "home_background": [cfg.home_background(p) for p in range(cfg.parents)],
        # parts/part_locs.txt: point j (1-based) of each silhouette
        "keypoint_names": {name: [k for k, _ in KEYPOINTS[name]] for name in PARENT_NAMES[: cfg.parents]},
        "label_files_base": 1,
    }


def _prepare_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise FgtoolError(f"output path {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        meta_p = out / "meta.json"
        try:
            ours = json.loads(meta_p.read_text()).get("generator") == GENERATOR
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise FgtoolError(f"output directory {out} is not empty and is not a previous synth output; "
                              "choose a new or empty directory")
        # stale images from a larger previous run would otherwise linger in the class folders
        for sub in ("images", "segmentations"):
            shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def synth(out: str | Path, n: int = 6000, size: int = 64, seed: int = 0, parents: int = 4,
          children: int = 3, backgrounds: int = 3, bg_corr: float = 0.5,
          obj_area: tuple[float, float] = (0.20, 0.45), workers: int = 1,
          progress: Callable[[int, int], None] | None = None) -> dict:
    """Render the dataset to ``out`` in CUB layout and return the meta dict."""
    validate(n, size, parents, children, backgrounds, bg_corr, obj_area, workers)
    cfg = SynthConfig(int(size), int(parents), int(children), int(backgrounds), float(bg_corr),
                      (float(obj_area[0]), float(obj_area[1])))
    n, seed = int(n), int(seed)
    out = Path(out)
    _prepare_out(out)
    # meta first (marked incomplete) so an interrupted run can be re-run into the same dir
    (out / "meta.json").write_text(json.dumps(_meta(n, seed, cfg, False), indent=1))
    for k in range(cfg.n_children):
        (out / "images" / cfg.child_name(k)).mkdir(parents=True, exist_ok=True)
        (out / "segmentations" / cfg.child_name(k)).mkdir(parents=True, exist_ok=True)

    rows = [None] * n
    for i, rel, lab in _run(_render_to_disk, (out, n, seed, cfg), n, int(workers), progress):
        rows[i] = (rel, lab)

    def _write(fname, fmt):
        (out / fname).write_text("".join(fmt(i + 1, rel, lab) for i, (rel, lab) in enumerate(rows)))

    _write("images.txt", lambda i, rel, lab: f"{i} {rel}\n")
    _write("image_class_labels.txt", lambda i, rel, lab: f"{i} {lab['child'] + 1}\n")
    _write("parent_labels.txt", lambda i, rel, lab: f"{i} {lab['parent'] + 1}\n")
    _write("background_labels.txt", lambda i, rel, lab: f"{i} {lab['bg'] + 1}\n")
    _write("bounding_boxes.txt",
           lambda i, rel, lab: f"{i} " + " ".join(f"{v:.1f}" for v in lab["box"]) + "\n")
    (out / "classes.txt").write_text("".join(f"{k + 1} {cfg.child_name(k)}\n" for k in range(cfg.n_children)))
    _write_keypoints(out, rows)
    meta = _meta(n, seed, cfg, True)
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    return meta


def _write_keypoints(out: Path, rows) -> None:
    """``parts/parts.txt`` and ``parts/part_locs.txt`` in CUB's format (module doc)."""
    (out / "parts").mkdir(exist_ok=True)
    (out / "parts" / "parts.txt").write_text("".join(f"{j + 1} point{j + 1}\n" for j in range(N_KEYPOINTS)))
    lines = []
    for i, (_, lab) in enumerate(rows, 1):
        for j, ((x, y), v) in enumerate(zip(lab["keypoints"], lab["visible"]), 1):
            lines.append(f"{i} {j} {x:.2f} {y:.2f} 1\n" if v else f"{i} {j} 0.00 0.00 0\n")
    (out / "parts" / "part_locs.txt").write_text("".join(lines))


def synth_arrays(n: int, size: int = 64, seed: int = 0, parents: int = 4, children: int = 3,
                 backgrounds: int = 3, bg_corr: float = 0.5, obj_area: tuple[float, float] = (0.20, 0.45),
                 workers: int = 1, progress: Callable[[int, int], None] | None = None) -> dict:
    """The same images as :func:`synth`, in memory: ``images`` uint8 [n,H,W,3] (RGB),
    ``masks`` bool [n,H,W], 0-based int64 ``child``, ``parent``, ``bg``, ``boxes`` float32
    [n,4] (x, y, w, h), ``keypoints`` float64 [n,5,2] (x, y pixels), ``visible`` bool [n,5]
    and ``child_to_parent`` int64 [n_children]."""
    validate(n, size, parents, children, backgrounds, bg_corr, obj_area, workers)
    cfg = SynthConfig(int(size), int(parents), int(children), int(backgrounds), float(bg_corr),
                      (float(obj_area[0]), float(obj_area[1])))
    n = int(n)
    res = {
        "images": np.zeros((n, size, size, 3), np.uint8),
        "masks": np.zeros((n, size, size), bool),
        "child": np.zeros(n, np.int64),
        "parent": np.zeros(n, np.int64),
        "bg": np.zeros(n, np.int64),
        "boxes": np.zeros((n, 4), np.float32),
        "keypoints": np.zeros((n, N_KEYPOINTS, 2), np.float64),
        "visible": np.zeros((n, N_KEYPOINTS), bool),
    }
    for i, rgb, mask, lab in _run(_render_to_memory, (None, n, int(seed), cfg), n, int(workers), progress):
        res["images"][i], res["masks"][i] = rgb, mask
        res["child"][i], res["parent"][i], res["bg"][i] = lab["child"], lab["parent"], lab["bg"]
        res["boxes"][i] = lab["box"]
        res["keypoints"][i], res["visible"][i] = lab["keypoints"], lab["visible"]
    res["child_to_parent"] = np.array(cfg.child_to_parent(), np.int64)
    return res
