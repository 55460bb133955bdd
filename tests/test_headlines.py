"""The README's headline numbers come from results/: each marked number is what
tests/bench/headline.py renders from its results file, and every other number in the model
table's results column is marked as typed by hand (†)."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest
from conftest import ROOT

_spec = importlib.util.spec_from_file_location("headline", ROOT / "tests" / "bench" / "headline.py")
headline = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(headline)

README = (ROOT / "README.md").read_text()
RESULTS = headline.load_results()


def test_readme_numbers_are_the_rendered_results():
    assert headline.render(README, RESULTS) == README, "run: python tests/bench/headline.py render"
    marked = {m["name"] for m in headline.MARKER.finditer(README)}
    assert marked == set(RESULTS) and {"demo", "synth-floor"} <= marked  # no result unused, none missing


def test_render_writes_the_results_number_over_a_typed_one():
    typed = "NMI **<!-- result demo value -->0.999<!-- /result -->**, floor <!-- result demo floor -->0<!-- /result -->"
    res = {"demo": {"value": 0.80692, "floor": 0.58492}}
    assert headline.render(typed, res) == ("NMI **<!-- result demo value -->0.807<!-- /result -->**, "
                                           "floor <!-- result demo floor -->0.585<!-- /result -->")
    with pytest.raises(KeyError, match="other"):
        headline.render("<!-- result other value -->1<!-- /result -->", res)


def test_render_reads_a_dotted_field_and_writes_percentages_and_whole_numbers():
    res = {"m": {"value": 0.5284, "extra": {"texture": 0.68449}, "checkpoint": {"train_min": 41.6}}}
    fields = ["value:%", "extra.texture:%", "checkpoint.train_min:0", "extra.texture"]
    text = " ".join(f"<!-- result m {f} -->?<!-- /result -->" for f in fields)
    shown = ["52.8%", "68.4%", "42", "0.684"]
    want = " ".join(f"<!-- result m {f} -->{v}<!-- /result -->" for f, v in zip(fields, shown))
    assert headline.render(text, res) == want


def test_train_minutes_add_up_the_logged_intervals_up_to_the_checkpoint(tmp_path, monkeypatch):
    rows = [{"step": 25, "it_s": 0.5}, {"step": 50, "it_s": 1.0}, {"step": 50, "it_s": 1.0},  # resumed: 50 again
            {"step": 75, "eval/nmi": 0.5}, {"step": 100, "it_s": 0.25}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr(headline, "_fgtool", lambda argv: {"step": 50})
    assert headline.train_minutes(tmp_path / "step_0000050.pt") == round((25 / 0.5 + 25 / 1.0) / 60, 1)
    assert headline.train_minutes(tmp_path / "none" / "last.pt") is None


@pytest.mark.parametrize("name", sorted(RESULTS))
def test_a_results_file_says_what_it_measured_and_how(name):
    r = RESULTS[name]
    assert r["name"] == name and r["metric"] and r["data"]
    assert 0 <= r["floor"] <= 1 and 0 <= r["value"] <= 1
    if "target" in r:  # a target is reported as met or not, whatever the number
        assert r["met"] == (r["value"] >= r["target"])
    elif r["model"]:
        assert r["value"] > r["floor"] + 0.1  # a model headline with no target clears its floor
    assert r["commands"] and all(c.startswith(("fgtool ", "bash ")) for c in r["commands"])
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", r["fgtool_commit"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", r["date"])


def test_every_other_number_in_the_results_column_is_marked_typed():
    lines = README.splitlines()
    top = lines.index("## Models")
    start = next(i for i in range(top, len(lines)) if lines[i].startswith("| model |"))
    end = lines.index("", start)
    col = [c.strip() for c in lines[start].split("|")].index("on the synthetic set (2 CPU cores)")
    rows = lines[start + 2:end]
    assert [r.split("|")[1].split("`")[1] for r in rows] == ["finegan", "mixnmatch", "onegan", "c3gan", "ganseg"]
    for row in rows:
        cell = row.split("|")[col]
        bare = headline.MARKER.sub("", cell)
        assert not re.search(r"\d", bare) or "†" in bare, row


def test_compare_reports_a_demo_run_beside_the_readmes_number(tmp_path):
    want = RESULTS["demo"]
    run = {"clusters": {"metrics": {"nmi": want["value"], "acc": 0.7, "ari": 0.6}},
           "floor_pixels": {"metrics": {"nmi": want["floor"], "acc": 0.6}}}
    (tmp_path / "metrics.json").write_text(json.dumps(run))
    line = headline.compare("demo", tmp_path / "metrics.json")
    assert f"NMI {want['value']:.3f}" in line and "differs" not in line
    run["clusters"]["metrics"]["nmi"] = want["value"] - 0.1
    (tmp_path / "metrics.json").write_text(json.dumps(run))
    assert headline.compare("demo", tmp_path / "metrics.json").endswith("this run differs")
