"""Run configuration: dataclasses, TOML recipes and ``--set section.key=value`` overrides.

A run is described by three sections:

* ``[data]``  what to read and at which size (:class:`DataConfig`);
* ``[train]`` the loop: steps, batch, precision, checkpoint cadence (:class:`TrainConfig`);
* ``[model]`` ``name`` picks the backend in the registry; every other key is a field of
  that backend's own ``Config`` dataclass.

Unknown keys are errors that list the valid ones, and values are type-checked, so a typo
in a recipe fails before step 0 instead of being silently ignored.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .errors import FgtoolError


@dataclass
class DataConfig:
    root: str = ""  # image folder: ImageFolder, CUB layout or a flat folder
    size: int = 64  # training resolution (square); every backend runs at 32, 64 and 128
    split: Literal["all", "train", "test"] = "all"  # a part of the set (split.csv / train_test_split.txt)
    max_images: int | Literal["all"] = "all"  # N keeps a class-balanced subset of N images (quick runs)
    box_mode: str = "auto"  # auto | gt | pseudo | none: auto uses real boxes when present
    pseudo_border: float = 0.15  # width of the border band that pseudo-boxes call background
    crop_scale: float = 1.5  # object crop side = crop_scale * max(box w, h) (FineGAN)
    # the object crop is clipped to the photo, as the authors' FineGAN and MixNMatch cut it
    # (the object then fills more of a view near the photo's edge); false: the square is kept
    # and the part outside the photo repeats its edge pixels
    crop_clip: bool = False
    # also a square crop wholly outside the box (OneGAN's background set), resized to data.size;
    # the background patch D counts all its patches as real background. A crop whose side is
    # under bg_crop_min of the photo's short side is skipped. Without real boxes the box is the
    # pseudo-box, so the crop is a square of its border band (bg_crop_min <= pseudo_border)
    bg_crops: bool = False
    bg_crop_min: float = 0.25
    flip: bool = True  # random horizontal flips while training
    workers: int = 2  # DataLoader worker processes (0 = main thread)
    skip_bad: bool = False  # drop unreadable images with a warning instead of failing
    # --resume refuses data that changed since the run started (another image count, other
    # files, another layout: the run would silently train on something else); true accepts
    # it for this resume only (a deliberate change: images added, a folder moved and edited)
    allow_changed: bool = False

    def subset(self) -> tuple[str | None, int | None]:
        """(split, max_images) as the data scanner takes them: None for "all"."""
        return (None if self.split == "all" else self.split,
                None if self.max_images == "all" else self.max_images)


@dataclass
class TrainConfig:
    steps: int = 1000  # total optimiser iterations (resume may extend it)
    batch_size: int = 16  # global batch across processes
    # auto | no | fp16 | bf16 (autocast; fp16 needs a GPU). auto: accelerate launch's
    # --mixed_precision when launched by it, else bf16 where the device has it, else fp32
    precision: str = "auto"
    channels_last: bool = True  # NHWC convolutions: faster on CPU/GPU with autocast
    seed: int = 0  # seeds codes, data order and augmentation: same seed, same run
    ema_decay: float = 0.999  # EMA of the generator; 0 disables
    ema_start: int = 0  # EMA copies G exactly before this step (early G moves fast)
    log_every: int = 10  # steps between metrics.jsonl rows (and the NaN check)
    sample_every: int = 500  # steps between fixed-seed sample grids
    ckpt_every: int = 500  # steps between numbered checkpoints (last.pt too)
    keep: int | Literal["all"] = 3  # numbered checkpoints to keep (the newest N), or all
    threads: int | Literal["auto"] = "auto"  # torch intra-op threads; auto: torch's default
    compile: bool = False  # torch.compile the nets (GPU; experimental)
    fused_adam: bool = True  # one fused Adam kernel per phase; false = the per-tensor loop
    # trackers beside metrics.jsonl (--report-to): none, csv, tensorboard, wandb; comma list
    report_to: str = "none"
    # metrics scored on the training data at every checkpoint, as `fgtool eval --metric` scores
    # them: a comma list of nmi, nmi_max, acc, ari (clustering models), iou, dice (segmenters); none
    eval: str = "none"


# Keys every recipe may use. The model section is validated against the backend's Config.
SECTIONS = {"data": DataConfig, "train": TrainConfig}


@dataclass
class RunConfig:
    model: str = "finegan"
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    model_cfg: Any = None  # the backend's Config dataclass instance

    def to_dict(self) -> dict:
        return {
            "model": {"name": self.model, **dataclasses.asdict(self.model_cfg)},
            "data": dataclasses.asdict(self.data),
            "train": dataclasses.asdict(self.train),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)


# ----------------------------------------------------------------------------- typing


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert ``value`` to the annotated type ``tp``; FgtoolError on mismatch."""
    if isinstance(tp, str):  # postponed annotations
        tp = eval(tp, {"typing": typing, "Any": Any, "Literal": Literal})  # noqa: S307 - our own annotations only
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None and len(args) < len(typing.get_args(tp)):
            return None
        errs = []
        for arg in args:
            try:
                return _coerce(value, arg, where)
            except FgtoolError as e:
                errs.append(str(e))
        if len(args) > 1:  # "expected an integer or 'all'"
            raise FgtoolError(f"{where}: expected {' or '.join(_expected(a) for a in args)}, got {value!r}")
        raise FgtoolError(errs[0] if errs else f"{where}: bad value {value!r}")
    if origin is Literal:  # a word: "all", "never", "auto" (TOML has no null)
        words = typing.get_args(tp)
        if isinstance(value, str) and value in words:
            return value
        raise FgtoolError(f"{where}: expected {_expected(tp)}, got {value!r}")
    if tp is Any:
        return value
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [v for v in value.replace("(", "").replace(")", "").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise FgtoolError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise FgtoolError(f"{where}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(v, a, where) for v, a in zip(value, args))
        inner = args[0] if args else Any
        out = [_coerce(v, inner, where) for v in value]
        return tuple(out) if origin is tuple else out
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise FgtoolError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise FgtoolError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                pass
            try:
                f = float(value)
                if f.is_integer():
                    return int(f)
            except ValueError:
                pass
        raise FgtoolError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise FgtoolError(f"{where}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise FgtoolError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise FgtoolError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def _expected(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        words = [repr(w) for w in typing.get_args(tp)]
        return words[0] if len(words) == 1 else "one of " + ", ".join(words)
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string"}.get(tp, str(tp))


def build_dataclass(cls: type, values: dict, section: str):
    """Instantiate ``cls`` from ``values``; unknown keys list the valid ones. (A config stored
    in an older checkpoint is brought to today's keys first: fgtool.migrations.)"""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            raise FgtoolError(
                f"unknown key '{section}.{key}'; valid keys in [{section}]: {', '.join(names)}"
            )
        kwargs[key] = _coerce(value, hints[key], f"{section}.{key}")
    return cls(**kwargs)


def parse_set(items: list[str] | None) -> dict[str, dict[str, Any]]:
    """``["train.steps=10", "model.nc=12"]`` -> ``{"train": {"steps": "10"}, ...}``.

    Values stay strings (or parse as TOML literals when they can) and are type-checked
    against the dataclass later, so ``--set train.steps=abc`` is a clear error.
    """
    out: dict[str, dict[str, Any]] = {}
    for item in items or []:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise FgtoolError(f"--set expects section.key=value, got {item!r}")
        key, value = item.split("=", 1)
        section, name = key.strip().split(".", 1)
        try:  # "[1,2]" or "true" or "0.5" as TOML values; plain words stay strings
            value = tomllib.loads(f"v = {value}")["v"]
        except (tomllib.TOMLDecodeError, RecursionError):  # RecursionError: "[[[[..." too deep
            pass
        out.setdefault(section, {})[name] = value
    return out


# the recipes that ship inside the package: --recipe NAME finds fgtool/recipes/NAME.toml
RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.toml"))


def recipe_description(path: str | Path) -> str:
    """A recipe's one-line summary: its first line, a comment."""
    try:
        with open(path, encoding="utf-8") as f:
            first = f.readline().strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return first.lstrip("#").strip() if first.startswith("#") else ""


TRACKERS = ("none", "csv", "tensorboard", "wandb")


def report_to(value: str) -> list[str]:
    """``train.report_to``: ``"csv,tensorboard"`` -> ["csv", "tensorboard"]; ``"none"`` -> []."""
    names = [v.strip().lower() for v in str(value).split(",") if v.strip()]
    bad = [n for n in names if n not in TRACKERS]
    if bad or not names or ("none" in names and len(names) > 1):
        what = f"unknown tracker {bad[0]!r}" if bad else f"{value!r}"
        raise FgtoolError(f"train.report_to: {what}; choose none, csv, tensorboard or wandb (several: "
                          "csv,tensorboard)")
    return [n for n in dict.fromkeys(names) if n != "none"]


TRAIN_METRICS = ("nmi", "nmi_max", "acc", "ari", "iou", "dice")


def eval_metrics(value: str) -> list[str]:
    """``train.eval``: ``"nmi,acc"`` -> ["nmi", "acc"]; ``"none"`` -> []."""
    names = [v.strip().lower() for v in str(value).split(",") if v.strip()]
    bad = [n for n in names if n not in TRAIN_METRICS + ("none",)]
    if bad or not names or ("none" in names and len(names) > 1):
        what = f"unknown metric {bad[0]!r}" if bad else f"{value!r}"
        raise FgtoolError(f"train.eval: {what}; choose none or a comma list of {', '.join(TRAIN_METRICS)}")
    return [n for n in dict.fromkeys(names) if n != "none"]


def list_recipes() -> list[dict[str, str]]:
    """The shipped recipes: name, one-line description and file."""
    return [{"name": n, "description": recipe_description(RECIPES_DIR / f"{n}.toml"),
             "path": str(RECIPES_DIR / f"{n}.toml")} for n in recipe_names()]


def find_recipe(path: str | Path) -> Path:
    """A recipe file: ``path`` itself when it is a file, else the shipped recipe of that name
    (``tiny`` or ``tiny.toml``)."""
    p = Path(path)
    if p.is_file():
        return p
    name = p.name[:-5] if p.name.endswith(".toml") else p.name
    if len(p.parts) == 1 and (RECIPES_DIR / f"{name}.toml").is_file():
        return RECIPES_DIR / f"{name}.toml"
    raise FgtoolError(f"recipe not found: {path} (not a file, nor a recipe name: "
                      f"{', '.join(recipe_names())}; see fgtool recipes)")


def load_recipe(path: str | Path | None) -> dict[str, dict[str, Any]]:
    if path is None:
        return {}
    p = find_recipe(path)
    try:
        with open(p, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise FgtoolError(f"recipe {p} is not valid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise FgtoolError(f"recipe {p} is not valid TOML: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except RecursionError:
        raise FgtoolError(f"recipe {p} is not valid TOML: values nested too deeply") from None
    except OSError as e:
        raise FgtoolError(f"cannot read recipe {p}: {e.strerror or e}") from None
    for k, v in data.items():
        if not isinstance(v, dict):
            raise FgtoolError(f"recipe {p}: top-level key '{k}' must be a [section]")
    try:
        _check_recipe(data)
    except FgtoolError as e:
        raise FgtoolError(f"recipe {p}: {e}") from None
    return data


def _check_recipe(data: dict) -> None:
    """What can be checked before ``--set`` and ``--model`` are merged in, so that the error
    names the recipe file: sections, [data]/[train] keys and types, [model.<name>] table
    names, and the [model] keys when the recipe names its model."""
    from . import registry

    for section in data:
        if section not in ("data", "train", "model"):
            raise FgtoolError(f"unknown section '[{section}]'; valid sections: data, train, model")
    for section, cls in SECTIONS.items():
        build_dataclass(cls, data.get(section, {}), section)
    model = data.get("model", {})
    for key, table in model.items():
        if not isinstance(table, dict):
            continue
        if key not in registry.names():
            raise FgtoolError(f"unknown table [model.{key}]; tables must be named after a model: "
                              f"{', '.join(registry.names())}")
        build_dataclass(registry.get(key).Config, table, "model")  # [model.<name>]: that backend's keys
    if "name" in model:
        resolve({"model": model})  # the named backend's keys and types (its own table included)


def merge(*layers: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for section, values in layer.items():
            out.setdefault(section, {}).update(values)
    return out


def resolve(raw: dict[str, dict[str, Any]], model: str | None = None) -> RunConfig:
    """Validate a merged recipe dict into a :class:`RunConfig` (backend Config included)."""
    from . import registry  # late: registry imports backends, which import config

    valid = ["data", "train", "model"]
    for section in raw:
        if section not in valid:
            raise FgtoolError(f"unknown section '[{section}]'; valid sections: {', '.join(valid)}")
    model_values = dict(raw.get("model", {}))
    name = model or model_values.pop("name", None) or "finegan"
    if not isinstance(name, str):
        raise FgtoolError(f"model.name must be a model name (a string), got {name!r}")
    model_values.pop("name", None)
    backend_cls = registry.get(name)
    # A recipe may hold per-backend tables ([model.finegan], [model.c3gan]): the chosen
    # backend's table applies, the others are ignored. That keeps tiny.toml one file.
    for key in [k for k, v in model_values.items() if isinstance(v, dict)]:
        table = model_values.pop(key)
        if key == name:
            model_values = {**table, **model_values}
        elif key not in registry.names():
            raise FgtoolError(f"unknown table [model.{key}]; tables must be named after a model: "
                              f"{', '.join(registry.names())}")
    return RunConfig(
        model=name,
        data=build_dataclass(DataConfig, raw.get("data", {}), "data"),
        train=build_dataclass(TrainConfig, raw.get("train", {}), "train"),
        model_cfg=build_dataclass(backend_cls.Config, model_values, "model"),
    )


def from_dict(d: dict) -> RunConfig:
    """Inverse of :meth:`RunConfig.to_dict` (used when a checkpoint rebuilds itself)."""
    return resolve({k: dict(v) for k, v in d.items()})


def validate(cfg: RunConfig) -> None:
    t = cfg.train
    if t.precision not in ("auto", "no", "fp16", "bf16"):
        raise FgtoolError(f"train.precision must be auto, no, fp16 or bf16, got {t.precision!r}")
    for key in ("steps", "batch_size", "log_every", "sample_every", "ckpt_every"):
        if getattr(t, key) < 1:
            raise FgtoolError(f"train.{key} must be >= 1, got {getattr(t, key)}")
    if cfg.data.size < 16 or cfg.data.size % 16:
        raise FgtoolError(f"data.size must be a multiple of 16 and >= 16, got {cfg.data.size}")
    if cfg.data.box_mode not in ("auto", "gt", "pseudo", "none"):
        raise FgtoolError(f"data.box_mode must be auto, gt, pseudo or none, got {cfg.data.box_mode!r}")
    _check_domains(cfg)


SEED_MAX = 2**31 - 1  # numpy seeds take 32 bits and each process adds its rank


def _finite(v: Any) -> bool:
    import math

    return all(_finite(x) for x in v) if isinstance(v, (list, tuple)) else \
        not isinstance(v, float) or math.isfinite(v)


def _check_domains(cfg: RunConfig) -> None:
    """Every value's domain, before any work: the same for --dry-run, training and a config
    read back from a checkpoint, so none of them meets a value the nets cannot take."""
    t, d = cfg.train, cfg.data
    if t.batch_size < 2:  # BatchNorm needs two values per channel in training
        raise FgtoolError(f"train.batch_size must be >= 2 (batch statistics need two images), got {t.batch_size}")
    if not 0 <= t.seed <= SEED_MAX:
        raise FgtoolError(f"train.seed must be in 0..{SEED_MAX}, got {t.seed}")
    if not (_finite(t.ema_decay) and 0.0 <= t.ema_decay <= 1.0):
        raise FgtoolError(f"train.ema_decay must be in [0, 1] (0 disables the EMA), got {t.ema_decay}")
    report_to(t.report_to)
    eval_metrics(t.eval)
    if t.ema_start < 0:
        raise FgtoolError(f"train.ema_start must be >= 0, got {t.ema_start}")
    for key, word in (("keep", "all"), ("threads", "auto")):
        if getattr(t, key) != word and getattr(t, key) < 1:
            raise FgtoolError(f"train.{key} must be >= 1 or \"{word}\", got {getattr(t, key)}")
    if d.max_images != "all" and d.max_images < 1:
        raise FgtoolError(f"data.max_images must be >= 1 or \"all\", got {d.max_images}")
    if d.workers < 0:
        raise FgtoolError(f"data.workers must be >= 0, got {d.workers}")
    for key, lo, hi in (("crop_scale", 0.0, None), ("pseudo_border", 0.0, 0.5), ("bg_crop_min", 0.0, 1.0)):
        v = getattr(d, key)
        if not _finite(v) or v < lo or (hi is not None and v > hi) or (key == "crop_scale" and v <= 0):
            rng = f"in [{lo:g}, {hi:g}]" if hi is not None else "a finite number > 0"
            raise FgtoolError(f"data.{key} must be {rng}, got {v}")
    _check_model_domains(cfg)


# model keys by name: widths and counts are positive, rates finite and positive, weights and
# probabilities finite and non-negative; a backend's own checks (in its constructor) come after
_POSITIVE_INT = ("n_child", "n_parent", "n_classes", "n_parts", "n_per", "overcluster", "z_dim", "cz_dim",
                 "bg_dim", "p_dim", "c_dim", "ngf", "ndf", "top_mult", "mlp_hidden", "emb_dim", "mask_ch",
                 "mask_blocks", "gen_ch", "gen_min_ch", "spade_hidden", "seg_width", "start_div", "enc_width",
                 "pair_width", "pair_hidden", "seg_batch")


def _check_model_domains(cfg: RunConfig) -> None:
    import torch

    from . import registry

    m = cfg.model_cfg
    for f in dataclasses.fields(m):
        v = getattr(m, f.name)
        where = f"model.{f.name}"
        if isinstance(v, bool) or not isinstance(v, (int, float, list, tuple)):
            continue
        if not _finite(v):
            raise FgtoolError(f"{where} must be finite, got {v}")
        if f.name in _POSITIVE_INT and isinstance(v, int) and v < 1:
            raise FgtoolError(f"{where} must be >= 1, got {v}")
        if f.name.startswith("lr") and isinstance(v, float) and not v > 0:
            raise FgtoolError(f"{where} (a learning rate) must be > 0, got {v}")
        if (f.name.startswith("w_") or f.name.startswith("aug_p_")) and isinstance(v, float) and v < 0:
            raise FgtoolError(f"{where} must be >= 0, got {v}")
        if f.name.startswith("aug_p_") and isinstance(v, float) and v > 1:
            raise FgtoolError(f"{where} (a probability) must be in [0, 1], got {v}")
        if f.name == "betas" and not all(0.0 <= b < 1.0 for b in v):
            raise FgtoolError(f"{where} must be two numbers in [0, 1), got {v}")
    backend = registry.get(cfg.model)
    try:
        b = backend(m, cfg.data.size)  # the backend's own checks (e.g. n_child a multiple of n_parent)
        with torch.device("meta"):  # the architecture at this size, without allocating a weight
            b.build()
    except FgtoolError:
        raise
    except (ValueError, ZeroDivisionError, RuntimeError, AssertionError, TypeError, IndexError) as e:
        why = " ".join(str(e).split())[:160] or type(e).__name__
        raise FgtoolError(f"model {cfg.model} cannot be built with this config at data.size={cfg.data.size} "
                          f"({why})") from None
