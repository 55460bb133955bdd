"""``fgtool train``: resolve a run's config (recipe, data, --set) and train it, or resume one."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

from .. import checkpoint as ckpt
from .. import config as C
from ..data.evalset import box_mode
from ..errors import FgtoolError
from ..io.paths import check_output


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
    from ..train.trackers import check_installed

    check_installed(C.report_to(cfg.train.report_to))  # before anything is written
    run, imageset = _prepare(cfg, out, resume)
    score = _checkpoint_score(cfg, run, imageset)
    if dry_run:
        return _plan(cfg, run, imageset)
    d, t = cfg.data, cfg.train
    from ..data.datasets import ImageDataset, fingerprint, fingerprint_change, make_loader

    fp = fingerprint(imageset)
    if stored and (change := fingerprint_change(stored, fp)) and not d.allow_changed:
        raise FgtoolError(f"the data changed since {run} was trained ({change} in {d.root}); resume it on "
                          "the same data, or pass --set data.allow_changed=true to train on from here on this data")
    d.allow_changed = False  # a one-off consent, never stored for the next resume
    ds = ImageDataset(imageset, d.size, train=True, box_mode=box_mode(cfg), crop_scale=d.crop_scale,
                      crop_clip=d.crop_clip,
                      pseudo_border=d.pseudo_border, flip=d.flip, seed=t.seed, skip_bad=d.skip_bad,
                      bg_crops=d.bg_crops, bg_crop_min=d.bg_crop_min)
    from ..train.lock import RunLock

    run.mkdir(parents=True, exist_ok=True)
    lock = RunLock(run) if int(os.environ.get("RANK", "0")) == 0 else None  # one writer per run folder
    if lock:
        lock.acquire()
    try:
        if resume and not (run / "last.pt").exists():  # the holder of the lock may have moved it
            raise FgtoolError(f"nothing to resume in {run}: no last.pt")
        # the resolved config lands before step 0 (and again on resume: steps may have grown)
        ckpt.atomic_write_text(run / "config.json", cfg.to_json() + "\n")

        from ..train.trainer import Trainer

        trainer = Trainer(cfg, run, resume=resume, progress=progress)
        trainer.data_fingerprint = fp

        def loader_fn(start_step, rank, world):
            return make_loader(ds, t.batch_size, seed=t.seed, start_step=start_step, workers=d.workers,
                               rank=rank, world_size=world)

        try:
            summary = trainer.fit(loader_fn, score)
        finally:
            trainer.close()
    finally:
        if lock:
            lock.release()
    summary["images"] = len(imageset.records)
    summary["layout"] = imageset.layout
    return summary


def _prepare(cfg: C.RunConfig, out: str | None, resume: bool):
    """(run folder, scanned data): every check a run makes before it writes anything, the same
    for ``--dry-run``."""
    if not cfg.data.root:
        raise FgtoolError("no training data: pass --data DIR (or set data.root in the recipe)")
    cfg.data.root = str(Path(cfg.data.root).expanduser().resolve())  # resumable from any folder
    run = Path(out) if out else Path("runs") / cfg.model
    check_output(run, [cfg.data.root], what="--out" if out else "run folder", folder=True)
    if run.exists() and not run.is_dir():
        raise FgtoolError(f"--out {run} is a file, not a run folder")
    if not resume and run.exists() and not _restartable(run):
        raise FgtoolError(f"run folder {run} is not empty; pass --resume to continue it, or choose another --out")
    from ..data.datasets import scan

    d, t = cfg.data, cfg.train
    split, max_images = d.subset()
    imageset = scan(d.root, split=split, max_images=max_images, skip_bad=d.skip_bad)
    if len(imageset.records) < t.batch_size:
        raise FgtoolError(f"only {len(imageset.records)} images in {d.root}, fewer than "
                          f"train.batch_size={t.batch_size}")
    return run, imageset


def _checkpoint_score(cfg: C.RunConfig, run: Path, imageset):
    """``train.eval``: a function that scores the checkpoint just written on the training data,
    as ``fgtool eval --metric`` would; None when off. What the model or the data cannot score
    is refused here, before anything is written."""
    names = C.eval_metrics(cfg.train.eval)
    if not names:
        return None
    from .. import registry

    caps = registry.get(cfg.model).capabilities()
    cl = [n for n in names if n in ("nmi", "nmi_max", "acc", "ari")]
    seg = [n for n in names if n in ("iou", "dice")]
    if cl and "cluster" not in caps:
        raise FgtoolError(f"train.eval={cfg.train.eval}: {cfg.model} does not cluster ({', '.join(cl)})")
    if seg and "segment" not in caps:
        raise FgtoolError(f"train.eval={cfg.train.eval}: {cfg.model} does not segment ({', '.join(seg)})")
    if cl and not imageset.has_labels:
        raise FgtoolError(f"train.eval={cfg.train.eval}: {cfg.data.root} has no class labels to score against")
    if seg and not imageset.has_masks:
        raise FgtoolError(f"train.eval={cfg.train.eval}: {cfg.data.root} has no masks to score against")

    def score(step: int) -> dict:
        from .eval import evaluate

        try:
            split, max_images = cfg.data.subset()
            r = evaluate(",".join(names), cfg.data.root, ckpt_path=str(run / "last.pt"),
                         split=split, max_images=max_images or 0, workers=cfg.data.workers)
        except FgtoolError as e:  # e.g. a segmenter whose stage has not started: the run goes on
            warnings.warn(f"train.eval at step {step}: {e}", stacklevel=2)
            return {}
        return {k: v for k, v in r["metrics"].items() if k in names}

    return score


def _plan(cfg: C.RunConfig, run: Path, imageset) -> dict:
    """What ``train --dry-run`` reports: the data as scanned, the device and precision, the config."""
    import torch

    from ..train.precision import resolve

    prec, source = resolve(cfg.train.precision)
    recs = imageset.records
    device = f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu"
    return {"model": cfg.model, "out": str(run),
            "data": {"root": cfg.data.root, "layout": imageset.layout, "images": len(recs),
                     "classes": len(imageset.classes), "boxes": sum(r.box is not None for r in recs),
                     "masks": sum(r.mask_path is not None for r in recs)},
            "device": device, "precision": prec, "precision_from": source, "steps": cfg.train.steps,
            "batch_size": cfg.train.batch_size, "config": cfg.to_dict()}


# what a run writes before its first checkpoint (fgtool's temp files start with a dot)
_RUN_OWN = {"config.json", "metrics.jsonl", "metrics.csv", "tensorboard", "loss_curve.png", "grids", ".lock"}


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
