"""Metric tests: values are checked against hand-computed or independently computed numbers."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from fgtool.errors import FgtoolError
from fgtool.metrics import (
    acc,
    ari,
    cluster_metrics,
    dice,
    fg_iou,
    kmeans,
    nmi,
    part_iou,
    pixel_kmeans_floor,
    seg_metrics,
)

# ------------------------------------------------------------------ clustering

# contingency [[2,1,0],[0,1,2]]: H(labels)=1 bit, H(pred)=log2(3), MI=2/3 bit (see below)
Y = [0, 0, 0, 1, 1, 1]
P = [0, 0, 1, 1, 2, 2]


def test_nmi_arithmetic_matches_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 50)
    p = rng.integers(0, 6, 50)
    assert nmi(y, p) == pytest.approx(normalized_mutual_info_score(y, p))
    assert nmi(Y, P, "arithmetic") == pytest.approx(normalized_mutual_info_score(Y, P))


def test_nmi_max_hand_computed():
    # MI cells: (0,0) and (1,2) each p=1/3 with p(x)p(y)=1/6 -> (1/3)*log2(2) each;
    # (0,1),(1,1) have p=1/6 = p(x)p(y) -> 0.  MI = 2/3.
    mi = 2 * (1 / 3) * math.log2((1 / 3) / (1 / 2 * 1 / 3))
    h_y = -2 * 0.5 * math.log2(0.5)
    h_p = -3 * (1 / 3) * math.log2(1 / 3)
    assert mi == pytest.approx(2 / 3)
    expected_max = mi / max(h_y, h_p)
    expected_arith = mi / ((h_y + h_p) / 2)
    assert nmi(Y, P, "max") == pytest.approx(expected_max)
    assert nmi(Y, P, "arithmetic") == pytest.approx(expected_arith)
    # entropies differ, so the two normalisations must differ
    assert abs(expected_max - expected_arith) > 0.05


def test_nmi_max_equals_the_old_values():
    """nmi_max is sklearn's average_method="max" now; the numbers are those of the former
    log2 contingency-table code (recorded from it), to 1e-12."""
    rng = np.random.default_rng(11)
    cases = [(Y, P), ([0] * 4, [0] * 4), ([0, 1, 0, 1], [0] * 4), (["a", "b", "b"], [5, 9, 9])]
    cases += [(rng.integers(0, kc, n), rng.integers(0, kp, n)) for n, kc, kp in [(40, 3, 5), (200, 10, 12),
                                                                               (1000, 20, 20)]]
    old = [0.42061983571430495, 1.0, 0.0, 0.9999999999999998, 0.10112365656815517, 0.09285275218119596,
           0.059917555693573044]
    for (y, p), want in zip(cases, old):
        assert nmi(y, p, "max") == pytest.approx(want, abs=1e-12)
        assert nmi(y, p, "max") == normalized_mutual_info_score(y, p, average_method="max")


def test_nmi_permutation_invariance_perfect_and_degenerate():
    y = [0, 0, 1, 1, 2, 2]
    relabelled = [7, 7, 3, 3, 5, 5]
    for v in ("arithmetic", "max"):
        assert nmi(y, relabelled, v) == pytest.approx(1.0)
        # permuting samples jointly leaves NMI unchanged
        perm = np.random.default_rng(1).permutation(len(Y))
        assert nmi(np.array(Y)[perm], np.array(P)[perm], v) == pytest.approx(nmi(Y, P, v))
        assert nmi(y, [0] * 6, v) == pytest.approx(0.0)
        assert nmi([1] * 4, [2] * 4, v) == pytest.approx(1.0)
    # string labels are mapped to ints
    assert nmi(["a", "a", "b", "b", "c", "c"], [1, 1, 0, 0, 9, 9], "max") == pytest.approx(1.0)


def test_acc_hand_examples():
    assert acc([0, 0, 1, 1, 2, 2], [2, 2, 0, 0, 1, 1]) == pytest.approx(1.0)
    # contingency rows: c0 {p1:2, p0:1}, c1 {p0:2, p2:1}, c2 {p2:2}; best 0->1,1->0,2->2 = 6/8
    labels = [0, 0, 0, 1, 1, 1, 2, 2]
    pred = [1, 1, 0, 0, 0, 2, 2, 2]
    assert acc(labels, pred) == pytest.approx(6 / 8)
    # fewer clusters than classes: only one class can be matched per cluster
    assert acc([0, 1, 2, 2], [0, 0, 0, 0]) == pytest.approx(2 / 4)


def test_acc_overclustering():
    labels = [0] * 4 + [1] * 4
    pred = [0, 0, 1, 1, 2, 2, 3, 3]  # K = 2C: each class split in two clusters
    assert acc(labels, pred) == pytest.approx(1.0)  # default overcluster = ceil(4/2) = 2
    assert acc(labels, pred, overcluster=1) == pytest.approx(0.5)
    with pytest.raises(FgtoolError):
        acc(labels, pred, overcluster=0)


def test_ari_matches_sklearn():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 40)
    p = rng.integers(0, 5, 40)
    assert ari(y, p) == pytest.approx(adjusted_rand_score(y, p))


def test_cluster_metrics_keys_and_validation():
    out = cluster_metrics(Y, P)
    assert set(out) == {"nmi", "nmi_max", "acc", "ari", "n", "k_pred", "k_true"}
    assert out["nmi_max"] == pytest.approx(nmi(Y, P, "max"))
    # hand: clusters 0->class0 (2), 2->class1 (2), overcluster 2 lets cluster 1 join one (1)
    assert out["acc"] == pytest.approx(5 / 6)
    assert (out["n"], out["k_pred"], out["k_true"]) == (6, 3, 2)
    assert set(cluster_metrics(Y, P, metrics=("nmi_max",))) == {"nmi_max", "n", "k_pred", "k_true"}
    with pytest.raises(FgtoolError):
        cluster_metrics(Y, P, metrics=("bogus",))
    with pytest.raises(FgtoolError):
        nmi([0, 1], [0, 1, 2])
    with pytest.raises(FgtoolError):
        acc([], [])
    with pytest.raises(FgtoolError):
        nmi(Y, P, variant="geometric")


def test_kmeans_and_pixel_floor():
    rng = np.random.default_rng(3)
    pts = np.concatenate([rng.normal(c, 0.05, (10, 2)) for c in ((0, 0), (5, 5), (0, 5))])
    truth = np.repeat([0, 1, 2], 10)
    assert nmi(truth, kmeans(pts, 3)) == pytest.approx(1.0)
    with pytest.raises(FgtoolError):
        kmeans(pts, 0)

    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=np.float64)
    imgs = np.repeat(colours, 6, axis=0)[:, None, None, :] + rng.normal(0, 10, (18, 16, 16, 3))
    imgs = np.clip(imgs, 0, 255).astype(np.uint8)
    labels = np.repeat(["red", "green", "blue"], 6)
    out = pixel_kmeans_floor(imgs, labels, k=3)  # 16 px -> resized to 32 px
    assert out["nmi"] == pytest.approx(1.0) and out["acc"] == pytest.approx(1.0)
    assert out["n"] == 18


# ------------------------------------------------------------------ segmentation


def test_iou_dice_hand_examples():
    gt = np.zeros((4, 4), bool)
    gt[:2, :2] = True  # 4 px
    pred = np.zeros((4, 4), bool)
    pred[:2, :3] = True  # 6 px, 4 overlap
    assert fg_iou(pred, gt) == pytest.approx(4 / 6)
    assert dice(pred, gt) == pytest.approx(2 * 4 / (6 + 4))
    empty = np.zeros((4, 4), np.uint8)
    assert fg_iou(empty, empty) == 1.0 and dice(empty, empty) == 1.0
    assert fg_iou(empty, gt) == 0.0 and dice(gt.astype(np.uint8), empty) == 0.0
    # torch tensors work the same
    assert fg_iou(torch.from_numpy(pred), torch.from_numpy(gt)) == pytest.approx(4 / 6)


def test_iou_averages_per_image_not_pooled():
    gt = np.zeros((2, 4, 4), bool)
    pred = np.zeros((2, 4, 4), bool)
    gt[0, 0, 0] = pred[0, 0, 0] = True  # image 0: IoU 1
    gt[1, :2, :] = True  # 8 px
    pred[1, 0, :] = True  # 4 px inside -> IoU 0.5, DICE 8/12
    assert fg_iou(pred, gt) == pytest.approx(0.75)
    pooled = (1 + 4) / (1 + 8)
    assert abs(fg_iou(pred, gt) - pooled) > 0.1
    assert dice(pred, gt) == pytest.approx((1 + 8 / 12) / 2)
    out = seg_metrics(pred[:, None].astype(np.float32), gt)  # [N,1,H,W] accepted
    assert out == pytest.approx({"iou": 0.75, "dice": (1 + 8 / 12) / 2, "n": 2})


def test_seg_resize_and_validation():
    gt = np.zeros((1, 4, 4), bool)
    gt[0, :2, :2] = True
    small = np.array([[[1, 0], [0, 0]]])  # nearest upsample -> exactly gt
    assert fg_iou(small, gt) == pytest.approx(1.0)
    with pytest.raises(FgtoolError):
        fg_iou(np.zeros((2, 4, 4)), np.zeros((3, 4, 4)))
    with pytest.raises(FgtoolError):
        fg_iou(np.zeros(5), np.zeros(5))


def test_part_iou():
    gt = np.array([[0, 0, 1, 1], [0, 0, 2, 2]])
    pred = np.array([[0, 1, 1, 1], [0, 0, 2, 0]])
    # part0: inter 3, union 5; part1: inter 2, union 3; part2: inter 1, union 2; part3 absent
    assert part_iou(pred, gt, 4) == pytest.approx((3 / 5 + 2 / 3 + 1 / 2) / 3)


def test_seg_metrics_by_group():
    from fgtool.metrics.segmentation import seg_metrics

    gt = np.zeros((4, 4, 4), bool)
    gt[:, :2] = True
    pred = gt.copy()
    pred[2:] = True  # images 2, 3: everything foreground, IoU 0.5
    r = seg_metrics(pred, gt, groups=[0, 0, 1, -1], names=["sky", "bricks"])
    assert r["iou"] == pytest.approx(0.75)
    assert r["iou_by_group"] == {"sky": {"iou": 1.0, "fg_fraction": 0.5, "n": 2},
                                 "bricks": {"iou": 0.5, "fg_fraction": 1.0, "n": 1}}
