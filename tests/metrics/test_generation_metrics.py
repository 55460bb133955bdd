"""FID, KID and IS: torch-fidelity's statistics on the 2015-12-05 Inception, checked with a small
stand-in feature network (no weights download) and hand-computed values."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import one_error_line, run_cli, run_json, train_tiny

from fgtool.errors import FgtoolError
from fgtool.metrics import (
    InceptionFeatures,
    extract_features,
    feature_stats,
    fid_from_features,
    frechet_distance,
    generation_metrics,
    inception_score,
    kid_from_features,
    resolve_inception_weights,
)
from fgtool.metrics.fid import WEIGHTS_FILE, WEIGHTS_URL

# ------------------------------------------------------------------ FID, KID and IS math


def test_frechet_equal_covariances_is_mean_distance():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(5, 5))
    cov = a @ a.T + np.eye(5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    assert frechet_distance(mu1, cov, mu2, cov) == pytest.approx(float(((mu1 - mu2) ** 2).sum()), rel=1e-6)


def test_frechet_diagonal_closed_form_and_general():
    a = np.array([1.0, 4.0, 9.0])
    b = np.array([4.0, 1.0, 0.25])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    expected = ((np.sqrt(a) - np.sqrt(b)) ** 2).sum() + ((mu1 - mu2) ** 2).sum()
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected)
    # general SPD: Tr sqrt(S1 S2) = sum sqrt(eig(S1 S2)) (eigenvalues real, >= 0)
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    s1, s2 = x @ x.T + 0.1 * np.eye(4), y @ y.T + 0.1 * np.eye(4)
    tr = np.sqrt(np.clip(np.linalg.eigvals(s1 @ s2).real, 0, None)).sum()
    assert frechet_distance(mu1[:3].tolist() + [0], s1, [0, 0, 0, 0], s2) == pytest.approx(
        5 + np.trace(s1) + np.trace(s2) - 2 * tr, rel=1e-6
    )


def test_fid_kid_identical_and_shifted():
    rng = np.random.default_rng(6)
    f = rng.normal(size=(200, 8))
    assert fid_from_features(f, f) == pytest.approx(0.0, abs=1e-6)
    mu, sigma = feature_stats(f)
    assert np.allclose(mu, f.mean(0)) and np.allclose(sigma, np.cov(f.T))
    kid_same, _ = kid_from_features(f, f, n_subsets=20, subset_size=100)
    kid_shift, std = kid_from_features(f, f + 1.0, n_subsets=20, subset_size=100)
    # subsets of one finite pool overlap, so "same" is only ~0 relative to a real shift
    assert abs(kid_same) < 0.02 * kid_shift and std > 0
    g = np.random.default_rng(60).normal(size=(200, 8))  # fresh draw, same distribution
    kid_fresh, _ = kid_from_features(f, g, n_subsets=20, subset_size=100)
    assert abs(kid_fresh) < 0.05 * kid_shift
    assert fid_from_features(f, f + 1.0) == pytest.approx(8.0, rel=1e-6)  # pure mean shift


def test_kid_matches_explicit_unbiased_mmd():
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(5, 3)), rng.normal(0.5, 1, size=(5, 3))
    k = lambda a, b: (a @ b / 3 + 1) ** 3
    m = 5
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    expected = (xx + yy) / (m * (m - 1)) - 2 * xy / m**2
    # subset_size clipped to 5 = whole set, so every subset is a permutation: std 0
    mean, std = kid_from_features(x, y, n_subsets=3, subset_size=1000)
    assert mean == pytest.approx(expected) and std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_hand_values():
    # every image sure of one of C classes, the classes equally often: IS = exp(H(uniform on C)) = C
    c = 5
    logits = np.full((50, 1008), -30.0)
    logits[np.arange(50), np.arange(50) % c] = 30.0
    mean, std = inception_score(logits, splits=1)
    assert mean == pytest.approx(c, rel=1e-6) and std == 0.0
    mean, std = inception_score(logits)  # 10 shuffled splits of 5: fewer classes per split
    assert 1.0 < mean < c and std > 0
    assert inception_score(np.zeros((20, 7)))[0] == pytest.approx(1.0)  # all alike: 1
    with pytest.raises(FgtoolError, match="at least 10 images"):
        inception_score(np.zeros((9, 7)))


class StandIn(nn.Module):
    """A small fixed network in Inception's place: [-1,1] images -> (pool [N,6], logits [N,4])."""

    def __init__(self, weights=None):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, 6, 3)
        self.fc = nn.Linear(6, 4)
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=g)

    def forward(self, x):
        pool = torch.relu(self.conv(x)).mean(dim=(2, 3))
        return pool, self.fc(pool)


def test_generation_metrics_equal_torch_fidelitys_on_the_same_features():
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_isc import isc_features_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric

    g = torch.Generator().manual_seed(0)
    real = [torch.rand(32, 3, 8, 8, generator=g) * 2 - 1 for _ in range(2)]
    fake = [torch.rand(40, 3, 8, 8, generator=g) * 1.5 - 0.5]
    model = StandIn().train()
    res = generation_metrics(real, fake, model, metrics=("fid", "kid", "is"), batch_size=16, kid_subset_size=30)
    assert model.training  # mode restored
    assert res["n_real"] == 64 and res["n_fake"] == 40
    with torch.no_grad():
        pr, _ = model.eval()(torch.cat(real))
        pf, lf = model(torch.cat(fake))
    pr, pf, lf = pr.double(), pf.double(), lf.double()
    want_fid = fid_statistics_to_metric(fid_features_to_statistics(pr), fid_features_to_statistics(pf), False)
    want_kid = kid_features_to_metric(pr, pf, kid_subset_size=30, verbose=False)
    want_is = isc_features_to_metric(lf)
    assert res["fid"] == pytest.approx(want_fid["frechet_inception_distance"], rel=1e-9)
    assert res["kid"] == pytest.approx(want_kid["kernel_inception_distance_mean"], rel=1e-9)
    assert res["kid_std"] == pytest.approx(want_kid["kernel_inception_distance_std"], rel=1e-9)
    assert res["is"] == pytest.approx(want_is["inception_score_mean"], rel=1e-9)
    assert res["is_std"] == pytest.approx(want_is["inception_score_std"], rel=1e-9)
    assert res["fid"] > 0.1 and 1.0 < res["is"] < 4.0
    # IS alone scores the generated images only
    only = generation_metrics(None, fake, model, metrics=("is",), batch_size=16)
    assert set(only) == {"is", "is_std", "n_fake"} and only["is"] == res["is"]
    with pytest.raises(FgtoolError):  # 0..255 images rejected
        extract_features(model, [torch.full((2, 3, 8, 8), 200.0)])
    with pytest.raises(FgtoolError):
        extract_features(model, [])


# ------------------------------------------------------------------ the weights file


def test_resolve_inception_weights(monkeypatch, tmp_path):
    monkeypatch.delenv("FGTOOL_INCEPTION_WEIGHTS", raising=False)
    with pytest.raises(FgtoolError) as e:
        resolve_inception_weights(None)
    for needle in (WEIGHTS_FILE, WEIGHTS_URL, "--inception-weights", "FGTOOL_INCEPTION_WEIGHTS"):
        assert needle in str(e.value)
    with pytest.raises(FgtoolError, match="not found"):
        resolve_inception_weights(tmp_path / "nope.pt")
    f = tmp_path / "w.pt"
    f.write_bytes(b"x")
    monkeypatch.setenv("FGTOOL_INCEPTION_WEIGHTS", str(f))
    assert resolve_inception_weights(None) == f

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(np.random.default_rng(0).bytes(256))
    wrong = tmp_path / "wrong.pt"
    torch.save({"conv.weight": torch.zeros(1)}, wrong)
    for bad in (garbage, wrong):
        with pytest.raises(FgtoolError) as e:
            InceptionFeatures(bad)
        assert "\n" not in str(e.value) and WEIGHTS_FILE in str(e.value) and WEIGHTS_URL in str(e.value)


def test_a_state_dict_shaped_like_the_standard_weights_loads(tmp_path):
    """Random weights in the layout of pt_inception-2015-12-05 (torchvision's Inception3 names,
    1008 classes, no auxiliary head) load; torchvision's ImageNet layout (1000 classes) does not."""
    from torchvision.models import inception_v3

    sd = inception_v3(weights=None, aux_logits=False, num_classes=1008, init_weights=False).state_dict()
    path = tmp_path / WEIGHTS_FILE
    torch.save(sd, path)
    model = InceptionFeatures(path)
    assert not model.training
    with torch.no_grad():
        pool, logits = model(torch.rand(2, 3, 32, 32) * 2 - 1)
    assert pool.shape == (2, 2048) and logits.shape == (2, 1008) and pool.dtype == torch.float32
    assert torch.isfinite(pool).all() and torch.isfinite(logits).all()
    # the input is rounded to 8 bits, as a saved PNG would be
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        same = model(((x + 1) * 127.5).round() / 127.5 - 1)[0]
        assert torch.equal(model(x)[0], same)
    sd["fc.weight"], sd["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)
    torch.save(sd, path)
    with pytest.raises(FgtoolError, match="fc.weight"):
        InceptionFeatures(path)


# ------------------------------------------------------------------ fgtool eval


@pytest.fixture(scope="module")
def ckpt(synth_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "run"
    train_tiny("finegan", out, synth_dir)
    return out / "last.pt"


def test_eval_fid_kid_is(capsys, monkeypatch, ckpt, synth_dir, tmp_path):
    import fgtool.metrics.fid as fid

    monkeypatch.delenv("FGTOOL_INCEPTION_WEIGHTS", raising=False)
    rc, out, err = run_cli(capsys, "eval", "--metric", "fid", "--ckpt", ckpt, "--data", synth_dir, "--quiet")
    assert rc == 2 and out == "" and WEIGHTS_URL in one_error_line(err)
    weights = tmp_path / WEIGHTS_FILE
    weights.write_bytes(b"stand-in")
    monkeypatch.setattr(fid, "InceptionFeatures", StandIn)
    common = ("--ckpt", ckpt, "--data", synth_dir, "--inception-weights", weights, "--quiet")
    rc, out, err = run_cli(capsys, "eval", "--metric", "is", "--n-fake", "9", *common)
    assert rc == 2 and "at least 10" in one_error_line(err)
    ev = run_json(capsys, "eval", "--metric", "fid,kid,is", "--n-fake", "30", *common)["metrics"]
    assert ev["n_real"] == 48 and ev["n_fake"] == 30
    assert ev["fid"] > 0 and math.isfinite(ev["kid"]) and ev["kid_std"] > 0 and 1.0 <= ev["is"] <= 4.0
    ev2 = run_json(capsys, "eval", "--metric", "is", "--n-fake", "30", *common)["metrics"]
    assert set(ev2) == {"is", "is_std", "n_fake"} and ev2["is"] == pytest.approx(ev["is"], rel=1e-12)
    json.dumps(ev)
