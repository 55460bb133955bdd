"""Property-based fuzzing (hypothesis): the recipe/override parser, the image loader and the
checkpoint reader either succeed or raise :class:`FgtoolError` (exit 2, one line), never
anything else (which would be exit 1 with a traceback).

Examples are derandomized (same inputs every run: CI stays deterministic) and there is no
example database on disk; ``FGTOOL_FUZZ_EXAMPLES`` raises the count for a longer hunt.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from fgtool import checkpoint as ckpt
from fgtool import config as C
from fgtool.data.datasets import scan
from fgtool.errors import FgtoolError
from fgtool.io.images import load_image

FUZZ = settings(max_examples=int(os.environ.get("FGTOOL_FUZZ_EXAMPLES", "200")), deadline=None,
                derandomize=True, database=None, suppress_health_check=list(HealthCheck))

SECTIONS = ["data", "train", "model", "trian", ""]
KEYS = ["steps", "batch_size", "size", "root", "precision", "skip_bad", "flip", "seed", "ngf", "name",
        "finegan", "mask_area", "nope", "crop_scale", "finegan.ngf", ""]


def _resolve_all(raw: dict) -> None:
    cfg = C.resolve(raw)
    C.validate(cfg)
    C.from_dict(cfg.to_dict())  # and what a checkpoint would store comes back


def _user_error_or_ok(fn, *args):
    try:
        return fn(*args)
    except FgtoolError as e:
        msg = str(e)
        assert msg and "\n" not in msg
        msg.encode("utf-8")  # printable on any terminal
        return None


# ----------------------------------------------------------------------------- --set


@FUZZ
@given(st.lists(st.text(max_size=40), max_size=4))
@example(["model.name=[1]"])  # found by hand: TypeError (unhashable) before config.resolve checked it
@example(["train.steps=" + "[" * 5000])  # RecursionError in tomllib
@example(["data.root=\udcff\udcfe"])  # a non-UTF-8 path from the shell
def test_parse_set_random_text(items):
    raw = _user_error_or_ok(C.parse_set, items)
    if raw is not None:
        _user_error_or_ok(_resolve_all, raw)


toml_literals = st.one_of(
    st.integers(-2**70, 2**70).map(str), st.floats(allow_nan=True).map(repr), st.sampled_from(
        ["true", "false", "nan", "inf", "-inf", "[]", "[1, 2]", "[0.2, 0.4]", "{}", "{ngf = 3}", "'x'", '"bf16"',
         "bf16", "no", "1979-05-27", "[[1]]", "[" * 3000, "0x10", "1_000", "1e400", "tiny", "(0.2,0.4)", "0.2,0.4"]),
    st.text(max_size=12))


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(SECTIONS), st.sampled_from(KEYS), toml_literals), max_size=4))
def test_parse_set_structured_overrides(triples):
    items = [f"{s}.{k}={v}" if s else f"{k}={v}" for s, k, v in triples]
    raw = _user_error_or_ok(C.parse_set, items)
    if raw is not None:
        _user_error_or_ok(_resolve_all, raw)


# ----------------------------------------------------------------------------- recipes


_tmp = Path(".")  # set per module run (pytest's tmp folder) by _workdir


@pytest.fixture(scope="module", autouse=True)
def _workdir(tmp_path_factory):
    global _tmp
    _tmp = tmp_path_factory.mktemp("fuzz")


def _load_recipe_bytes(data: bytes):
    p = _tmp / "recipe.toml"
    p.write_bytes(data)
    raw = C.load_recipe(p)
    _resolve_all(raw)


@FUZZ
@given(st.binary(max_size=200))
@example(b"[train]\nsteps = 2 # \xff\n")  # UnicodeDecodeError escaped before
@example(b"[train]\nsteps = " + b"[" * 5000)  # RecursionError escaped before
@example(b"[model]\nname = [1]\n")
def test_load_recipe_random_bytes(data):
    _user_error_or_ok(_load_recipe_bytes, data)


@FUZZ
@given(st.binary(max_size=64), st.integers(0, 10_000), st.sampled_from(["insert", "truncate", "replace"]))
def test_load_recipe_mutated_real_recipe(junk, where, how):
    base = TINY.read_bytes()
    k = where % (len(base) + 1)
    data = {"insert": base[:k] + junk + base[k:], "truncate": base[:k],
            "replace": base[:k] + junk + base[k + len(junk):]}[how]
    _user_error_or_ok(_load_recipe_bytes, data)


@FUZZ
@given(st.dictionaries(st.sampled_from(SECTIONS[:4]),
                       st.dictionaries(st.sampled_from(KEYS[:-2]), toml_literals, max_size=4), max_size=3))
def test_load_recipe_structured(sections):
    text = "".join(f"[{s}]\n" + "".join(f"{k} = {v}\n" for k, v in kv.items()) for s, kv in sections.items())
    _user_error_or_ok(_load_recipe_bytes, text.encode("utf-8", "surrogateescape"))


# ----------------------------------------------------------------------------- images


def _encoded(fmt: str, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(0)
    arr = (rng.random((24, 20, 3)) * 255).astype(np.uint8)
    img = Image.fromarray(arr).convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


VALID = {("PNG", "RGB"): _encoded("PNG"), ("PNG", "RGBA"): _encoded("PNG", "RGBA"), ("PNG", "P"): _encoded("PNG", "P"),
         ("JPEG", "RGB"): _encoded("JPEG"), ("JPEG", "L"): _encoded("JPEG", "L"), ("GIF", "P"): _encoded("GIF", "P"),
         ("BMP", "RGB"): _encoded("BMP"), ("WEBP", "RGB"): _encoded("WEBP")}


def _check_load(data: bytes, suffix: str) -> None:
    p = _tmp / f"img{suffix}"
    p.write_bytes(data)
    try:
        img = load_image(p)
    except FgtoolError as e:
        assert str(p) in str(e) and "\n" not in str(e)
        return
    assert img.mode == "RGB" and img.width >= 1 and img.height >= 1
    np.asarray(img)  # the pixels are really there


def _png_header(w: int, h: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


@FUZZ
@given(st.binary(max_size=2000), st.sampled_from([".png", ".jpg", ".gif", ".webp"]))
@example(b"", ".jpg")
@example(_png_header(10000, 10000), ".png")  # over Pillow's limit, under 2x: Pillow only warns
@example(_png_header(1, 1), ".png")
def test_load_image_random_bytes(data, suffix):
    _check_load(data, suffix)


@FUZZ
@given(st.sampled_from(sorted(VALID)), st.floats(0, 1))
def test_load_image_truncated(kind, frac):
    data = VALID[kind]
    _check_load(data[: int(len(data) * frac)], ".png" if kind[0] == "PNG" else ".jpg")


@FUZZ
@given(st.sampled_from(sorted(VALID)), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)),
                                                 min_size=1, max_size=8))
def test_load_image_corrupted_bytes(kind, edits):
    data = bytearray(VALID[kind])
    for pos, val in edits:
        data[pos % len(data)] = val
    _check_load(bytes(data), ".img.png")


@FUZZ
@given(st.binary(min_size=1, max_size=300), st.integers(0, 10**6))
def test_scan_survives_a_bad_file_in_a_folder(junk, seed):
    """The folder scan turns any broken file into a one-line error or a counted skip."""
    folder = _tmp / "scan"
    folder.mkdir(exist_ok=True)
    for f in folder.iterdir():
        f.unlink()
    (folder / "good.png").write_bytes(VALID[("PNG", "RGB")])
    base = VALID[sorted(VALID)[seed % len(VALID)]]
    (folder / "bad.png").write_bytes(base[: seed % len(base)] + junk)
    _user_error_or_ok(scan, folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        iset = scan(folder, skip_bad=True)
    assert 1 <= len(iset) <= 2


# ----------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def ckpt_bytes(tmp_path_factory) -> bytes:
    """A real checkpoint of the tiny model (untrained: only the format matters here)."""
    from fgtool import api, registry

    cfg = api.resolve_config("finegan", None, str(TINY), [])
    nets = registry.get("finegan")(cfg.model_cfg, cfg.data.size).build()
    p = tmp_path_factory.mktemp("fuzzck") / "last.pt"
    ckpt.save(p, config=cfg.to_dict(), step=1, nets={k: v.state_dict() for k, v in nets.items()})
    assert ckpt.load(p)["step"] == 1
    return p.read_bytes()


@settings(FUZZ, max_examples=min(FUZZ.max_examples, 60))
@given(data=st.data())
def test_checkpoint_reader_truncated_or_corrupted(ckpt_bytes, data):
    b = bytearray(ckpt_bytes)
    if data.draw(st.booleans()):
        b = b[: data.draw(st.integers(0, len(b) - 1))]
    else:
        for _ in range(data.draw(st.integers(1, 6))):
            b[data.draw(st.integers(0, len(b) - 1))] = data.draw(st.integers(0, 255))
    assume(bytes(b) != ckpt_bytes)
    p = _tmp / "fuzz.pt"
    p.write_bytes(bytes(b))
    ck = _user_error_or_ok(ckpt.load, p)
    if ck is not None:  # a flipped byte inside tensor data is not detectable: the header must still be ok
        assert ck["format"] == ckpt.FORMAT and isinstance(ck["config"], dict)
