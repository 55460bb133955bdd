"""The command line: thin Typer wrappers over :mod:`fgtool.api`.

Contract for scripts: a command's result goes to stdout (a table, tab-separated when stdout is
not a terminal, or JSON with ``--json``); progress bars, warnings and errors go to stderr;
exit 0 = success, 2 = user error (one line), 1 = bug.
"""

from __future__ import annotations

import errno
import signal
import sys
import warnings
from typing import List, Literal, Optional

import typer

from . import __version__
from .console import Bars, emit, err, note, table
from .errors import FgtoolError, Interrupted, failed_allocation, out_of_memory, printable

HELP = {"help_option_names": ["-h", "--help"]}
app = typer.Typer(
    name="fgtool",
    help="Unsupervised fine-grained image modelling: FineGAN, MixNMatch, OneGAN, C3-GAN, GANSeg.\n\n"
         "Quick start:\n\n  fgtool data synth --out data/synth --n 2000 --size 32\n\n"
         "  fgtool train --model finegan --data data/synth --recipe synth-finegan --out runs/fg\n\n"
         "  fgtool sample --out runs/fg/sample.png",
    no_args_is_help=True,
    context_settings=HELP,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
data_app = typer.Typer(help="Datasets: generate the synthetic ground-truth set.", no_args_is_help=True,
                       context_settings=HELP)
app.add_typer(data_app, name="data")

# the choices of the options that take one of a few words (the commands check them again for
# Python callers; tests/cli/test_cli_conventions.py keeps both lists the same)
Refine = Literal["none", "grabcut"]
Tta = Literal["none", "flip"]
Fill = Literal["gan", "inpaint"]
Label = Literal["class", "parent", "bg"]
Split = Literal["train", "test"]
Baseline = Literal["pixels", "centre"]
Factor = Literal["bg", "shape", "texture", "pose"]
MixMode = Literal["code", "feature"]
MODELS = "finegan, mixnmatch, onegan, c3gan or ganseg"  # tests check it against the registry

JSON_OPT = typer.Option(False, "--json", help="Print the result as JSON on stdout.")
QUIET_OPT = typer.Option(False, "--quiet", "-q", help="No progress bar.")
SEED_OPT = typer.Option(0, "--seed", metavar="N", help="Random seed (same seed, same result).")
MAX_IMAGES_OPT = typer.Option(0, "--max-images", metavar="N",
                              help="Use at most N images, a class-balanced subset (0 = all).")
SPLIT_OPT = typer.Option(None, "--split", help="Only this split of the data (split.csv / train_test_split.txt).")
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


def _ckpt_opt(can: str) -> typer.Option:
    return typer.Option(None, "--ckpt", metavar="PATH",
                        help="A run's last.pt, its folder, or a file from `fgtool export` (default: the newest "
                             f"run under runs/ whose model can {can}).")


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(__version__ + "\n")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", "-V", is_eager=True, callback=_version,
                                       help="Print the fgtool version and exit.")):
    pass


def _ckpt(ckpt: str | None, can: str) -> str:
    """``--ckpt``, or the newest run under runs/ whose model can ``can`` (named on stderr)."""
    if ckpt is not None:
        return ckpt
    from .runs import newest_run

    path = newest_run(can)
    note(f"fgtool: using {path} (the newest run under runs/ that can {can})")
    return str(path)


# ----------------------------------------------------------------------------- commands


@app.command(epilog="Example: fgtool train --model finegan --data data/synth "
                    "--recipe synth-finegan --out runs/fg --set train.steps=2000")
def train(
    model: Optional[str] = typer.Option(None, "--model", "-m", metavar="NAME",
                                        help=f"Backend: {MODELS} (see `fgtool models`)."),
    data: Optional[str] = typer.Option(None, "--data", "-d", metavar="PATH",
                                       help="Image folder: ImageFolder, CUB layout or flat."),
    recipe: Optional[str] = typer.Option(None, "--recipe", "-r", metavar="NAME|PATH",
                                         help="A shipped recipe's name (see `fgtool recipes`) or a TOML file "
                                              "([data] [train] [model])."),
    set_: Optional[List[str]] = typer.Option(None, "--set", metavar="KEY=VALUE",
                                             help="Override: section.key=value (repeatable)."),
    out: Optional[str] = typer.Option(None, "--out", "-o", metavar="PATH", help="Run folder (default runs/<model>)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from last.pt."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check everything and scan the data (layout, images, "
                                                         "classes, boxes), print that with the device and "
                                                         "precision it would use (--json: and the config), and "
                                                         "exit without training."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress: no bar on a terminal, no plain "
                               "lines (one per log row) in a batch log."),
    skip_bad: bool = SKIP_BAD_OPT,
    report_to: Optional[str] = typer.Option(None, "--report-to", metavar="LIST",
                                            help="Also log losses, sample grids and train.eval scores to (comma list): "
                                            "tensorboard (pip install 'fgtool[tensorboard]'), wandb, csv "
                                            "(RUN/metrics.csv), or none (default; metrics.jsonl is always "
                                            "written). Same as --set train.report_to=..."),
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
    if report_to is not None:
        set_ = [*(set_ or []), f"train.report_to={report_to}"]
    res = api.train(model, data, recipe, set_, out, resume=resume, dry_run=dry_run, progress=not quiet)
    if dry_run and not as_json:
        res = {k: v for k, v in res.items() if k != "config"}
    emit(res, as_json, "train --dry-run" if dry_run else "train")


@app.command(epilog="Examples: fgtool sample --ckpt runs/fg/last.pt --out runs/fg/samples.png\n\n"
                    "fgtool sample --ckpt runs/fg/last.pt --fix p=2 --vary c --out p2_children.png")
def sample(
    ckpt: Optional[str] = _ckpt_opt("sample"),
    out: str = typer.Option("samples.png", "--out", "-o", metavar="PATH",
                            help="PNG path (named grids go beside it)."),
    n: int = typer.Option(64, "--n", metavar="N", help="Number of samples."),
    seed: int = SEED_OPT,
    fix: Optional[List[str]] = typer.Option(None, "--fix", metavar="CODE=K",
                                            help="Fix a code: p=3, c=17, b=5 (repeatable)."),
    vary: Optional[str] = typer.Option(None, "--vary", metavar="CODE", help="Columns vary this code (z, b, p or c)."),
    no_grids: bool = typer.Option(False, "--no-grids", help="Only the main grid, not the layer/hierarchy grids."),
    like: Optional[List[str]] = typer.Option(None, "--like", metavar="PATH", help="A real image: generate from the "
                                             "cluster it falls in (models with centroids; repeatable)."),
    as_json: bool = JSON_OPT,
):
    """Generate images: a sample grid, the per-stage layer sheet and hierarchy grids."""
    from . import api

    ckpt = _ckpt(ckpt, "sample")
    emit(api.sample(ckpt, out, n=n, seed=seed, fix=fix, vary=vary, grids=not no_grids, like=like), as_json,
          "sample")


@app.command(epilog="Example: fgtool cluster --ckpt runs/fg/last.pt --data data/synth --out runs/fg/clusters.json")
def cluster(
    ckpt: Optional[str] = _ckpt_opt("cluster"),
    data: str = typer.Option(..., "--data", "-d", metavar="PATH", help="A folder of photos to cluster."),
    out: str = typer.Option("clusters.json", "--out", "-o", metavar="PATH",
                            help="JSON of each image's cluster; contact sheets go beside it."),
    k: Optional[int] = typer.Option(None, "--k", metavar="N", help="Number of clusters (default: the model's own: "
                                    "its centroids for C3-GAN, else its fine classes). With centroids, --k groups "
                                    "the over-clusters into k."),
    features: str = typer.Option("all", "--features", metavar="NAME",
                                 help="Feature group: all, or one the model names (parent, child)."),
    split: Optional[Split] = SPLIT_OPT,
    max_images: int = MAX_IMAGES_OPT,
    label: Label = typer.Option("class", "--label", help="Ground truth to score against when known."),
    seed: int = SEED_OPT,
    quiet: bool = QUIET_OPT,
    skip_bad: bool = SKIP_BAD_OPT,
    as_json: bool = JSON_OPT,
):
    """Cluster real photos into fine-grained classes with no labels (JSON + contact sheets)."""
    from . import api
    from .data.datasets import skip_bad_images

    ckpt = _ckpt(ckpt, "cluster")
    with Bars(quiet) as bars, skip_bad_images(skip_bad):
        res = api.cluster(ckpt, data, out, k=k, features_=features, split=split, max_images=max_images,
                          label=label, seed=seed, progress=bars)
    emit(res, as_json, "cluster")


@app.command(name="eval", epilog="Examples: fgtool eval --metric nmi,acc --ckpt runs/fg/last.pt --data data/synth\n\n"
                                 "fgtool eval --metric nmi --pred clusters.json --data data/synth\n\n"
                                 "fgtool eval --metric iou,dice --pred masks/ --data data/synth\n\n"
                                 "fgtool eval --metric nmi,acc --baseline pixels --data ../shared/data/cub100\n\n"
                                 "fgtool eval --metric iou,dice,parts --ckpt runs/gs/last.pt --data data/synth\n\n"
                                 "fgtool eval --metric landmarks --ckpt runs/gs/last.pt --data data/synth\n\n"
                                 "fgtool eval --metric iou,dice --baseline centre --data data/synth")
def eval_(
    metric: str = typer.Option(..., "--metric", metavar="LIST",
                               help="Comma list: nmi, nmi_max, acc, ari, fid, kid, is, iou, dice, mix, removal, parts "
                                    "(part consistency, synthetic set), landmarks (regression from part centres)."),
    data: str = typer.Option(..., "--data", "-d", metavar="PATH", help="The photos to score on (with labels, "
                                                                      "masks or keypoints as the metric needs)."),
    ckpt: Optional[str] = typer.Option(None, "--ckpt", metavar="PATH",
                                       help="The model to score: a run's last.pt, its folder, or an export."),
    pred: Optional[str] = typer.Option(None, "--pred", metavar="PATH",
                                       help="nmi, acc, ari: cluster ids from `fgtool cluster` or another tool, as "
                                            "JSON or CSV (path,cluster; paths absolute or relative to --data); "
                                            "iou, dice: a folder of mask PNGs named like the images, as "
                                            "`fgtool segment` writes them."),
    baseline: Optional[Baseline] = typer.Option(None, "--baseline", help="'pixels': k-means on 32 px pixels; "
                                                "'centre': a centred ellipse of the mean object area (iou, dice)."),
    keypoints: Optional[str] = typer.Option(None, "--keypoints", metavar="PATH", help="landmarks: a part_locs.txt "
                                            "or a CSV path,x1,y1,... (default: DATA/parts/part_locs.txt)."),
    eyes: Optional[str] = typer.Option(None, "--eyes", metavar="I,J", help="landmarks: normalise by the distance "
                                       "of these two keypoints, e.g. 1,2 (inter-ocular on faces); default: the "
                                       "view's side."),
    k: Optional[int] = typer.Option(None, "--k", metavar="N",
                                    help="Clusters (default: the model's own, or the data's classes)."),
    features: str = typer.Option("all", "--features", metavar="NAME",
                                 help="Feature group: all, or one the model names (parent, child)."),
    label: Label = typer.Option("class", "--label", help="Ground truth the cluster metrics score against."),
    split: Optional[Split] = SPLIT_OPT,
    max_images: int = MAX_IMAGES_OPT,
    n_fake: int = typer.Option(1000, "--n-fake", metavar="N",
                               help="Generated images for FID/KID/IS; mixed pairs for mix."),
    inception: Optional[str] = typer.Option(None, "--inception-weights", metavar="PATH",
                                            help="fid, kid, is: the file pt_inception-2015-12-05-6726825d.pth "
                                                 "(or FGTOOL_INCEPTION_WEIGHTS=FILE); docs/usage.md says where "
                                                 "to get it."),
    seed: int = SEED_OPT,
    refine: Refine = REFINE_OPT,
    tta: Tta = TTA_OPT,
    fill: Fill = FILL_OPT,
    quiet: bool = QUIET_OPT,
    skip_bad: bool = SKIP_BAD_OPT,
    as_json: bool = JSON_OPT,
):
    """Score clusters (NMI, ACC, ARI), generation (FID, KID, IS), segmentation (IoU, DICE, part consistency),
    mixing or object removal."""
    from . import api
    from .data.datasets import skip_bad_images

    with Bars(quiet) as bars, skip_bad_images(skip_bad):
        res = api.evaluate(metric, data, ckpt_path=ckpt, pred=pred, baseline=baseline, k=k, features_=features,
                           label=label, split=split, max_images=max_images, n_fake=n_fake, inception=inception,
                           seed=seed, progress=bars, refine=refine, tta=tta, fill=fill, keypoints=keypoints,
                           eyes=eyes)
    emit(res, as_json, "eval")


@app.command(epilog="Examples: fgtool gif --ckpt runs/fg/last.pt --walk c --out walk_c.gif\n\n"
                    "fgtool gif --ckpt runs/mnm/last.pt --image bird.jpg --from flight.mp4 --frames 48 --out bird.gif")
def gif(
    ckpt: Optional[str] = _ckpt_opt("gif (with --image: mix)"),
    out: str = typer.Option("walk.gif", "--out", "-o", metavar="PATH", help="The GIF to write."),
    walk: str = typer.Option("z", "--walk", metavar="CODE",
                             help="Code to move: z (smooth), or b, p, c (step through values)."),
    frames: int = typer.Option(24, "--frames", metavar="N", help="Frames of the walk; with --from: frames taken "
                                                                 "from the source, evenly spaced (0 = all)."),
    n: int = typer.Option(8, "--n", metavar="N", help="Samples side by side."),
    seed: int = SEED_OPT,
    fps: int = typer.Option(8, "--fps", metavar="N", help="Frames per second (1-100)."),
    frames_dir: Optional[str] = typer.Option(None, "--frames-dir", metavar="PATH",
                                             help="Also write every frame as PNG here."),
    image: Optional[str] = typer.Option(None, "--image", metavar="PATH", help="img2gif: the still photo to animate "
                                                                             "(its background, shape and texture)."),
    source: Optional[str] = typer.Option(None, "--from", metavar="PATH", help="img2gif: a folder of frames, a GIF "
                                                                             "or a video; each frame gives the "
                                                                             "pose (z)."),
    max_size: int = typer.Option(256, "--max-size", metavar="N", help="img2gif: largest GIF side in px (small "
                                                                     "models are upscaled up to it, big ones "
                                                                     "downscaled)."),
    as_json: bool = JSON_OPT,
):
    """Make a GIF of a latent walk, or animate a photo with the poses of a clip (img2gif)."""
    from . import api

    ckpt = _ckpt(ckpt, "mix" if image or source else "gif")
    emit(api.gif(ckpt, out, walk=walk, frames=frames, n=n, seed=seed, fps=fps, frames_dir=frames_dir,
                  image=image, source=source, max_size=max_size), as_json, "gif")


@app.command(epilog="Examples: fgtool mix --bg a.jpg --shape b.jpg --texture c.jpg --pose d.jpg --out mix.png\n\n"
                    "fgtool mix --ckpt runs/mnm/last.pt --grid pose --pose p1.jpg --pose p2.jpg --pose p3.jpg "
                    "--base r1.jpg --base r2.jpg --out vary_pose.png\n\n"
                    "fgtool mix --ckpt runs/mnm/last.pt --batch triples.csv --out mixes/")
def mix(
    ckpt: Optional[str] = _ckpt_opt("mix"),
    bg: Optional[List[str]] = typer.Option(None, "--bg", metavar="PATH", help="Background reference image."),
    shape: Optional[List[str]] = typer.Option(None, "--shape", metavar="PATH", help="Shape reference image."),
    texture: Optional[List[str]] = typer.Option(None, "--texture", metavar="PATH", help="Texture reference image."),
    pose: Optional[List[str]] = typer.Option(None, "--pose", metavar="PATH", help="Pose reference image."),
    base: Optional[List[str]] = typer.Option(None, "--base", metavar="PATH",
                                             help="Gives every factor not given above (else they are sampled "
                                                  "with --seed); with --grid: the rows."),
    mode: MixMode = typer.Option("code", "--mode", help="code, or feature: pixel-aligned shape and pose from "
                                                        "--shape (a checkpoint past model.stage2_start)."),
    grid: Optional[Factor] = typer.Option(None, "--grid", help="Sheet varying one factor: its references (repeat "
                                                               "the option) across the top, --base images down "
                                                               "the left."),
    batch: Optional[str] = typer.Option(None, "--batch", metavar="PATH",
                                        help="CSV with columns bg,shape,texture,pose[,base,out] (header optional): "
                                             "one image per row into --out."),
    seed: int = typer.Option(0, "--seed", metavar="N",
                             help="Seed for the sampled factors (batch row i uses seed + i)."),
    texture_class: Optional[int] = typer.Option(None, "--texture-class", metavar="N",
                                                help="Reconstruct the --base photo with this child class (OneGAN)."),
    out: Optional[str] = typer.Option(None, "--out", "-o", metavar="PATH", help="PNG (default mix.png, "
                                                                               "mix_grid.png); a folder with "
                                                                               "--batch (default mix_batch/)."),
    as_json: bool = JSON_OPT,
):
    """Mix background, shape, texture and pose taken from real photos."""
    from . import api

    ckpt = _ckpt(ckpt, "mix")
    emit(api.mix(ckpt, out, bg=bg, shape=shape, texture=texture, pose=pose, base=base, mode=mode, seed=seed,
                  grid=grid, batch=batch, texture_class=texture_class), as_json, "mix")


@app.command(epilog="Examples: fgtool segment --ckpt runs/synth-ganseg/last.pt --data photos/ --out masks/\n\n"
                    "fgtool segment --ckpt runs/synth-ganseg/last.pt --data bird.jpg --parts --points "
                    "--out masks/ --json\n\n"
                    "fgtool segment --baseline centre --data data/synth --out centre/")
def segment(
    ckpt: Optional[str] = _ckpt_opt("segment"),
    data: str = typer.Option(..., "--data", "-d", metavar="PATH", help="A folder or a single image."),
    out: str = typer.Option("masks", "--out", "-o", metavar="PATH", help="Folder: one 0/255 PNG mask per image "
                                                                        "(same relative name, the photo's size), "
                                                                        "overlay.png, index.json."),
    parts: bool = typer.Option(False, "--parts", help="Also part-index PNGs in OUT/parts/ (palette: 0 background, "
                                                      "j+1 part j) and parts_overlay.png."),
    points: bool = typer.Option(False, "--points", help="Draw part centres on the sheets; write points.json."),
    remove_object: bool = typer.Option(False, "--remove-object", help="Also NAME_bg.png per image: the object "
                                                                      "removed (OneGAN; see --fill)."),
    batch_size: int = typer.Option(32, "--batch-size", metavar="N", help="Photos per forward pass."),
    split: Optional[Split] = SPLIT_OPT,
    max_images: int = MAX_IMAGES_OPT,
    refine: Refine = REFINE_OPT,
    tta: Tta = TTA_OPT,
    fill: Fill = FILL_OPT,
    baseline: Optional[Literal["centre"]] = typer.Option(
        None, "--baseline", help="'centre': no model, the centre floor's masks (a centred ellipse of the mean "
                                 "object area, as eval --baseline centre), to look at and score with eval --pred."),
    fraction: Optional[float] = typer.Option(None, "--fraction", metavar="F", help="--baseline centre: the "
                                             "ellipse's share of each photo (default: the mean of the set's masks)."),
    quiet: bool = QUIET_OPT,
    skip_bad: bool = SKIP_BAD_OPT,
    as_json: bool = JSON_OPT,
):
    """Segment the foreground (or parts) of real photos with a model that can segment."""
    from . import api
    from .data.datasets import skip_bad_images

    if baseline is not None or fraction is not None:
        if baseline is None:
            raise FgtoolError("--fraction goes with --baseline centre")
        if ckpt is not None or parts or points or remove_object:
            raise FgtoolError("--baseline centre uses no model: drop --ckpt, --parts, --points and --remove-object")
        with Bars(quiet) as bars, skip_bad_images(skip_bad):
            res = api.segment_centre(data, out, fraction=fraction, split=split, max_images=max_images,
                                     progress=bars)
        emit(res, as_json, "segment")
        return
    ckpt = _ckpt(ckpt, "segment")
    with Bars(quiet) as bars, skip_bad_images(skip_bad):
        res = api.segment(ckpt, data, out, parts=parts, points=points, batch_size=batch_size, split=split,
                          max_images=max_images, progress=bars, remove_object=remove_object, refine=refine,
                          tta=tta, fill=fill)
    emit(res, as_json, "segment")


@app.command(epilog="Example: fgtool export --ckpt runs/mnm/last.pt --out mnm.safetensors")
def export(
    ckpt: str = typer.Option(..., "--ckpt", metavar="PATH", help="A run's last.pt (or its folder)."),
    out: str = typer.Option(..., "--out", "-o", metavar="PATH", help="The .safetensors file to write."),
    as_json: bool = JSON_OPT,
):
    """Write a checkpoint's inference weights (EMA) and config as one safetensors file, which
    sample, mix, gif, cluster, segment and eval take as --ckpt."""
    from . import api

    emit(api.export(ckpt, out), as_json, "export")


@app.command(epilog="Example: fgtool info --ckpt runs/fg/last.pt --json")
def info(ckpt: str = typer.Option(..., "--ckpt", metavar="PATH", help="A run's last.pt, its folder, or an export."),
         as_json: bool = JSON_OPT):
    """Print a checkpoint's config, step and capabilities."""
    from . import api

    emit(api.info(ckpt), as_json, "info")


@app.command(epilog="Example: fgtool models | grep segment")
def models(as_json: bool = JSON_OPT):
    """List the registered models and what each can do."""
    from . import api

    res = api.models()
    if as_json:
        emit(res, True, "models")
        return
    table("models", ["model", "capabilities"], [(r["name"], ", ".join(r["capabilities"])) for r in res])


@app.command(epilog="Examples: fgtool recipes\n\nfgtool train --model c3gan --data photos/ --recipe cub-cpu-c3gan "
                    "--out runs/c3")
def recipes(as_json: bool = typer.Option(False, "--json", help="Print name, description and path as JSON.")):
    """List the recipes that ship with fgtool (use one with --recipe NAME)."""
    from .config import list_recipes

    res = list_recipes()
    if as_json:
        emit(res, True, "recipes")
        return
    table("recipes", ["recipe", "what"], [(r["name"], r["description"]) for r in res])


@app.command(epilog="Example: fgtool version")
def version():
    """Print the fgtool version (same as fgtool --version)."""
    sys.stdout.write(__version__ + "\n")


@data_app.command("synth", epilog="Example: fgtool data synth --out data/synth --n 6000 --size 64 --bg-corr 0.5")
def data_synth(
    out: str = typer.Option(..., "--out", "-o", metavar="PATH", help="The folder to write (CUB layout)."),
    n: int = typer.Option(6000, "--n", metavar="N", help="Number of images."),
    size: int = typer.Option(64, "--size", metavar="N", help="Image side in px."),
    seed: int = SEED_OPT,
    parents: int = typer.Option(4, "--parents", metavar="N", help="Shapes (1-6)."),
    children: int = typer.Option(3, "--children", metavar="N", help="Appearances per shape (2-4)."),
    backgrounds: int = typer.Option(3, "--backgrounds", metavar="N", help="Background textures (1-5)."),
    bg_corr: float = typer.Option(0.5, "--bg-corr", metavar="P",
                                  help="P(background follows the parent); 0 = independent."),
    obj_area: str = typer.Option("0.20,0.45", "--obj-area", metavar="MIN,MAX",
                                 help="Share of the image an object covers. The default fills the "
                                      "frame like a cropped bird; 0.06,0.14 frames objects like CUB's full "
                                      "photos, which leaves a background patch D the patches it needs."),
    workers: int = typer.Option(2, "--workers", metavar="N", help="Processes that render images."),
    quiet: bool = QUIET_OPT,
    as_json: bool = JSON_OPT,
):
    """Render the synthetic fine-grained set with known parent/child/background labels."""
    from . import api

    with Bars(quiet) as bars:
        res = api.data_synth(out, n=n, size=size, seed=seed, parents=parents, children=children,
                             backgrounds=backgrounds, bg_corr=bg_corr, obj_area=obj_area, workers=workers,
                             progress=bars)
    emit(res, as_json, "data synth")


# ----------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> int:
    """Console entry: user errors become one line on stderr and exit code 2."""
    Interrupted.last = None
    try:
        rv = app(args=argv, standalone_mode=False, prog_name="fgtool")  # typer.Exit / --help / Ctrl-C return a code
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
        amount = out_of_memory(e)
        if amount is not None:  # RAM or GPU memory: the work is too large for this machine
            err.print(f"fgtool: error: out of memory{failed_allocation(amount)}; try fewer or smaller images at a time",
                      markup=False, highlight=False, emoji=False, soft_wrap=True)
            return 2
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
