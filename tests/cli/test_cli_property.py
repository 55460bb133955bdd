"""A property test over the whole CLI (hypothesis): every subcommand with drawn option values
(out of range, empty, negative, huge, of the wrong type) and drawn paths (an output over an
input, inside one or holding one; a name that escapes its folder; a FIFO, a device, a symlink;
a missing file). Whatever is drawn:

* the exit code is 0 or 2, and exit 2 is one ``fgtool: error:`` line with no traceback;
* nothing changed (appeared, was rewritten or vanished) outside the places the command was told
  to write to (``--out``, ``--frames-dir`` and their folders), nor inside anything it reads;
* a refusal (exit 2) changed nothing at all;
* no FIFO was ever opened.

The CLI runs in-process on tiny checkpoints made once per session. Examples are derandomized
(CI stays deterministic); ``FGTOOL_CLI_EXAMPLES`` raises the count (default 300).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import TINY
from guard_helpers import Fifo, tiny_ckpt, tree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fgtool.cli import main

EXAMPLES = int(os.environ.get("FGTOOL_CLI_EXAMPLES", "300"))
PROP = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def ws(synth_dir, tmp_path_factory):
    """The workspace: data, references, checkpoints, a FIFO, and free/ (the working folder)."""
    base = tmp_path_factory.mktemp("guard-ckpts-prop")
    root = tmp_path_factory.mktemp("cli-prop")
    imgs = sorted((synth_dir / "images").rglob("*.png"))
    (root / "data").mkdir()
    for i, f in enumerate(imgs[:12]):
        shutil.copy(f, root / "data" / f"{i:03d}.png")
    shutil.copytree(synth_dir, root / "cub")
    (root / "refs").mkdir()
    shutil.copy(imgs[0], root / "refs" / "ref.png")
    (root / "refs" / "notes.png").write_text("not a picture")
    (root / "outside").mkdir()
    shutil.copy(imgs[1], root / "outside" / "victim.png")
    os.symlink(root / "outside" / "victim.png", root / "refs" / "link.png")
    (root / "ckpts").mkdir()
    for m in ("finegan", "mixnmatch", "ganseg"):
        shutil.copy(tiny_ckpt(m, synth_dir, base), root / "ckpts" / f"{m}.pt")
    (root / "ckpts" / "garbage.pt").write_bytes(b"\x00not a checkpoint")
    (root / "free").mkdir()
    (root / "free" / "mixes").mkdir()
    os.symlink(root / "outside", root / "free" / "mixes" / "link_out")
    ref = root / "refs" / "ref.png"
    for name, out in {"good": "m0.png", "dotdot": "../../outside/victim.png", "abs": str(root / "outside/victim.png"),
                      "link": "link_out/victim.png"}.items():
        (root / "refs" / f"{name}.csv").write_text(f"bg,shape,texture,pose,out\n{ref},{ref},{ref},{ref},{out}\n")
    preds = {"items": [{"path": str(p), "cluster": i % 3} for i, p in enumerate(sorted((root / "data").iterdir()))]}
    (root / "refs" / "pred.json").write_text(json.dumps(preds))
    preds["items"][0]["cluster"] = 1.5
    (root / "refs" / "pred_frac.json").write_text(json.dumps(preds))
    fifo = Fifo(root / "refs" / "fifo.png")
    cwd = os.getcwd()
    os.chdir(root / "free")  # relative paths ("../data/x.png") start here
    try:
        yield root, fifo
    finally:
        os.chdir(cwd)
        fifo.close()
    assert not fifo.opened, "fgtool opened a FIFO"


# ----------------------------------------------------------------------------- draws

COUNT = st.sampled_from(["-1", "0", "1", "2", "3", "8", "1000000", "99999999999999999999", "abc", "", "1.5",
                         "nan", "-0"])
SEED = st.sampled_from(["0", "1", "-1", "4294967296", "99999999999999999999", "x"])
# the usable value comes up more often than each broken one, so that the conflicts between
# outputs and inputs are reached by commands that get past their first checks
DATA = st.sampled_from(["../data"] * 4 + ["../cub"] * 3 + [
    "../refs/ref.png", "../refs/fifo.png", "../refs/missing", "../refs/notes.png", "/dev/null", "../refs", ""])
CKPT = {m: st.sampled_from([f"../ckpts/{m}.pt"] * 6 + [
    "../ckpts/garbage.pt", "../refs/fifo.png", "/dev/null", "../ckpts/missing.pt", "../data", "../ckpts/finegan.pt"])
    for m in ("finegan", "mixnmatch", "ganseg")}
REF = st.sampled_from(["../refs/ref.png"] * 4 + ["../refs/fifo.png", "../refs/link.png", "../refs/missing.png",
                                                "../refs/notes.png", "../data", "/dev/null"])
# outputs: a free place, or one over, inside or holding an input, or not a regular file
PLACES = ["o", "sub/o", "../data", "../data/o", "../data/000", "../cub", "../cub/images", "../cub/images/o",
          "../refs/ref", "../refs/fifo", "../ckpts/finegan", "../outside/victim", "..", "/dev/null", "."]


def outs(*exts: str):
    return st.sampled_from([n if n in ("/dev/null", ".", "..") else f"{n}{e}" for n in PLACES for e in exts])


def opt(name: str, values) -> st.SearchStrategy:
    """``[name, value]`` or nothing (the option left at its default)."""
    return st.one_of(st.just([]), values.map(lambda v: [name, v]))


def req(name: str, values) -> st.SearchStrategy:
    return values.map(lambda v: [name, v])


def cmd(*parts) -> st.SearchStrategy:
    return st.tuples(*[p if isinstance(p, st.SearchStrategy) else st.just([p] if isinstance(p, str) else p)
                       for p in parts]).map(lambda xs: [a for x in xs for a in x])


SETS = st.sampled_from(["data.size=48", "data.size=0", "train.batch_size=1", "train.batch_size=0", "model.ngf=0",
                        "model.n_child=0", "model.lr_g=nan", "model.lr_d=-1", "train.seed=-1", "train.ema_decay=5",
                        "train.steps=1", "train.steps=-3", "data.max_images=-2", "model.z_dim=1000000000000",
                        "train.keep=-1", "data.crop_scale=inf", "model.betas=[1.5,0.9]", "nope.x=1"])

COMMANDS = st.one_of(
    cmd("sample", req("--ckpt", CKPT["finegan"]), opt("--out", outs(".png", "")), opt("--n", COUNT),
        opt("--seed", SEED), opt("--fix", st.sampled_from(["p=1", "c=99", "q=1", "p", "p=-1"])),
        opt("--vary", st.sampled_from(["z", "c", "q", ""])), st.just(["--no-grids"])),
    cmd("cluster", req("--ckpt", CKPT["finegan"]), req("--data", DATA), req("--out", outs(".json")),
        opt("--k", COUNT), opt("--max-images", COUNT), opt("--seed", SEED),
        opt("--features", st.sampled_from(["all", "parent", "bogus"])),
        opt("--split", st.sampled_from(["train", "test", "bogus"])), st.just(["--quiet"])),
    cmd("eval", req("--metric", st.sampled_from(["nmi", "nmi,acc", "bogus", "", "iou"])), req("--data", DATA),
        st.one_of(req("--ckpt", CKPT["finegan"]),
                  req("--pred", st.sampled_from(["../refs/pred.json", "../refs/pred_frac.json", "../refs/fifo.png",
                                                 "../refs/ref.png", "../refs/missing.json"]))),
        opt("--k", COUNT), opt("--max-images", COUNT), st.just(["--quiet"])),
    cmd("segment", req("--ckpt", CKPT["ganseg"]), req("--data", DATA), req("--out", outs("")),
        opt("--batch-size", COUNT), opt("--max-images", COUNT), st.just(["--quiet"])),
    cmd("gif", req("--ckpt", CKPT["finegan"]), req("--out", outs(".gif", ".png")), opt("--frames", COUNT),
        opt("--fps", COUNT), opt("--n", COUNT), opt("--seed", SEED), opt("--walk", st.sampled_from(["z", "c", "q"])),
        opt("--frames-dir", outs(""))),
    cmd("mix", req("--ckpt", CKPT["mixnmatch"]), opt("--bg", REF), opt("--shape", REF), opt("--base", REF),
        req("--out", outs(".png", "")), opt("--seed", SEED)),
    cmd("mix", req("--ckpt", CKPT["mixnmatch"]),
        req("--batch", st.sampled_from(["../refs/good.csv", "../refs/dotdot.csv", "../refs/abs.csv",
                                        "../refs/link.csv", "../refs/fifo.png", "../refs/missing.csv"])),
        req("--out", st.sampled_from(["mixes", "../data", "../refs", "mixes/sub", "/dev/null", "..", "../outside"]))),
    cmd("info", req("--ckpt", CKPT["finegan"])),
    cmd("export", req("--ckpt", CKPT["mixnmatch"]), req("--out", outs(".safetensors", ""))),
    cmd("train", st.just(["--model", "finegan", "--recipe", str(TINY), "--quiet", "--set", "train.sample_every=100"]),
        req("--data", DATA), req("--out", outs("")), st.lists(SETS, max_size=2).map(
            lambda xs: [a for s in xs for a in ("--set", s)]),
        st.sampled_from([["--dry-run"], ["--dry-run"], ["--dry-run"], []])),
    cmd("data", "synth", req("--out", outs("")), req("--n", st.sampled_from(["-1", "0", "2", "x"])),
        opt("--size", st.sampled_from(["-5", "0", "15", "16"])), st.just(["--quiet"])),
)


def _outputs(root: Path, argv: list) -> list[Path]:
    """Where the command was told to write: the folder of each --out / --frames-dir (a file
    output's grids, sheets and overview go beside it), or free/ for the defaults."""
    places = [root / "free"]
    for flag, value in zip(argv, argv[1:]):
        if flag in ("--out", "--frames-dir") and value:
            p = (root / "free" / value).resolve()
            places += [p, p.parent]
    return places


INPUT_FLAGS = ("--data", "--ckpt", "--bg", "--shape", "--texture", "--pose", "--base", "--batch", "--pred",
               "--image", "--from", "--like")


def _protected(root: Path, argv: list, before: dict, after: dict) -> list[str]:
    """Paths that changed (appeared, changed or vanished) outside every place the command was
    told to write to, or inside anything it reads."""
    changed = [k for k in set(before) | set(after) if before.get(k) != after.get(k)]
    places = _outputs(root, argv)
    inputs = [(root / "free" / v).resolve() for f, v in zip(argv, argv[1:]) if f in INPUT_FLAGS and v]
    if "--batch" in argv:
        inputs.append(root / "refs" / "ref.png")  # what the CSVs name
    bad = []
    for k in changed:
        p = (root / k).resolve() if not (root / k).is_symlink() else (root / k)
        if not any(p == q or q in p.parents for q in places) or any(p == i or i in p.parents for i in inputs):
            bad.append(k)
    return bad


@PROP
@given(argv=COMMANDS)
def test_every_command_exits_0_or_2_and_changes_nothing_it_reads(ws, capsys, argv):
    root, fifo = ws
    before = tree(root)
    capsys.readouterr()
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc in (0, 2), (argv, rc, err)
    assert "Traceback" not in err, (argv, err)
    if rc == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("fgtool: error: "), (argv, err)
    after = tree(root)
    changed = _protected(root, argv, before, after)
    assert not changed, (argv, rc, changed)
    if rc == 2:  # a refusal comes before anything is written
        assert after == before, (argv, err, sorted(set(after) ^ set(before)))
    assert not fifo.opened, argv
