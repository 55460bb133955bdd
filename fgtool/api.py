"""One plain function per CLI command. They return results and never print; the CLI
and the tests call the same functions."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from . import checkpoint as ckpt
from . import config as C
from . import registry
from .backends.base import CentroidClusterer, ObjectRemover, PartSegmenter
from .data.evalset import batches as _batches
from .data.evalset import box_mode as _box_mode
from .data.evalset import eval_set as _eval_set
from .data.evalset import view_region as _view_region
from .errors import FgtoolError
from .io.paths import check_output, member
from .loading import Loaded, load
from .loading import require_segmenter as _require_segmenter

Progress = Callable[[str, int, int], None] | None  # (task, done, total)


# ----------------------------------------------------------------------------- config


def resolve_config(model: str | None = None, data: str | None = None, recipe: str | None = None,
                   sets: list[str] | None = None) -> C.RunConfig:
    raw = C.merge(C.load_recipe(recipe), C.parse_set(sets))
    if data:
        raw.setdefault("data", {})["root"] = str(data)
    if model:
        raw.setdefault("model", {})
        recipe_model = raw["model"].get("name")
        if recipe_model and recipe_model != model:
            raise FgtoolError(f"--model {model} but the recipe is for '{recipe_model}'")
    cfg = C.resolve(raw, model=model)
    C.validate(cfg)
    return cfg


# ----------------------------------------------------------------------------- train


def train(model: str | None = None, data: str | None = None, recipe: str | None = None,
          sets: list[str] | None = None, out: str | None = None, resume: bool = False,
          dry_run: bool = False, progress: bool = True) -> dict:
    stored = None
    if resume:
        if not out:
            raise FgtoolError("--resume needs --out RUN_FOLDER")
        cfg, stored = _resume_config(Path(out), sets, model, data, recipe)
    else:
        cfg = resolve_config(model, data, recipe, sets)
    if dry_run:
        if out and cfg.data.root:  # the same path rule as the run itself
            check_output(out, [cfg.data.root], folder=True)
        return cfg.to_dict()
    if not cfg.data.root:
        raise FgtoolError("no training data: pass --data DIR (or set data.root in the recipe)")
    cfg.data.root = str(Path(cfg.data.root).expanduser().resolve())  # resumable from any folder
    run = Path(out) if out else Path("runs") / cfg.model
    check_output(run, [cfg.data.root], what="--out" if out else "run folder", folder=True)
    if run.exists() and not run.is_dir():
        raise FgtoolError(f"--out {run} is a file, not a run folder")
    if not resume and run.exists() and not _restartable(run):
        raise FgtoolError(f"run folder {run} is not empty; pass --resume to continue it, or choose another --out")

    from .data.datasets import ImageDataset, fingerprint, fingerprint_change, make_loader, scan

    d, t = cfg.data, cfg.train
    imageset = scan(d.root, split=d.split or None, max_images=d.max_images, skip_bad=d.skip_bad)
    if len(imageset.records) < t.batch_size:
        raise FgtoolError(f"only {len(imageset.records)} images in {d.root}, fewer than "
                          f"train.batch_size={t.batch_size}")
    fp = fingerprint(imageset)
    if stored and (change := fingerprint_change(stored, fp)) and not d.allow_changed:
        raise FgtoolError(f"the data changed since {run} was trained ({change} in {d.root}); resume it on "
                          "the same data, or pass --set data.allow_changed=true to train on from here on this data")
    d.allow_changed = False  # a one-off consent, never stored for the next resume
    ds = ImageDataset(imageset, d.size, train=True, box_mode=_box_mode(cfg), crop_scale=d.crop_scale,
                      crop_clip=d.crop_clip,
                      pseudo_border=d.pseudo_border, flip=d.flip, seed=t.seed, skip_bad=d.skip_bad,
                      bg_crops=d.bg_crops, bg_crop_min=d.bg_crop_min)
    from .train.lock import RunLock

    run.mkdir(parents=True, exist_ok=True)
    lock = RunLock(run) if int(os.environ.get("RANK", "0")) == 0 else None  # one writer per run folder
    if lock:
        lock.acquire()
    try:
        if resume and not (run / "last.pt").exists():  # the holder of the lock may have moved it
            raise FgtoolError(f"nothing to resume in {run}: no last.pt")
        # the resolved config lands before step 0 (and again on resume: steps may have grown)
        ckpt.atomic_write_text(run / "config.json", cfg.to_json() + "\n")

        from .train.trainer import Trainer

        trainer = Trainer(cfg, run, resume=resume, progress=progress)
        trainer.data_fingerprint = fp

        def loader_fn(start_step, rank, world):
            return make_loader(ds, t.batch_size, seed=t.seed, start_step=start_step, workers=d.workers,
                               rank=rank, world_size=world)

        try:
            summary = trainer.fit(loader_fn)
        finally:
            trainer.close()
    finally:
        if lock:
            lock.release()
    summary["images"] = len(imageset.records)
    summary["layout"] = imageset.layout
    return summary


# what a run writes before its first checkpoint (fgtool's temp files start with a dot)
_RUN_OWN = {"config.json", "metrics.jsonl", "loss_curve.png", "grids", ".lock"}


def _restartable(run: Path) -> bool:
    """An empty folder, or a run that died before its first checkpoint: only fgtool's own
    files, and a config.json that is an fgtool config. Anything else (a user's files,
    checkpoints) is never overwritten."""
    entries = list(run.iterdir())
    if not entries:
        return True
    own = all(e.name in _RUN_OWN or (e.name.startswith(".") and e.name.endswith(".tmp")) for e in entries)
    if not own or any(e.suffix == ".pt" for e in entries):
        return False
    cfg_path = run / "config.json"
    if not cfg_path.exists():
        return all(e.name.startswith(".") for e in entries)  # only temp files of a killed first write
    try:
        raw = json.loads(cfg_path.read_text())
        return isinstance(raw, dict) and {"model", "data", "train"} <= set(raw)
    except (OSError, ValueError):
        return False


def _resume_config(run: Path, sets, model, data, recipe) -> C.RunConfig:
    if recipe:
        raise FgtoolError("--resume continues a run with its own config; drop --recipe (use --set train.steps=N)")
    ck_path = run / "last.pt"
    if not ck_path.exists():
        raise FgtoolError(f"nothing to resume in {run}: no last.pt")
    ck = ckpt.load(ck_path)
    raw = ck["config"]
    over = C.parse_set(sets)
    for section, values in over.items():
        for key in values:
            if section != "train" and not (section == "data" and key in _RESUME_DATA_KEYS):
                raise FgtoolError(f"cannot change {section}.{key} when resuming; only train.* keys, "
                                  f"{', '.join('data.' + k for k in _RESUME_DATA_KEYS)}")
    if model and model != raw["model"]["name"]:
        raise FgtoolError(f"--model {model} but {ck_path} holds '{raw['model']['name']}'")
    raw["data"]["allow_changed"] = False  # a one-off: an earlier resume's consent is not this one's
    raw = C.merge(raw, over)
    if data:
        raw["data"]["root"] = str(data)
    cfg = C.resolve(raw)
    C.validate(cfg)
    stored = ck["extra"].get("data")
    return cfg, (stored if isinstance(stored, dict) else None)


_RESUME_DATA_KEYS = ("workers", "root", "skip_bad", "allow_changed")


def info(ckpt_path: str) -> dict:
    m = load(ckpt_path, device="cpu")
    # count every net the model trains, discriminators included (load keeps only inference nets)
    params = {k: sum(p.numel() for p in v.parameters()) for k, v in m.backend.build().items()}
    return {"checkpoint": str(ckpt_path), "model": m.cfg.model, "step": m.step,
            "capabilities": m.backend.capabilities(), "params": params,
            "format_version": ckpt.VERSION, "config": m.cfg.to_dict()}


# ----------------------------------------------------------------------------- option domains


def check_count(value, option: str, lo: int = 1, hi: int | None = None) -> None:
    """A count option (``--n``, ``--frames``, ``--k`` ...) inside its domain, before any work."""
    if value is None:
        return
    if value < lo or (hi is not None and value > hi):
        rng = f"in {lo}..{hi}" if hi is not None else f">= {lo}"
        raise FgtoolError(f"{option} must be {rng}, got {value}")


def check_seed(seed: int, option: str = "--seed") -> None:
    check_count(seed, option, 0, C.SEED_MAX)


MAX_SAMPLES = 4096  # sample --n: a grid of 4096 images is 64 x 64 cells; more is a typo


# ----------------------------------------------------------------------------- sample


def parse_fix(items: list[str] | None) -> dict[str, int]:
    out = {}
    for it in items or []:
        if "=" not in it:
            raise FgtoolError(f"--fix expects code=value (e.g. p=3), got {it!r}")
        k, v = it.split("=", 1)
        try:
            out[k.strip()] = int(v)
        except ValueError:
            raise FgtoolError(f"--fix {k}: expected an integer, got {v!r}") from None
    return out


def sample(ckpt_path: str, out: str, n: int = 64, seed: int = 0, fix: list[str] | None = None,
           vary: str | None = None, grids: bool = True, like: list[str] | None = None) -> dict:
    """Write a sample grid (with ``--fix``/``--vary`` control) and the backend's named grids."""
    from .io.images import save_grid

    check_count(n, "--n", 1, MAX_SAMPLES)
    check_seed(seed)
    outp = Path(out)
    folder = outp.parent if outp.suffix.lower() == ".png" else outp
    main_png = outp if outp.suffix.lower() == ".png" else outp / "samples.png"
    check_output(folder, [ckpt_path, *(like or [])], folder=True, holds=False)
    check_output(main_png, [ckpt_path, *(like or [])])
    m = load(ckpt_path)
    m.backend.require("sample")
    g = torch.Generator().manual_seed(seed)  # the grids' writers make the folder: not before the options pass
    fixed = parse_fix(fix)
    sizes = m.backend.code_sizes()
    for k in fixed:
        if k not in sizes or sizes[k] == 0:
            raise FgtoolError(f"--fix {k}: categorical codes of {m.cfg.model} are "
                              f"{', '.join(c for c, s in sizes.items() if s)}")
    written = {}
    with torch.no_grad():
        if vary:
            if vary not in sizes:
                raise FgtoolError(f"--vary {vary}: codes of {m.cfg.model} are {', '.join(sizes)}")
            images, nrow, rl, cl = _vary_grid(m, g, fixed, vary, n)
        else:
            codes = m.backend.sample_codes(n, g, **fixed)
            images, nrow, rl, cl = m.backend.generate(m.nets, codes)["image"], 8, None, None
        save_grid(images.float().cpu(), main_png, nrow=nrow, row_labels=rl, col_labels=cl)
        written["samples"] = str(main_png)
        if like:
            p = folder / "like.png"
            _like_grid(m, like, g, p)
            written["like"] = str(p)
        if grids:
            for name, grid in m.backend.grids(m.nets, g, "all").items():
                if name == "samples":
                    continue
                p = folder / f"{name}.png"
                save_grid(grid.images.float().cpu(), p, nrow=grid.nrow, row_labels=grid.row_labels,
                          col_labels=grid.col_labels)
                written[name] = str(p)
    return {"checkpoint": str(ckpt_path), "step": m.step, "n": n, "seed": seed, "fix": fixed,
            "vary": vary, "files": written}


def _like_grid(m: Loaded, paths: list[str], g: torch.Generator, out: Path, ncol: int = 8) -> None:
    """Paper Fig. 4a: each real image (first column), then images generated from the
    cluster it is assigned to."""
    from .data.datasets import ImageDataset, scan
    from .io.images import save_grid

    if not isinstance(m.backend, CentroidClusterer):
        raise FgtoolError(f"--like needs a model that assigns images to clusters; {m.cfg.model} does not")
    d = m.cfg.data
    rows, labels = [], []
    for p in paths:
        ds = ImageDataset(scan(p), d.size, train=False, box_mode=_box_mode(m.cfg), crop_scale=d.crop_scale,
                          crop_clip=d.crop_clip, pseudo_border=d.pseudo_border, flip=False)
        x = ds[0]["image"][None].to(m.device)
        idx, conf = m.backend.assign(m.nets, x)
        codes = m.backend.sample_codes(ncol, g, c=int(idx[0]))
        fake = m.backend.generate(m.nets, codes)["image"].float().cpu()
        rows.append(torch.cat([x.float().cpu(), fake]))
        labels.append(f"c={int(idx[0])} p={float(conf[0]):.2f}")
    save_grid(torch.cat(rows), out, nrow=ncol + 1, row_labels=labels,
              col_labels=["real"] + [f"z{j}" for j in range(ncol)])


def _vary_grid(m: Loaded, g, fixed: dict, vary: str, n: int):
    """Rows: independent draws of the other codes; columns: values of ``vary``."""
    sizes = m.backend.code_sizes()
    card = sizes[vary]
    vals = None
    if card == 0:
        ncol = 8
    else:
        # only values of `vary` that keep the fixed codes (--fix p=1 --vary c: p's children);
        # a backend may derive one code from another, and the derived one would win silently
        def agrees(v: int) -> bool:
            c1 = m.backend.sample_codes(1, torch.Generator().manual_seed(0), **{**fixed, vary: v})
            want = {**fixed, vary: v}
            return all(int(c1[k][0]) == fv for k, fv in want.items() if k in c1)

        ok = [v for v in range(card) if agrees(v)]
        if not ok:
            raise FgtoolError(f"--vary {vary}: no value of {vary} is compatible with --fix "
                              f"{', '.join(f'{k}={v}' for k, v in fixed.items())}")
        ncol = min(len(ok), 10)
        vals = torch.tensor(ok[:ncol])
    rows = max(1, min(8, n // ncol))
    base = m.backend.sample_codes(rows, g, **fixed)
    codes = {k: v.repeat_interleave(ncol, 0) for k, v in base.items()}
    if card == 0:
        codes[vary] = torch.randn(ncol, base[vary].shape[1], generator=g).repeat(rows, 1)
        cl = [f"{vary}{j}" for j in range(ncol)]
    else:
        codes = m.backend.sample_codes(rows * ncol, g, **{**fixed, vary: vals.repeat(rows)},
                                       **{k: codes[k] for k in ("z",) if k in codes and k != vary})
        cl = [f"{vary}={int(v)}" for v in vals]
    rl = [f"row {i}" for i in range(rows)]
    return m.backend.generate(m.nets, codes)["image"], ncol, rl, cl


# ----------------------------------------------------------------------------- features / cluster


@torch.no_grad()
def features(m: Loaded, data: str, split: str | None = None, max_images: int = 0, workers: int = 2,
             progress: Progress = None) -> tuple[Any, dict[str, np.ndarray]]:
    m.backend.require("cluster")
    imageset, ds = _eval_set(m, data, split, max_images)
    feats: dict[str, list] = {}
    done = 0
    direct = isinstance(m.backend, CentroidClusterer)
    for batch in _batches(ds, workers=workers):
        x = batch["image"].to(m.device)
        fb = m.backend.cluster_features(m.nets, x)
        for k, v in fb.items():
            feats.setdefault(k, []).append(v.float().cpu().numpy())
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
    from .metrics.clustering import kmeans

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
    from .metrics.clustering import cluster_metrics

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


def _sheet_paths(out) -> tuple[Path, Path]:
    """(folder of per-cluster sheets, overview PNG) beside the clusters JSON ``out``."""
    outp = Path(out)
    sheet_dir = outp.with_suffix("")
    return sheet_dir.parent / f"{sheet_dir.name}_sheets", outp.parent / f"{outp.stem}.png"


def _cluster_outputs(out, inputs: list, sheets: bool = True) -> None:
    check_output(out, inputs)
    if sheets:
        sheet_dir, overview = _sheet_paths(out)
        check_output(sheet_dir, inputs, folder=True, holds=False)
        check_output(overview, inputs)


def _write_clusters(imageset, pred: np.ndarray, out: str, k: int, extra: dict, sheets: bool = True,
                    conf: np.ndarray | None = None) -> dict:
    from .io.images import contact_sheet

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
        order = np.argsort(-np.bincount(pred, minlength=k))
        sheet_dir, overview = _sheet_paths(outp)
        sheet_dir.mkdir(parents=True, exist_ok=True)
        rank = np.argsort(-conf, kind="stable") if conf is not None else np.arange(len(pred))
        paths_by = {c: [imageset.records[i].path for i in rank if pred[i] == c] for c in range(k)}
        for c in range(k):
            if paths_by[c]:
                contact_sheet(paths_by[c][:32], sheet_dir / f"cluster_{c:03d}.png", ncol=8, size=48)
        # overview: the 24 largest clusters, 8 members each, one row per cluster
        rows, labels = [], []
        for c in order[:24]:
            mem = paths_by[int(c)][:8]
            if not mem:
                continue
            rows.extend(mem + [None] * (8 - len(mem)))
            labels.append(f"#{int(c)} n={len(paths_by[int(c)])}")
        contact_sheet(rows, overview, ncol=8, size=48, labels=labels)
        result["overview"] = str(overview)
        result["sheets"] = str(sheet_dir)
    return result


# ----------------------------------------------------------------------------- eval


CLUSTER_METRICS = {"nmi", "nmi_max", "acc", "ari"}
GEN_METRICS = {"fid", "kid"}
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
    from .metrics.clustering import cluster_metrics, pixel_kmeans_floor

    names = [x.strip().lower() for x in metrics.split(",") if x.strip()]
    known = CLUSTER_METRICS | GEN_METRICS | SEG_METRICS | MIX_METRICS | REMOVAL_METRICS | PART_METRICS \
        | LANDMARK_METRICS
    bad = [x for x in names if x not in known]
    if bad or not names:
        raise FgtoolError(f"unknown metric {', '.join(bad) or '(none)'}; choose from {', '.join(sorted(known))}")
    sources = [s for s in (ckpt_path, pred, baseline) if s]
    if len(sources) != 1:
        raise FgtoolError("pass exactly one of --ckpt, --pred or --baseline")
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
            imageset, y_pred = _read_pred(pred, data, split)
            result["source"] = str(pred)
        elif baseline:
            if baseline != "pixels":
                raise FgtoolError(f"--baseline {baseline} scores masks; clustering metrics take --baseline pixels")
            from .data.datasets import scan

            imageset = scan(data, split=split, max_images=max_images)
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
            raise FgtoolError("fid/kid need --ckpt (they score generated images)")
        result["metrics"].update(_fid(ckpt_path, data, split, n_fake, inception, seed, workers))
    seg = [x for x in names if x in SEG_METRICS]
    if seg and baseline == "centre":
        from .metrics.centre import centre_floor

        result["metrics"].update(centre_floor(data, split, max_images, progress))
        result["source"] = BASELINES["centre"]
    elif seg:
        if not ckpt_path:
            raise FgtoolError("iou/dice need --ckpt of a model that can segment (or --baseline centre)")
        result["metrics"].update(_seg_eval(ckpt_path, data, split, max_images, workers, refine, tta))
    if "mix" in names:
        if not ckpt_path:
            raise FgtoolError("mix needs --ckpt of a model that can mix")
        from .metrics.mix import mix_fidelity

        result["metrics"].update(mix_fidelity(load(ckpt_path), data, n_pairs=n_fake, seed=seed, progress=progress))
    if "removal" in names:
        if not ckpt_path:
            raise FgtoolError("removal needs --ckpt of a model that can remove objects")
        from .metrics.removal import removal_error

        _check_fill(fill)
        result["metrics"].update(removal_error(load(ckpt_path), data, split=split, max_images=max_images,
                                               workers=workers, fill=fill))
    if "parts" in names:
        if not ckpt_path:
            raise FgtoolError("parts needs --ckpt of a model with a part segmenter")
        from .metrics.parts import part_consistency

        result["metrics"].update(part_consistency(load(ckpt_path), data, split=split, max_images=max_images,
                                                  workers=workers, progress=progress))
    if "landmarks" in names:
        if not ckpt_path:
            raise FgtoolError("landmarks needs --ckpt of a model with part centres")
        if split is not None:
            raise FgtoolError("landmarks fits on the train split and scores on the test split; drop --split")
        from .metrics.landmarks import landmark_regression

        result["metrics"].update(landmark_regression(load(ckpt_path), data, keypoints=keypoints, eyes=eyes,
                                                     max_images=max_images, workers=workers, seed=seed,
                                                     progress=progress))
    return result


def _read_pred(pred: str, data: str, split):
    import warnings

    from .data.datasets import scan
    from .io.paths import check_regular_input

    p = Path(pred)
    if not p.exists():
        raise FgtoolError(f"predictions not found: {pred}")
    check_regular_input(p, "--pred")
    try:
        doc = json.loads(p.read_text())
        items = doc["items"] if isinstance(doc, dict) else doc
        by_path = {str(Path(it["path"]).resolve()): _cluster_id(it["cluster"], pred) for it in items}
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        raise FgtoolError(f"{pred} is not a clusters JSON (expected items with path and cluster)") from None
    imageset = scan(data, split=split)
    keep = [i for i, r in enumerate(imageset.records) if str(Path(r.path).resolve()) in by_path]
    if not keep:
        raise FgtoolError(f"none of the images in {pred} are in {data}")
    if len(keep) < len(imageset.records):  # scores of a part are not scores of the set: say so
        warnings.warn(f"{pred} covers {len(keep)} of the {len(imageset.records)} images in {data}; "
                      f"scoring those {len(keep)} only", stacklevel=2)
    imageset = imageset.subset(keep)
    y_pred = np.array([by_path[str(Path(r.path).resolve())] for r in imageset.records])
    return imageset, y_pred


def _cluster_id(v, pred) -> int:
    """A cluster id from a clusters JSON: an integer (3 or 3.0), never a truncated 1.5 or a bool."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not v.is_integer()) \
            or v < 0:
        raise FgtoolError(f"{pred}: cluster id {v!r} is not a non-negative integer")
    return int(v)


def _load_small(imageset, size: int, progress: Progress = None) -> np.ndarray:
    from .io.images import load_image

    out = np.zeros((len(imageset.records), size, size, 3), np.uint8)
    for i, r in enumerate(imageset.records):
        out[i] = np.asarray(load_image(r.path).resize((size, size), resample=2))
        if progress and i % 200 == 0:
            progress("load", i, len(imageset.records))
    return out


def _fid(ckpt_path, data, split, n_fake, inception, seed, workers) -> dict:
    from .metrics.fid import InceptionFeatures, fid_kid, resolve_inception_weights

    resolve_inception_weights(inception)  # clear error before any work
    m = load(ckpt_path)
    model = InceptionFeatures(inception).to(m.device)
    _, ds = _eval_set(m, data, split)
    g = torch.Generator().manual_seed(seed)

    def fakes():
        left = n_fake
        while left > 0:
            b = min(50, left)
            with torch.no_grad():
                yield m.backend.generate(m.nets, m.backend.sample_codes(b, g))["image"].float().cpu()
            left -= b

    reals = (b["image"] for b in _batches(ds, 50, workers))
    return fid_kid(reals, fakes(), model, device=str(m.device), kid_subset_size=min(1000, n_fake))


REFINE = ("none", "grabcut")
TTA = ("none", "flip")


def _check_mask_options(refine: str, tta: str = "none") -> None:
    if refine not in REFINE:
        raise FgtoolError(f"--refine must be one of {', '.join(REFINE)}, got {refine!r}")
    if tta not in TTA:
        raise FgtoolError(f"--tta must be one of {', '.join(TTA)}, got {tta!r}")


FILL = ("gan", "inpaint")


def _check_fill(fill: str) -> None:
    if fill not in FILL:
        raise FgtoolError(f"--fill must be one of {', '.join(FILL)}, got {fill!r}")


def _masks(m: "Loaded", x: torch.Tensor, tta: str = "none"):
    """(fg [N,1,H,W], part probabilities [N,K+1,H,W] or None) of the images ``x``.
    ``tta="flip"``: the mean of the maps of ``x`` and of its mirror image, mirrored back."""
    from .nn.refine import flip_average

    parts = isinstance(m.backend, PartSegmenter)
    seg = m.backend.segment_parts if parts else m.backend.segment

    def fn(v):
        return seg(m.nets, v).float()

    maps = flip_average(fn, x) if tta == "flip" else fn(x)
    return (1.0 - maps[:, -1:], maps) if parts else (maps, None)


def _refined(x: torch.Tensor, fg: torch.Tensor, probs: torch.Tensor | None, refine: str):
    """(fg [N,1,H,W], probs) after ``refine``: "grabcut" redraws each mask's edge by the
    photo's colours (:func:`fgtool.nn.refine.grabcut_refine`, a 1/16-size band either
    side); part maps keep their argmax inside the new mask and turn background outside."""
    if refine == "none":
        return fg, probs
    from .nn.refine import grabcut_refine

    hard = grabcut_refine(x, fg[:, 0], band=max(1, x.shape[-1] // 16)).to(fg.device)
    fg = hard.float()[:, None]
    if probs is not None:
        probs = torch.cat([probs[:, :-1] * fg, 1.0 - fg], 1)
    return fg, probs


def _seg_eval(ckpt_path, data, split, max_images, workers, refine: str = "none", tta: str = "none") -> dict:
    from .metrics.segmentation import seg_metrics

    _check_mask_options(refine, tta)
    m = load(ckpt_path)
    _require_segmenter(m)
    imageset, ds = _eval_set(m, data, split, max_images, with_masks=True)
    if not imageset.has_masks:
        raise FgtoolError(f"{data} has no segmentations/ to score against")
    preds, gts = [], []
    with torch.no_grad():
        for b in _batches(ds, 64, workers):
            x = b["image"].to(m.device)
            preds.append(_refined(x, _masks(m, x, tta)[0], None, refine)[0].cpu())
            gts.append(b["mask"])
    bgs = [r.bg for r in imageset.records]
    if all(b < 0 for b in bgs):
        return seg_metrics(torch.cat(preds)[:, 0] > 0.5, torch.cat(gts)[:, 0] > 0.5)
    # background labels known (the synthetic set): where the masks fail, by background class
    names, classes = None, None
    try:
        meta = json.loads((imageset.root / "meta.json").read_text())
        names, classes = meta.get("backgrounds"), meta.get("child_names")
    except (OSError, ValueError, AttributeError):
        pass
    pred, gt = torch.cat(preds)[:, 0] > 0.5, torch.cat(gts)[:, 0] > 0.5
    res = seg_metrics(pred, gt, groups=bgs, names=names)
    res["iou_by_background"] = res.pop("iou_by_group")
    if names and classes:  # the synthetic set: which class on which background fails
        labels = [r.label for r in imageset.records]
        nb = len(names)
        cells = [c * nb + b if c >= 0 and b >= 0 else -1 for c, b in zip(labels, bgs)]
        res["iou_by_class_background"] = seg_metrics(
            pred, gt, groups=cells, names=[f"{c}/{b}" for c in classes for b in names])["iou_by_group"]
    return res


# ----------------------------------------------------------------------------- gif


def gif(ckpt_path: str, out: str, walk: str = "z", frames: int = 24, n: int = 8, seed: int = 0,
        fps: int = 8, frames_dir: str | None = None, image: str | None = None, source: str | None = None,
        max_size: int = 256) -> dict:
    """A latent walk: a row of ``n`` samples whose ``walk`` code moves smoothly (z: spherical
    interpolation through random points) or steps through its values (categorical codes).
    With ``image`` and ``source``: img2gif (:func:`fgtool.mixing.img2gif`)."""
    from torchvision.utils import make_grid

    from .io.gif import write_gif

    if image or source:
        check_count(frames, "--frames", 0, MAX_FRAMES)  # 0: every frame of the source
    else:
        check_count(frames, "--frames", 1, MAX_FRAMES)
        check_count(n, "--n", 1, MAX_GIF_N)
    check_count(fps, "--fps", 1, 100)  # GIF frame delays are in 1/100 s
    check_count(max_size, "--max-size", 0)
    check_seed(seed)
    inputs = [ckpt_path, image, source]
    check_output(out, inputs)
    if frames_dir:
        check_output(frames_dir, inputs, what="--frames-dir", folder=True, holds=False)
    m = load(ckpt_path)
    if image or source:
        from .mixing import img2gif

        return img2gif(m, image, source, out, frames=frames, fps=fps, max_size=max_size, frames_dir=frames_dir)
    m.backend.require("gif")
    sizes = m.backend.code_sizes()
    if walk not in sizes:
        raise FgtoolError(f"--walk {walk}: codes of {m.cfg.model} are {', '.join(sizes)}")
    g = torch.Generator().manual_seed(seed)
    base = m.backend.sample_codes(n, g)
    seq = []
    if sizes[walk] == 0:
        keys = [base[walk]] + [torch.randn(base[walk].shape, generator=g) for _ in range(3)] + [base[walk]]
        # a closed loop through random points: exactly ``frames`` frames, the last leading back
        for u in np.linspace(0, len(keys) - 1, frames, endpoint=False):
            i, t = int(u), float(u - int(u))
            seq.append({**base, walk: _slerp(keys[i], keys[i + 1], t)})
    else:
        # keep z and the other categorical codes; a fresh generator per frame keeps any
        # code the backend derives (a child under a walked parent) the same across frames
        keep = {k: v for k, v in base.items() if k == "z" or (k == "b" and walk != "b") or
                (k == "c" and walk == "b")}
        for v in range(min(sizes[walk], frames)):
            seq.append(m.backend.sample_codes(n, torch.Generator().manual_seed(seed + 1), **{**keep, walk: v}))
    imgs = []
    with torch.no_grad():
        for codes in seq:
            x = m.backend.generate(m.nets, codes)["image"].float().cpu()
            if x.shape[-1] < 96:  # small models: nearest-upscale so a GIF viewer shows something
                k = -(-96 // x.shape[-1])
                x = torch.nn.functional.interpolate(x, scale_factor=k, mode="nearest")
            imgs.append(make_grid(x, nrow=n, padding=2, value_range=(-1, 1), normalize=True) * 2 - 1)
    p = write_gif(imgs, out, fps=fps)
    res = {"gif": str(p), "frames": len(imgs), "walk": walk, "n": n}
    if frames_dir:  # every frame as a PNG too, for slides or ffmpeg
        from .io.images import save_image

        for i, im in enumerate(imgs):
            save_image(im, Path(frames_dir) / f"frame_{i:04d}.png")
        res["frames_dir"] = str(frames_dir)
    return res


MAX_FRAMES = 10_000  # gif --frames: over five minutes at 30 fps
MAX_GIF_N = 64  # gif --n: samples side by side


def _slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    an, bn = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    omega = torch.acos((an * bn).sum(1, keepdim=True).clamp(-1 + 1e-6, 1 - 1e-6))
    so = torch.sin(omega)
    return torch.sin((1 - t) * omega) / so * a + torch.sin(t * omega) / so * b


# ----------------------------------------------------------------------------- other commands


def _mask_names(imageset) -> list[Path]:
    """Output names: the image's path relative to the data root (CUB: to images/), as .png;
    two images that would share a name (a.jpg, a.png) keep their extension (a.jpg.png)."""
    base = imageset.root / "images" if imageset.layout == "cub" else imageset.root
    rels = []
    for r in imageset.records:
        p = Path(r.path)
        try:
            rels.append(p.relative_to(base))
        except ValueError:
            rels.append(Path(p.name))
    stems = [r.with_suffix(".png") for r in rels]
    dup = {s for s in stems if stems.count(s) > 1}
    return [r.with_name(r.name + ".png") if s in dup else s for r, s in zip(rels, stems)]


def _part_palette(k: int) -> list[int]:
    """PNG palette: index 0 = background (black), index j + 1 = part j (``PART_PALETTE[j]``)."""
    from .io.images import PART_PALETTE

    flat = [0, 0, 0]
    for j in range(k):
        flat += list(PART_PALETTE[j % len(PART_PALETTE)])
    return flat + [0, 0, 0] * (256 - k - 1)


def _check_segment_outputs(outp: Path, names: list[Path], parts: bool, remove_object: bool, points: bool):
    from .io.paths import check_replaceable

    files = [outp / "overlay.png", outp / "index.json"]
    files += [outp / "parts_overlay.png"] if parts else []
    files += [outp / "points.json"] if points else []
    for rel in names:
        files.append(outp / rel)
        if remove_object:
            files.append(member(outp, rel.with_name(rel.stem + "_bg.png"), "mask name"))
        if parts:
            files.append(member(outp / "parts", rel, "mask name"))
    for f in files:
        check_replaceable(f, "output")


def segment(ckpt_path: str, data: str, out: str, parts: bool = False, points: bool = False,
            batch_size: int = 32, split: str | None = None, max_images: int = 0, workers: int = 2,
            progress: Progress = None, remove_object: bool = False, refine: str = "none", tta: str = "none",
            fill: str = "gan") -> dict:
    """Foreground masks of real photos, one PNG per image (0/255, the photo's own size,
    same relative name) under ``out``, an ``overlay.png`` contact sheet and ``index.json``.
    ``parts``: also part-index PNGs under ``out/parts/`` (palette: 0 background, j + 1 part
    j) and ``parts_overlay.png``. ``points``: part centres (centres of mass of the part
    maps) drawn on the sheets and written to ``points.json`` in the photo's pixels.
    ``refine="grabcut"``: each mask's edge redrawn by the photo's colours (:func:`_refined`).
    ``tta="flip"``: the maps are the mean over the photo and its mirror image (:func:`_masks`).
    ``remove_object``: also NAME_bg.png, the photo with its object removed (``fill``: "gan", the
    model's background generator, or "inpaint", the photo filled in inside its mask)."""
    from PIL import Image

    from .io.images import (
        contact_sheet,
        draw_points,
        image_size,
        mask_contour,
        mask_overlay,
        part_overlay,
        save_image,
        to_pil,
    )

    _check_mask_options(refine, tta)
    _check_fill(fill)
    m = load(ckpt_path)
    _require_segmenter(m)
    name = m.cfg.model
    if parts and not isinstance(m.backend, PartSegmenter):
        raise FgtoolError(f"--parts: model '{name}' segments the foreground only")
    if points and not isinstance(m.backend, PartSegmenter):
        raise FgtoolError(f"--points: model '{name}' has no parts to place points on")
    if remove_object and not isinstance(m.backend, ObjectRemover):
        raise FgtoolError(f"--remove-object: model '{name}' has no background generator for real photos")
    outp = Path(out)
    if outp.exists() and not outp.is_dir():
        raise FgtoolError(f"--out {outp} is a file, not a folder")
    check_count(batch_size, "--batch-size", 1, 4096)  # 4096 photos of 128 px: 800 MB of input alone
    check_count(max_images, "--max-images", 0)
    imageset, ds = _eval_set(m, data, split, max_images)
    # every output is named and checked before the first is written: inside --out, never over
    # an input, never through a symlink out of --out, only over regular files
    check_output(outp, [data], folder=True)
    check_output(outp, [ckpt_path], folder=True, holds=False)  # masks are PNGs: beside last.pt is fine
    names = [member(outp, n, "mask name") for n in _mask_names(imageset)]
    names = [n.relative_to(outp) for n in names]
    _check_segment_outputs(outp, names, parts, remove_object, points)
    k = m.backend.n_parts() if isinstance(m.backend, PartSegmenter) else 0
    pal = _part_palette(k) if parts else None
    sheet_fg, sheet_parts, items, pts_doc = [], [], [], {}
    done, n_sheet = 0, 64
    with torch.no_grad():
        for batch in _batches(ds, batch_size, workers):
            x = batch["image"].to(m.device)
            fg, probs = _refined(x, *_masks(m, x, tta), refine)
            bgs = m.backend.remove_object(m.nets, x, fill=fill).float().cpu() if remove_object else None
            cen = m.backend.part_centres(probs) if points else None
            xs, fg, probs = x.float().cpu(), fg.cpu(), probs.cpu() if probs is not None else None
            for i in range(x.shape[0]):
                j = done + i
                rec, rel = imageset.records[j], names[j]
                w, h = image_size(rec.path)
                l, t, r, b = _view_region(ds, rec, w, h)  # the crop the model saw, in the photo's pixels
                side = (max(1, round(r - l)), max(1, round(b - t)))
                at = (round(l), round(t))
                prob = Image.fromarray((fg[i, 0].clamp(0, 1).numpy() * 255).round().astype(np.uint8), "L")
                on = prob.resize(side, Image.BILINEAR).point(lambda v: 255 if v >= 128 else 0)
                canvas = Image.new("L", (w, h), 0)
                canvas.paste(on, at)
                mpath = save_image(canvas, outp / rel)
                item = {"image": str(rec.path), "mask": str(mpath),
                        "fg_fraction": round(float((fg[i] > 0.5).float().mean()), 4)}
                if bgs is not None:  # the object removed: the background generator's view of the crop
                    bimg = to_pil(bgs[i]).resize(side, Image.BICUBIC)
                    item["background"] = str(save_image(bimg, outp / rel.with_name(rel.stem + "_bg.png")))
                if parts:
                    lab = probs[i].argmax(0)
                    idx = torch.where(lab == k, torch.zeros_like(lab), lab + 1).to(torch.uint8).numpy()
                    pim = Image.fromarray(idx, "P").resize(side, Image.NEAREST)
                    pc = Image.new("P", (w, h), 0)
                    pc.putpalette(pal)
                    pc.paste(pim, at)
                    pc.putpalette(pal)
                    item["parts"] = str(save_image(pc, outp / "parts" / rel))
                if points:
                    c = cen[i].cpu()
                    pix = [None if not bool(torch.isfinite(q).all()) else
                           [round(l + (float(q[0]) + 1) / 2 * side[0], 2),
                            round(t + (float(q[1]) + 1) / 2 * side[1], 2)] for q in c]
                    item["points"] = pix
                    pts_doc[str(rel)] = pix
                items.append(item)
                if len(sheet_fg) < n_sheet:
                    img = xs[i:i + 1]
                    c1 = cen[i:i + 1].cpu() if points else None
                    ov = mask_contour(mask_overlay(img, fg[i:i + 1]), fg[i:i + 1])
                    sheet_fg.append((draw_points(ov, c1) if points else ov)[0])
                    if parts:
                        lab = probs[i:i + 1].argmax(1)
                        lab = torch.where(lab == k, torch.full_like(lab, -1), lab)
                        pov = part_overlay(img, lab, k)
                        sheet_parts.append((draw_points(pov, c1) if points else pov)[0])
            done += x.shape[0]
            if progress:
                progress("segment", done, len(ds))
    size = max(64, m.cfg.data.size)
    files = {"masks": str(outp)}
    contact_sheet(sheet_fg, outp / "overlay.png", ncol=8, size=size)
    files["overlay"] = str(outp / "overlay.png")
    if parts:
        contact_sheet(sheet_parts, outp / "parts_overlay.png", ncol=8, size=size)
        files.update(parts=str(outp / "parts"), parts_overlay=str(outp / "parts_overlay.png"))
    if points:
        ckpt.atomic_write_text(outp / "points.json", json.dumps(pts_doc, indent=1) + "\n")
        files["points"] = str(outp / "points.json")
    doc = {"checkpoint": str(ckpt_path), "model": name, "step": m.step, "data": str(imageset.root),
           "n": len(items), "n_parts": k if (parts or points) else None, "items": items}
    ckpt.atomic_write_text(outp / "index.json", json.dumps(doc, indent=1) + "\n")
    files["index"] = str(outp / "index.json")
    return {"checkpoint": str(ckpt_path), "model": name, "step": m.step, "data": str(imageset.root),
            "n": len(items), "masks": len(items), "parts": len(items) if parts else 0,
            "points": len(items) if points else 0, "backgrounds": len(items) if remove_object else 0,
            "size": m.cfg.data.size,
            "mean_fg_fraction": round(float(np.mean([it["fg_fraction"] for it in items])), 4), "files": files}


def mix(ckpt_path: str, out: str | None = None, **options) -> dict:
    """Background, shape, texture and pose from reference photos: one image, a ``grid``
    sheet or one image per ``batch`` CSV row (see :func:`fgtool.mixing.run_mix`)."""
    m = load(ckpt_path)
    m.backend.require("mix")
    from .mixing import run_mix

    return run_mix(m, out, **options)


def data_synth(out: str, n: int = 6000, size: int = 64, seed: int = 0, parents: int = 4, children: int = 3,
               backgrounds: int = 3, bg_corr: float = 0.5, obj_area: str | tuple = (0.20, 0.45), workers: int = 2,
               progress: Progress = None) -> dict:
    from .data.synth import synth

    if isinstance(obj_area, str):
        try:
            obj_area = tuple(float(v) for v in obj_area.split(","))
        except ValueError:
            raise FgtoolError(f"--obj-area takes MIN,MAX (two numbers), got {obj_area!r}") from None
        if len(obj_area) != 2:
            raise FgtoolError(f"--obj-area takes MIN,MAX (two numbers), got {len(obj_area)} values")
    check_output(out, [], folder=True)
    cb = (lambda done, total: progress("synth", done, total)) if progress else None
    meta = synth(out, n=n, size=size, seed=seed, parents=parents, children=children, backgrounds=backgrounds,
                 bg_corr=bg_corr, obj_area=obj_area, workers=workers, progress=cb)
    return {"out": str(out), **{k: meta[k] for k in ("n", "size", "seed", "bg_corr", "obj_area") if k in meta}}


def models() -> list[dict]:
    return [{"name": n, "capabilities": registry.capabilities(n)} for n in registry.names()]

