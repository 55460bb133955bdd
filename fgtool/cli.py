"""The command line: thin Typer wrappers over :mod:`fgtool.api`.

Contract for scripts: numbers go to stdout as JSON with ``--json``; progress bars and
tables go to stderr; exit 0 = success, 2 = user error (one line), 1 = bug.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sys
import warnings
from typing import List, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from . import __version__
from .errors import FgtoolError, Interrupted, printable

err = Console(stderr=True)
app = typer.Typer(
    name="fgtool",
    help="Unsupervised fine-grained image modelling: FineGAN, MixNMatch, OneGAN, C3-GAN, GANSeg.\n\n"
         "Quick start:\n\n  fgtool data synth --out data/synth --n 2000 --size 32\n\n"
         "  fgtool train --model finegan --data data/synth --recipe synth-finegan --out runs/fg\n\n"
         "  fgtool sample --ckpt runs/fg/last.pt --out runs/fg/sample.png",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
data_app = typer.Typer(help="Datasets: generate the synthetic ground-truth set.", no_args_is_help=True)
app.add_typer(data_app, name="data")

JSON_OPT = typer.Option(False, "--json", help="Print the result as JSON on stdout.")
SKIP_BAD_OPT = typer.Option(False, "--skip-bad",
                            help="Skip unreadable images with a warning instead of stopping "
                                 "(same as --set data.skip_bad=true).")
REFINE_OPT = typer.Option("none", "--refine",
                          help="Masks (segment, iou/dice): 'grabcut' redraws each mask's edge by the photo's "
                               "colours; 'none' keeps the model's mask.")
FILL_OPT = typer.Option("gan", "--fill",
                        help="Object removal (segment --remove-object, eval removal): 'gan' the model's background "
                             "generator; 'inpaint' fills the photo in inside its mask (OpenCV, Navier-Stokes).")
TTA_OPT = typer.Option("none", "--tta",
                       help="Masks (segment, iou/dice): 'flip' averages the maps of each photo and of its "
                            "mirror image (two passes); 'none' is one pass.")


def _emit(result, as_json: bool, title: str) -> None:
    if int(os.environ.get("RANK", "0")) != 0:  # multi-process runs: one report, from rank 0
        return
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2, default=str) + "\n")
        sys.stdout.flush()
        return
    table = Table(title=title, show_header=False)
    for k, v in _flatten(result).items():
        table.add_row(k, str(v))
    err.print(table)


def _flatten(d, prefix="") -> dict:
    out = {}
    for k, v in (d.items() if isinstance(d, dict) else []):
        key = f"{prefix}{k}"
        if isinstance(v, dict) and len(v) <= 40:
            out.update(_flatten(v, key + "."))
        elif isinstance(v, float):
            out[key] = f"{v:.4f}"
        elif isinstance(v, list) and len(v) > 8:
            out[key] = f"[{len(v)} items]"
        else:
            out[key] = v
    return out


class _Bars:
    """Progress callback (task, done, total) -> rich bars on stderr."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.p = None
        self.tasks = {}

    def __enter__(self):
        if not self.quiet:
            self.p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                              TimeRemainingColumn(), console=err, transient=True)
            self.p.__enter__()
        return self

    def __call__(self, task: str, done: int, total: int):
        if self.p is None:
            return
        if task not in self.tasks:
            self.tasks[task] = self.p.add_task(task, total=total)
        self.p.update(self.tasks[task], completed=done, total=total)

    def __exit__(self, *exc):
        if self.p:
            self.p.__exit__(*exc)
        return False


# ----------------------------------------------------------------------------- commands


@app.command(epilog="Example: fgtool train --model finegan --data data/synth "
                    "--recipe synth-finegan --out runs/fg --set train.steps=2000")
def train(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Backend name (see `fgtool models`)."),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="Image folder: ImageFolder, CUB layout or flat."),
    recipe: Optional[str] = typer.Option(None, "--recipe", "-r", help="A shipped recipe's name (see `fgtool "
                                         "recipes`) or a TOML file ([data] [train] [model])."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override: section.key=value (repeatable)."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Run folder (default runs/<model>)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from last.pt."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config and exit."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress: no bar on a terminal, no plain "
                               "lines (one per log row) in a batch log."),
    skip_bad: bool = SKIP_BAD_OPT,
    as_json: bool = JSON_OPT,
):
    """Train a model on a folder of images; checkpoints, grids and metrics go to --out.

    Precision: train.precision from the recipe or --set, else accelerate launch --mixed_precision
    (or accelerate config), else auto: bf16 where the device has it natively, fp32 otherwise.

    Several processes: torchrun --nproc_per_node N -m fgtool train ..., or
    accelerate launch [--cpu] --num_processes N -m fgtool train ... (train.batch_size is global).
    """
    from . import api
    from .train.launch import maybe_relaunch

    code = maybe_relaunch()
    if code is not None:
        raise typer.Exit(code)
    if skip_bad:
        set_ = [*(set_ or []), "data.skip_bad=true"]
    res = api.train(model, data, recipe, set_, out, resume=resume, dry_run=dry_run, progress=not quiet)
    if dry_run:
        sys.stdout.write(json.dumps(res, indent=2) + "\n")
        return
    _emit(res, as_json, "train")


@app.command(epilog="Examples: fgtool sample --ckpt runs/fg/last.pt --out runs/fg/samples.png\n\n"
                    "fgtool sample --ckpt runs/fg/last.pt --fix p=2 --vary c --out p2_children.png")
def sample(
    ckpt: str = typer.Option(..., "--ckpt", help="Checkpoint (a run's last.pt)."),
    out: str = typer.Option("samples.png", "--out", "-o", help="PNG path (named grids go beside it)."),
    n: int = typer.Option(64, "--n", help="Number of samples."),
    seed: int = typer.Option(0, "--seed"),
    fix: Optional[List[str]] = typer.Option(None, "--fix", help="Fix a code: p=3, c=17, b=5 (repeatable)."),
    vary: Optional[str] = typer.Option(None, "--vary", help="Columns vary this code (z, b, p or c)."),
    no_grids: bool = typer.Option(False, "--no-grids", help="Only the main grid, not the layer/hierarchy grids."),
    like: Optional[List[str]] = typer.Option(None, "--like", help="A real image: generate from the cluster it "
                                             "falls in (models with centroids; repeatable)."),
    as_json: bool = JSON_OPT,
):
    """Generate images: a sample grid, the per-stage layer sheet and hierarchy grids."""
    from . import api

    _emit(api.sample(ckpt, out, n=n, seed=seed, fix=fix, vary=vary, grids=not no_grids, like=like), as_json,
          "sample")


@app.command(epilog="Example: fgtool cluster --ckpt runs/fg/last.pt --data data/synth --out runs/fg/clusters.json")
def cluster(
    ckpt: str = typer.Option(..., "--ckpt"),
    data: str = typer.Option(..., "--data", "-d"),
    out: str = typer.Option("clusters.json", "--out", "-o"),
    k: Optional[int] = typer.Option(None, "--k", help="Number of clusters (default: the model's own: its "
                                    "centroids for C3-GAN, else its fine classes). With centroids, --k groups "
                                    "the over-clusters into k."),
    features: str = typer.Option("all", "--features",
                                 help="Feature group: all, or one the model names (parent, child)."),
    split: Optional[str] = typer.Option(None, "--split", help="train or test (split.csv / train_test_split.txt)."),
    max_images: int = typer.Option(0, "--max-images"),
    label: str = typer.Option("class", "--label", help="Ground truth to score against when known: class, parent, bg."),
    seed: int = typer.Option(0, "--seed"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
    skip_bad: bool = SKIP_BAD_OPT,
    as_json: bool = JSON_OPT,
):
    """Cluster real photos into fine-grained classes with no labels (JSON + contact sheets)."""
    from . import api
    from .data.datasets import skip_bad_images

    with _Bars(quiet) as bars, skip_bad_images(skip_bad):
        res = api.cluster(ckpt, data, out, k=k, features_=features, split=split, max_images=max_images,
                          label=label, seed=seed, progress=bars)
    _emit(res, as_json, "cluster")


@app.command(name="eval", epilog="Examples: fgtool eval --metric nmi,acc --ckpt runs/fg/last.pt --data data/synth\n\n"
                                 "fgtool eval --metric nmi --pred clusters.json --data data/synth\n\n"
                                 "fgtool eval --metric iou,dice --pred masks/ --data data/synth\n\n"
                                 "fgtool eval --metric nmi,acc --baseline pixels --data ../shared/data/cub100\n\n"
                                 "fgtool eval --metric iou,dice,parts --ckpt runs/gs/last.pt --data data/synth\n\n"
                                 "fgtool eval --metric landmarks --ckpt runs/gs/last.pt --data data/synth\n\n"
                                 "fgtool eval --metric iou,dice --baseline centre --data data/synth")
def eval_(
    metric: str = typer.Option(..., "--metric", help="Comma list: nmi, nmi_max, acc, ari, fid, kid, is, iou, dice, "
                                                     "mix, removal, parts (part consistency, synthetic set), "
                                                     "landmarks (regression from part centres)."),
    data: str = typer.Option(..., "--data", "-d"),
    ckpt: Optional[str] = typer.Option(None, "--ckpt"),
    pred: Optional[str] = typer.Option(None, "--pred", help="nmi, acc, ari: cluster ids from `fgtool cluster` or "
                                       "another tool, as JSON or CSV (path,cluster; paths absolute or relative "
                                       "to --data); iou, dice: a folder of mask PNGs named like the images, "
                                       "as `fgtool segment` writes them."),
    baseline: Optional[str] = typer.Option(None, "--baseline", help="'pixels': k-means on 32 px pixels; "
                                           "'centre': a centred ellipse of the mean object area (iou, dice)."),
    keypoints: Optional[str] = typer.Option(None, "--keypoints", help="landmarks: a part_locs.txt or a CSV "
                                            "path,x1,y1,... (default: DATA/parts/part_locs.txt)."),
    eyes: Optional[str] = typer.Option(None, "--eyes", help="landmarks: normalise by the distance of these two "
                                       "keypoints, e.g. 1,2 (inter-ocular on faces); default: the view's side."),
    k: Optional[int] = typer.Option(None, "--k"),
    features: str = typer.Option("all", "--features"),
    label: str = typer.Option("class", "--label", help="class, parent or bg."),
    split: Optional[str] = typer.Option(None, "--split"),
    max_images: int = typer.Option(0, "--max-images"),
    n_fake: int = typer.Option(1000, "--n-fake", help="Generated images for FID/KID/IS; mixed pairs for mix."),
    inception: Optional[str] = typer.Option(None, "--inception-weights",
                                            help="fid, kid, is: the file pt_inception-2015-12-05-6726825d.pth "
                                                 "(or FGTOOL_INCEPTION_WEIGHTS=FILE); docs/usage.md says where "
                                                 "to get it."),
    seed: int = typer.Option(0, "--seed"),
    refine: str = REFINE_OPT,
    tta: str = TTA_OPT,
    fill: str = FILL_OPT,
    quiet: bool = typer.Option(False, "--quiet", "-q"),
    skip_bad: bool = SKIP_BAD_OPT,
    as_json: bool = JSON_OPT,
):
    """Score clusters (NMI, ACC, ARI), generation (FID, KID, IS), segmentation (IoU, DICE, part consistency),
    mixing or object removal."""
    from . import api
    from .data.datasets import skip_bad_images

    with _Bars(quiet) as bars, skip_bad_images(skip_bad):
        res = api.evaluate(metric, data, ckpt_path=ckpt, pred=pred, baseline=baseline, k=k, features_=features,
                           label=label, split=split, max_images=max_images, n_fake=n_fake, inception=inception,
                           seed=seed, progress=bars, refine=refine, tta=tta, fill=fill, keypoints=keypoints,
                           eyes=eyes)
    _emit(res, as_json, "eval")


@app.command(epilog="Examples: fgtool gif --ckpt runs/fg/last.pt --walk c --out walk_c.gif\n\n"
                    "fgtool gif --ckpt runs/mnm/last.pt --image bird.jpg --from flight.mp4 --frames 48 --out bird.gif")
def gif(
    ckpt: str = typer.Option(..., "--ckpt"),
    out: str = typer.Option("walk.gif", "--out", "-o"),
    walk: str = typer.Option("z", "--walk", help="Code to move: z (smooth), or b, p, c (step through values)."),
    frames: int = typer.Option(24, "--frames", help="Frames of the walk; with --from: frames taken from the source, "
                                                    "evenly spaced (0 = all)."),
    n: int = typer.Option(8, "--n", help="Samples side by side."),
    seed: int = typer.Option(0, "--seed"),
    fps: int = typer.Option(8, "--fps"),
    frames_dir: Optional[str] = typer.Option(None, "--frames-dir", help="Also write every frame as PNG here."),
    image: Optional[str] = typer.Option(None, "--image", help="img2gif: the still photo to animate (its background, "
                                                              "shape and texture)."),
    source: Optional[str] = typer.Option(None, "--from", help="img2gif: a folder of frames, a GIF or a video; each "
                                                              "frame gives the pose (z)."),
    max_size: int = typer.Option(256, "--max-size", help="img2gif: largest GIF side in px (small models are "
                                                         "upscaled up to it, big ones downscaled)."),
    as_json: bool = JSON_OPT,
):
    """Make a GIF of a latent walk, or animate a photo with the poses of a clip (img2gif)."""
    from . import api

    _emit(api.gif(ckpt, out, walk=walk, frames=frames, n=n, seed=seed, fps=fps, frames_dir=frames_dir,
                  image=image, source=source, max_size=max_size), as_json, "gif")


@app.command(epilog="Examples: fgtool mix --ckpt runs/mnm/last.pt --bg a.jpg --shape b.jpg --texture c.jpg "
                    "--pose d.jpg --out mix.png\n\n"
                    "fgtool mix --ckpt runs/mnm/last.pt --grid pose --pose p1.jpg --pose p2.jpg --pose p3.jpg "
                    "--base r1.jpg --base r2.jpg --out vary_pose.png\n\n"
                    "fgtool mix --ckpt runs/mnm/last.pt --batch triples.csv --out mixes/")
def mix(
    ckpt: str = typer.Option(..., "--ckpt"),
    bg: Optional[List[str]] = typer.Option(None, "--bg", help="Background reference image."),
    shape: Optional[List[str]] = typer.Option(None, "--shape", help="Shape reference image."),
    texture: Optional[List[str]] = typer.Option(None, "--texture", help="Texture reference image."),
    pose: Optional[List[str]] = typer.Option(None, "--pose", help="Pose reference image."),
    base: Optional[List[str]] = typer.Option(None, "--base", help="Gives every factor not given above (else they "
                                                                  "are sampled with --seed); with --grid: the rows."),
    mode: str = typer.Option("code", "--mode", help="code, or feature: pixel-aligned shape and pose from --shape "
                                                    "(a checkpoint past model.stage2_start)."),
    grid: Optional[str] = typer.Option(None, "--grid", help="Sheet varying one factor (bg, shape, texture, pose): its "
                                                            "references (repeat the option) across the top, --base "
                                                            "images down the left."),
    batch: Optional[str] = typer.Option(None, "--batch", help="CSV with columns bg,shape,texture,pose[,base,out] "
                                                              "(header optional): one image per row into --out."),
    seed: int = typer.Option(0, "--seed", help="Seed for the sampled factors (batch row i uses seed + i)."),
    texture_class: Optional[int] = typer.Option(None, "--texture-class", help="Reconstruct the --base photo with "
                                                                              "this child class (OneGAN)."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="PNG (default mix.png, mix_grid.png); a folder "
                                                                "with --batch (default mix_batch/)."),
    as_json: bool = JSON_OPT,
):
    """Mix background, shape, texture and pose taken from real photos."""
    from . import api

    _emit(api.mix(ckpt, out, bg=bg, shape=shape, texture=texture, pose=pose, base=base, mode=mode, seed=seed,
                  grid=grid, batch=batch, texture_class=texture_class), as_json, "mix")


@app.command(epilog="Examples: fgtool segment --ckpt runs/synth-ganseg/last.pt --data photos/ --out masks/\n\n"
                    "fgtool segment --ckpt runs/synth-ganseg/last.pt --data bird.jpg --parts --points "
                    "--out masks/ --json")
def segment(
    ckpt: str = typer.Option(..., "--ckpt"),
    data: str = typer.Option(..., "--data", "-d", help="A folder or a single image."),
    out: str = typer.Option("masks", "--out", "-o", help="Folder: one 0/255 PNG mask per image (same relative "
                                                         "name, the photo's size), overlay.png, index.json."),
    parts: bool = typer.Option(False, "--parts", help="Also part-index PNGs in OUT/parts/ (palette: 0 background, "
                                                      "j+1 part j) and parts_overlay.png."),
    points: bool = typer.Option(False, "--points", help="Draw part centres on the sheets; write points.json."),
    remove_object: bool = typer.Option(False, "--remove-object", help="Also NAME_bg.png per image: the object "
                                                                      "removed (OneGAN; see --fill)."),
    batch_size: int = typer.Option(32, "--batch-size"),
    split: Optional[str] = typer.Option(None, "--split", help="train or test (split.csv / train_test_split.txt)."),
    max_images: int = typer.Option(0, "--max-images"),
    refine: str = REFINE_OPT,
    tta: str = TTA_OPT,
    fill: str = FILL_OPT,
    quiet: bool = typer.Option(False, "--quiet", "-q"),
    skip_bad: bool = SKIP_BAD_OPT,
    as_json: bool = JSON_OPT,
):
    """Segment the foreground (or parts) of real photos with a model that can segment."""
    from . import api
    from .data.datasets import skip_bad_images

    with _Bars(quiet) as bars, skip_bad_images(skip_bad):
        res = api.segment(ckpt, data, out, parts=parts, points=points, batch_size=batch_size, split=split,
                          max_images=max_images, progress=bars, remove_object=remove_object, refine=refine,
                          tta=tta, fill=fill)
    _emit(res, as_json, "segment")


@app.command(epilog="Example: fgtool info --ckpt runs/fg/last.pt --json")
def info(ckpt: str = typer.Option(..., "--ckpt"), as_json: bool = JSON_OPT):
    """Print a checkpoint's config, step and capabilities."""
    from . import api

    _emit(api.info(ckpt), as_json, "info")


@app.command(epilog="Example: fgtool models --json")
def models(as_json: bool = JSON_OPT):
    """List the registered models and what each can do."""
    from . import api

    res = api.models()
    if as_json:
        _emit(res, True, "models")
        return
    table = Table(title="models")
    table.add_column("model")
    table.add_column("capabilities")
    for r in res:
        table.add_row(r["name"], ", ".join(r["capabilities"]))
    err.print(table)


@app.command(epilog="Examples: fgtool recipes\n\nfgtool train --model c3gan --data photos/ --recipe cub-cpu-c3gan "
                    "--out runs/c3")
def recipes(as_json: bool = typer.Option(False, "--json", help="Print name, description and path as JSON.")):
    """List the recipes that ship with fgtool (use one with --recipe NAME)."""
    from .config import list_recipes

    res = list_recipes()
    if as_json:
        sys.stdout.write(json.dumps(res, indent=2) + "\n")
        return
    width = max(len(r["name"]) for r in res)
    sys.stdout.write("".join(f"{r['name']:<{width}}  {r['description']}\n" for r in res))


@app.command(epilog="Example: fgtool version")
def version():
    """Print the fgtool version."""
    sys.stdout.write(__version__ + "\n")


@data_app.command("synth", epilog="Example: fgtool data synth --out data/synth --n 6000 --size 64 --bg-corr 0.5")
def data_synth(
    out: str = typer.Option(..., "--out", "-o"),
    n: int = typer.Option(6000, "--n"),
    size: int = typer.Option(64, "--size"),
    seed: int = typer.Option(0, "--seed"),
    parents: int = typer.Option(4, "--parents", help="Shapes (1-6)."),
    children: int = typer.Option(3, "--children", help="Appearances per shape (2-4)."),
    backgrounds: int = typer.Option(3, "--backgrounds", help="Background textures (1-5)."),
    bg_corr: float = typer.Option(0.5, "--bg-corr", help="P(background follows the parent); 0 = independent."),
    obj_area: str = typer.Option("0.20,0.45", "--obj-area",
                                 help="MIN,MAX share of the image an object covers. The default fills the "
                                      "frame like a cropped bird; 0.06,0.14 frames objects like CUB's full "
                                      "photos, which leaves a background patch D the patches it needs."),
    workers: int = typer.Option(2, "--workers"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
    as_json: bool = JSON_OPT,
):
    """Render the synthetic fine-grained set with known parent/child/background labels."""
    from . import api

    with _Bars(quiet) as bars:
        res = api.data_synth(out, n=n, size=size, seed=seed, parents=parents, children=children,
                             backgrounds=backgrounds, bg_corr=bg_corr, obj_area=obj_area, workers=workers,
                             progress=bars)
    _emit(res, as_json, "data synth")


# ----------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> int:
    """Console entry: user errors become one line on stderr and exit code 2."""
    Interrupted.last = None
    try:
        rv = app(args=argv, standalone_mode=False)  # typer.Exit / --help / Ctrl-C return a code
        if rv == 130:  # typer turns Ctrl-C (and our SIGTERM) into exit code 130: say where it stopped
            return _interrupted(Interrupted.last)
    except FgtoolError as e:
        err.print(f"fgtool: error: {e}", markup=False, highlight=False, emoji=False, soft_wrap=True)
        return 2
    except OSError as e:
        if e.errno not in _USER_OS_ERRORS:
            raise
        # the machine, not fgtool: a full disk, a read-only folder, no permission
        msg = FgtoolError(f"{e.filename}: {e.strerror or e}" if e.filename else f"{e.strerror or e}")
        err.print(f"fgtool: error: {msg}", markup=False, highlight=False, emoji=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (see run): one line, temp files removed
        return _interrupted(e if isinstance(e, Interrupted) else None)
    except SystemExit as e:
        return int(e.code or 0)
    except Exception as e:
        # click usage errors (whether typer vendors click or uses the package)
        if _is_click_error(e):
            if type(e).__name__ == "NoArgsIsHelpError":  # bare `fgtool` / `fgtool data`: the help
                e.show()
                return int(e.exit_code)
            msg = " ".join(str(e.format_message()).split())
            ctx = getattr(e, "ctx", None)
            hint = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
            err.print(f"fgtool: error: {msg}{hint}", markup=False, highlight=False, emoji=False, soft_wrap=True)
            return 2 if int(getattr(e, "exit_code", 1)) == 2 else int(getattr(e, "exit_code", 1))
        if isinstance(e, typer.Abort):
            return 1
        raise
    return rv if isinstance(rv, int) and not isinstance(rv, bool) else 0


def _interrupted(e: Interrupted | None) -> int:
    """One line for Ctrl-C or SIGTERM (the work's own message when it has one); 128 + signal."""
    text = str(e) if e is not None and str(e) else "interrupted"
    err.print(f"fgtool: {text}", markup=False, highlight=False, emoji=False, soft_wrap=True)
    return 128 + (e.signum if e is not None else signal.SIGINT)


_USER_OS_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as ``fgtool: warning: ...`` on one line (no source file and line)."""
    text = printable(" ".join(str(message).split()))
    try:
        (file or sys.stderr).write(f"fgtool: warning: {text}\n")
    except (OSError, ValueError):  # stderr closed: nothing sensible left to do
        pass


def _click_exception() -> type:
    """click's base ClickException as this typer uses it: typer >= 0.24 vendors click as
    typer._click, older typer re-exports the click package; either way typer.BadParameter
    derives from it, so fgtool needs no import of click itself."""
    return next(k for k in typer.BadParameter.__mro__ if k.__name__ == "ClickException")


def _is_click_error(e: BaseException) -> bool:
    return isinstance(e, _click_exception())


def _on_sigterm(signum, frame) -> None:
    """SIGTERM ends the work as Ctrl-C does: writers remove their temp files on the way out."""
    raise Interrupted("", signum)


def run() -> None:
    warnings.showwarning = _one_line_warning  # the process is ours: one line per warning
    signal.signal(signal.SIGTERM, _on_sigterm)
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    run()
