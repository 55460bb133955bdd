"""Config versions and migrations: how a config stored in an older checkpoint still loads after
an option is removed, renamed or given another spelling.

Every checkpoint and export stores ``CONFIG_VERSION``, the version of the config layout it was
written with (one stored before versions existed is version 1). Loading one runs the
migrations from its version up to this one on its stored config, in order. Recipes and
``--set`` never pass through here: an unknown key there stays an error.

A migration is a function ``config dict -> None`` that edits the plain dict in place
(``{"model": {"name": ..., ...}, "data": {...}, "train": {...}}``) with the helpers below: drop
a removed key, rename one, map an old value to its new one. A removed key is dropped only
when it holds the value that behaves as the model does now; any other value is an error, as
the checkpoint was trained with something this fgtool no longer has.

To add one: write the function, append it to ``MIGRATIONS`` and raise ``CONFIG_VERSION`` by
one (CONTRIBUTING.md, "Changing a config option").
"""

from __future__ import annotations

import copy
from typing import Any, Callable

from .errors import FgtoolError

ANY = object()  # drop(): a removed key whose every value behaved as the model does now


def _same(value: Any, old: Any) -> bool:
    if isinstance(value, (list, tuple)) and isinstance(old, (list, tuple)):
        return list(value) == list(old)
    return old is ANY or (type(value) is not bool) == (type(old) is not bool) and value == old


def _section(cfg: dict, section: str, models: tuple[str, ...] | None) -> dict | None:
    sec = cfg.get(section)
    if not isinstance(sec, dict):
        return None
    if models is not None and cfg.get("model", {}).get("name") not in models:
        return None
    return sec


def drop(cfg: dict, section: str, key: str, old: Any = ANY, models: tuple[str, ...] | None = None) -> None:
    """Remove ``section.key``; only ``old`` (the value that behaves as the model does now) is
    accepted, any other value is an error. ``models``: only configs of these models."""
    sec = _section(cfg, section, models)
    if sec is None or key not in sec:
        return
    value = sec.pop(key)
    if not _same(value, old):
        raise FgtoolError(f"it was trained with {section}.{key}={value!r}, an option this fgtool no longer has "
                          f"(only {old!r}, which behaves as the model does now, loads)")


def rename(cfg: dict, section: str, key: str, new: str, models: tuple[str, ...] | None = None) -> None:
    """``section.key`` is now called ``section.new``."""
    sec = _section(cfg, section, models)
    if sec is not None and key in sec:
        sec[new] = sec.pop(key)


def remap(cfg: dict, section: str, key: str, values: dict | Callable[[Any], Any],
          models: tuple[str, ...] | None = None) -> None:
    """Replace the stored value of ``section.key``: where ``values`` has it (old -> new), or
    by ``values(old)`` when it is a function."""
    sec = _section(cfg, section, models)
    if sec is None or key not in sec:
        return
    if callable(values):
        sec[key] = values(sec[key])
        return
    for old, new in values.items():
        if _same(sec[key], old):
            sec[key] = new
            return


# ----------------------------------------------------------------------------- the migrations


def _v1_to_v2(cfg: dict) -> None:
    """FineGAN and MixNMatch options deleted before configs had a version (no shipped recipe
    turned them on; docs/models/finegan.md and mixnmatch.md): configs stored since hold them
    at the value that behaves as the model does now."""
    for key, old in (("bg_real_floor", 0.0), ("child_in_parent", False), ("info_p_blur", 0.0), ("bg_z", True),
                     ("perturb_scale", (0.0, 0.0)), ("perturb_rot", -1.0), ("perturb_shift", -1.0),
                     ("phi_width", 0)):
        drop(cfg, "model", key, old, models=("finegan", "mixnmatch"))
    # the reconstruction search (recon_*; w_assign_* only weighed it), w_iic_p and s_width
    for key, old in (("recon_p", "encoder"), ("recon_c", "encoder"), ("w_iic_p", 0.0), ("s_width", 0),
                     ("w_assign_p", ANY), ("w_assign_c", ANY)):
        drop(cfg, "model", key, old, models=("mixnmatch",))


def _below(limit: int, word: str) -> Callable[[Any], Any]:
    """An old number under ``limit`` (0 or -1, the old "unset") becomes ``word``."""
    return lambda v: word if isinstance(v, (int, float)) and not isinstance(v, bool) and v < limit else v


def _v2_to_v3(cfg: dict) -> None:
    """Magic numbers became words (TOML has no null): 0 or -1 meant all, auto or never."""
    remap(cfg, "data", "split", {"": "all"})
    remap(cfg, "data", "max_images", {0: "all"})
    remap(cfg, "train", "keep", {0: "all"})
    remap(cfg, "train", "threads", {0: "auto"})
    for key in ("phase2_start", "real_start"):
        remap(cfg, "model", key, {-1: "never"}, models=("onegan",))
    for key in ("enc_width", "pair_width", "pair_hidden"):  # 0: derived from ndf
        remap(cfg, "model", key, {0: "auto"}, models=("mixnmatch", "onegan"))
    remap(cfg, "model", "margin", _below(0, "auto"), models=("ganseg",))
    remap(cfg, "model", "seg_batch", {0: "auto"}, models=("ganseg",))
    remap(cfg, "model", "self_band", _below(0, "auto"), models=("ganseg", "onegan"))
    remap(cfg, "model", "phi_every", _below(1, "never"), models=("finegan", "mixnmatch"))
    remap(cfg, "model", "hard_start", lambda v: "never" if v is None else v, models=("finegan", "mixnmatch"))


def _v3_to_v4(cfg: dict) -> None:
    """Options that no recipe turned on and no doc measured: C3-GAN's explicit warp ranges
    (perturb_scale, perturb_rot, perturb_shift: the presets are the ranges) and info weight
    warm-up (info_warmup); OneGAN's background-patch floor (bg_real_floor) and detached encoder
    input (enc_to_g = false: eq. 12-13 always train the generators, as the paper's)."""
    for key, old in (("perturb_scale", (0.0, 0.0)), ("perturb_rot", -1.0), ("perturb_shift", -1.0),
                     ("info_warmup", 0)):
        drop(cfg, "model", key, old, models=("c3gan",))
    for key, old in (("bg_real_floor", 0.0), ("enc_to_g", True)):
        drop(cfg, "model", key, old, models=("onegan",))


def _v4_to_v5(cfg: dict) -> None:
    """Stage starts whose 0 meant "no such stage" are "never" (a step 0 is a step)."""
    for key in ("seg_start", "self_start"):
        remap(cfg, "model", key, {0: "never"}, models=("ganseg", "onegan"))
    remap(cfg, "model", "stage2_start", {0: "never"}, models=("mixnmatch",))


def _v5_to_v6(cfg: dict) -> None:
    """GANSeg's mirrored point layouts (point_flip): no recipe turned them on, and at K = 4 they
    lowered the foreground IoU and the landmark gain (docs/experiments/ganseg-parts.md)."""
    drop(cfg, "model", "point_flip", False, models=("ganseg",))


# MIGRATIONS[n - 1] turns a version-n config into a version n + 1 one
MIGRATIONS: list[Callable[[dict], None]] = [_v1_to_v2, _v2_to_v3, _v3_to_v4, _v4_to_v5, _v5_to_v6]
CONFIG_VERSION = len(MIGRATIONS) + 1


def check_version(version: Any) -> int:
    """A stored config version as an int (None: 1, stored before versions existed); a damaged
    one or one newer than this fgtool is a one-line error."""
    if version is None:
        return 1
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise FgtoolError(f"its config version is damaged ({version!r})")
    if version > CONFIG_VERSION:
        raise FgtoolError(f"its config has version {version}; this fgtool reads up to {CONFIG_VERSION}: "
                          "upgrade fgtool")
    return version


def migrate(cfg: dict, version: Any) -> dict:
    """A copy of ``cfg`` (stored at config ``version``) in this fgtool's layout."""
    version = check_version(version)
    out = copy.deepcopy(cfg)
    for step in MIGRATIONS[version - 1:]:
        step(out)
    return out
