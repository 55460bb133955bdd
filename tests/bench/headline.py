"""The README's headline numbers: measured into results/<name>.json, rendered into README.md.

    python tests/bench/headline.py measure demo                    # make demo: train + eval (~10 min)
    python tests/bench/headline.py measure demo --ckpt RUN/last.pt --data DATA   # the eval steps only
    python tests/bench/headline.py measure synth-floor --data data/synth64
    python tests/bench/headline.py measure synth-finegan --ckpt RUN/last.pt --data data/synth64
    python tests/bench/headline.py render            # rewrite README.md's marked numbers from results/
    python tests/bench/headline.py render --check    # exit 1 when README.md differs from results/
    python tests/bench/headline.py compare demo RUN/metrics.json   # `make demo` ends with this

A number in README.md that comes from results/ sits between markers,
``<!-- result NAME FIELD -->0.807<!-- /result -->`` (FIELD: ``value``, ``floor`` or a dotted
path such as ``extra.parent_nmi``; see ``render``), and ``render`` writes it from
results/NAME.json. A results file records the model, the data, the metric, the value (and the
floor it must beat; where one is set, the target and whether it is met), the commands
that produced it, the training time of the checkpoint, fgtool's git commit and the date.
fgtool runs as ``python -m fgtool`` with this script's interpreter; the commands are recorded
as ``fgtool ...``. Only the standard library is imported here.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "results"
README = ROOT / "README.md"
MARKER = re.compile(r"<!-- result (?P<name>[\w-]+) (?P<field>[\w.]+)(?::(?P<fmt>%|0))? -->"
                    r"(?P<text>.*?)<!-- /result -->")

SYNTH = "synthetic, 6,000 images at 64 px, 12 children of 4 shapes (fgtool data synth --n 6000 --size 64 --seed 0)"

def from_demo_metrics(metrics: dict) -> dict:
    """value, floor and extras from the metrics.json that assets/demo.sh writes."""
    c, f = metrics["clusters"]["metrics"], metrics["floor_pixels"]["metrics"]
    return {"value": c["nmi"], "floor": f["nmi"], "extra": {"acc": c["acc"], "ari": c["ari"], "floor_acc": f["acc"]}}


def _read_demo(outs: list[dict]) -> dict:
    return from_demo_metrics({"clusters": outs[1], "floor_pixels": outs[2]})


def _read_floor(outs: list[dict]) -> dict:
    m = outs[0]["metrics"]
    return {"value": m["nmi"], "floor": m["nmi"], "extra": {"acc": m["acc"], "label": m["label"]}}


def _read_finegan(outs: list[dict]) -> dict:
    child, parent, floor, parent_floor = (o["metrics"] for o in outs)
    return {"value": child["nmi"], "floor": floor["nmi"],
            "extra": {"acc": child["acc"], "floor_acc": floor["acc"], "parent_nmi": parent["nmi"],
                      "parent_floor": parent_floor["nmi"]}}


def _read_mix(outs: list[dict]) -> dict:
    x = outs[0]["metrics"]
    return {"value": x["mix_shape"] / 100, "floor": x["mix_chance_shape"] / 100,
            "extra": {"texture": x["mix_texture"] / 100, "texture_chance": x["mix_chance_texture"] / 100,
                      "pose_iou": x["mix_pose_iou"], "feature_shape": x["mix_feature_shape"] / 100,
                      "feature_texture": x["mix_feature_texture"] / 100}}


# What each headline is. `eval` lists the commands that score a checkpoint (or, with no model,
# the data alone); DATA, CKPT and TMP are filled in. `read` turns their outputs into value, floor
# and extras.
HEADLINES = {
    "demo": {
        "model": "c3gan",
        "data": "synthetic, 2,000 images at 64 px, 12 classes (fgtool data synth --n 2000 --size 64 --seed 0)",
        "trained_by": "bash assets/demo.sh OUT (make demo): 1,750 steps of synth-c3gan, ndf 32, K = 12, w_entropy 0.5",
        "metric": "nmi",
        "floor_what": "k-means on the pixels, k = 12",
        "eval": [
            ["cluster", "--ckpt", "CKPT", "--data", "DATA", "--out", "TMP/clusters.json", "--quiet", "--json"],
            ["eval", "--metric", "nmi,acc,ari", "--pred", "TMP/clusters.json", "--data", "DATA", "--json"],
            ["eval", "--metric", "nmi,acc", "--baseline", "pixels", "--data", "DATA", "--quiet", "--json"],
        ],
        "read": _read_demo,
    },
    "synth-finegan": {
        "model": "finegan",
        "data": SYNTH,
        "trained_by": "fgtool train --model finegan --data DATA --recipe synth-finegan --set train.threads=1",
        "metric": "nmi",
        "target": 0.9,
        "floor_what": "k-means on the pixels, k = 12",
        "eval": [
            ["eval", "--metric", "nmi,acc", "--ckpt", "CKPT", "--data", "DATA", "--k", "12", "--json"],
            ["eval", "--metric", "nmi,acc", "--ckpt", "CKPT", "--data", "DATA", "--features", "parent",
             "--label", "parent", "--k", "4", "--json"],
            ["eval", "--metric", "nmi,acc", "--baseline", "pixels", "--data", "DATA", "--k", "12", "--json"],
            ["eval", "--metric", "nmi", "--baseline", "pixels", "--data", "DATA", "--label", "parent", "--k", "4",
             "--json"],
        ],
        "read": _read_finegan,
    },
    "synth-mixnmatch": {
        "model": "mixnmatch",
        "data": SYNTH,
        "trained_by": "fgtool train --model mixnmatch --data DATA --recipe synth-mixnmatch --set train.threads=1",
        "metric": "mix_shape",
        "target": 0.9,
        "floor_what": "chance: 1 of 4 shapes (texture: 1 of 12)",
        "eval": [["eval", "--metric", "mix", "--ckpt", "CKPT", "--data", "DATA", "--json"]],
        "read": _read_mix,
    },
    "synth-floor": {
        "model": None,
        "data": "synthetic, 6,000 images at 64 px, 12 children (fgtool data synth --n 6000 --size 64 --seed 0)",
        "metric": "nmi",
        "floor_what": "k-means on the pixels, k = 12 (the floor itself)",
        "eval": [["eval", "--metric", "nmi,acc", "--baseline", "pixels", "--data", "DATA", "--json"]],
        "read": _read_floor,
    },
}


def _fill(argv: list[str], subs: dict[str, str]) -> list[str]:
    out = []
    for a in argv:
        for key, val in subs.items():
            a = a.replace(key, val)
        out.append(a)
    return out


def _fgtool(argv: list[str]) -> dict:
    p = subprocess.run([sys.executable, "-m", "fgtool", *argv], capture_output=True, text=True, cwd=ROOT)
    if p.returncode:
        sys.exit(f"fgtool {' '.join(argv)}: exit {p.returncode}\n{p.stderr}")
    return json.loads(p.stdout)


def _commit(paths: list[str]) -> str:
    """HEAD, with +dirty when the files that measured (paths) differ from it."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", *paths], capture_output=True, text=True,
                           cwd=ROOT).stdout.strip()
    return head + ("+dirty" if dirty else "")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def train_minutes(ckpt: Path) -> float | None:
    """Training time up to the checkpoint's step, from its run folder's metrics.jsonl: each logged
    interval's steps over its logged rate (it_s). Chunked or resumed runs add up; the time spent
    starting processes does not count. None when the folder has no log."""
    log = ckpt.parent / "metrics.jsonl"
    if not log.is_file():
        return None
    step = _fgtool(["info", "--ckpt", str(ckpt), "--json"])["step"]
    rows = [json.loads(line) for line in log.read_text().splitlines() if '"it_s"' in line]
    seconds, prev = 0.0, 0
    for r in sorted({r["step"]: r for r in rows}.values(), key=lambda r: r["step"]):  # a resumed run may repeat steps
        if r["step"] > step:
            break
        seconds += (r["step"] - prev) / r["it_s"]
        prev = r["step"]
    return round(seconds / 60, 1)


def measure(name: str, ckpt: str | None, data: str | None) -> dict:
    spec = HEADLINES[name]
    with tempfile.TemporaryDirectory() as tmp:
        if name == "demo" and ckpt is None:  # the whole of make demo: data, training, eval
            commands = [["bash", "assets/demo.sh", f"{tmp}/demo"]]
            p = subprocess.run(commands[0], cwd=ROOT)
            if p.returncode:
                sys.exit(f"assets/demo.sh: exit {p.returncode}")
            got = from_demo_metrics(json.loads(Path(f"{tmp}/demo/metrics.json").read_text()))
            ckpt_path = Path(f"{tmp}/demo/run/last.pt")
            ckpt_info = {"path": "TMP/demo/run/last.pt", "sha256": _sha256(ckpt_path)}
        else:
            if data is None or (spec["model"] and ckpt is None):
                sys.exit(f"{name}: give --data{' and --ckpt' if spec['model'] else ''}")
            subs = {"CKPT": str(ckpt), "DATA": str(data), "TMP": tmp}
            commands = [_fill(c, subs) for c in spec["eval"]]
            got = spec["read"]([_fgtool(c) for c in commands])
            ckpt_info = {"path": str(ckpt), "sha256": _sha256(Path(ckpt))} if ckpt else None
            if ckpt and name != "demo":  # the demo's time is make demo's, stated with its command
                ckpt_info["train_min"] = train_minutes(Path(ckpt))
            commands = [["fgtool", *c] for c in commands]
    target = spec.get("target")
    return {
        "name": name, "model": spec["model"], "data": spec["data"], "metric": spec["metric"],
        "value": got["value"], "floor": got["floor"], "floor_what": spec["floor_what"], "extra": got["extra"],
        **({"target": target, "met": got["value"] >= target} if target is not None else {}),
        "trained_by": spec.get("trained_by"), "checkpoint": ckpt_info,
        "commands": [shlex.join(c).replace(tmp, "TMP") for c in commands],  # TMP: a temp folder
        "fgtool_commit": _commit(["fgtool", *(["assets/demo.sh"] if commands[0][0] == "bash" else [])]),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def load_results(folder: Path = RESULTS) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def render(text: str, results: dict[str, dict]) -> str:
    """text with every marked number written from results. FIELD is a key of the results file,
    or a dotted path into it (``extra.parent_nmi``, ``checkpoint.train_min``); the number is
    written with three decimals, or with ``FIELD:%`` as a percentage with one, or with
    ``FIELD:0`` rounded to a whole number."""
    def one(m: re.Match) -> str:
        name, field, fmt = m["name"], m["field"], m["fmt"]
        if name not in results:
            raise KeyError(f"README.md marks a result {name!r} that results/ does not have")
        v = results[name]
        for key in field.split("."):
            v = v[key]
        text = f"{100 * v:.1f}%" if fmt == "%" else f"{v:.0f}" if fmt == "0" else f"{v:.3f}"
        return f"<!-- result {name} {field}{':' + fmt if fmt else ''} -->{text}<!-- /result -->"

    return MARKER.sub(one, text)


def compare(name: str, metrics_json: Path) -> str:
    """One line: this demo run's number beside the README's (results/NAME.json)."""
    got = from_demo_metrics(json.loads(metrics_json.read_text()))
    path = RESULTS / f"{name}.json"
    if not path.is_file():
        return f"no {path.relative_to(ROOT)} to compare with; this run: NMI {got['value']:.3f}"
    want = json.loads(path.read_text())
    same = f"{got['value']:.3f}" == f"{want['value']:.3f}"
    return (f"NMI {got['value']:.3f} (floor {got['floor']:.3f}); the README's, from results/{name}.json: "
            f"{want['value']:.3f} (floor {want['floor']:.3f}){'' if same else ' -- this run differs'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure")
    m.add_argument("name", choices=sorted(HEADLINES))
    m.add_argument("--ckpt")
    m.add_argument("--data")
    r = sub.add_parser("render")
    r.add_argument("--check", action="store_true")
    c = sub.add_parser("compare")
    c.add_argument("name", choices=["demo"])
    c.add_argument("metrics", type=Path)
    a = ap.parse_args(argv)
    if a.cmd == "measure":
        res = measure(a.name, a.ckpt, a.data)
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{a.name}.json").write_text(json.dumps(res, indent=1) + "\n")
        print(f"results/{a.name}.json: {res['metric']} {res['value']:.3f} (floor {res['floor']:.3f})")
    elif a.cmd == "render":
        text = README.read_text()
        new = render(text, load_results())
        if a.check:
            if new != text:
                print("README.md's marked numbers differ from results/: run tests/bench/headline.py render")
                return 1
        elif new != text:
            README.write_text(new)
    else:
        print(compare(a.name, a.metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
