"""fgtool.nn.selftrain: the weighted soft Dice loss and pasting kept objects onto crops."""

import pytest
import torch
import torch.nn.functional as F

from fgtool.nn.selftrain import soft_dice_loss

S = 32


def test_soft_dice_loss():
    target = torch.randint(0, 4, (2, 8, 8))
    perfect = F.one_hot(target, 4).permute(0, 3, 1, 2).float() * 50
    assert soft_dice_loss(perfect, target).item() == pytest.approx(0.0, abs=1e-3)
    uniform = torch.zeros(2, 4, 8, 8)
    assert soft_dice_loss(uniform, target).item() > 0.4


def test_soft_dice_loss_leaves_out_zero_weight_pixels():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 2, 8, 8, generator=g)
    target = torch.randint(0, 2, (3, 8, 8), generator=g)
    w = torch.ones(3, 8, 8)
    w[2] = 0
    assert soft_dice_loss(logits, target, weight=w).item() == pytest.approx(
        soft_dice_loss(logits[:2], target[:2]).item(), abs=1e-6)
    assert soft_dice_loss(logits, target).item() != pytest.approx(soft_dice_loss(logits[:2], target[:2]).item(),
                                                                  abs=1e-4)


def test_paste_pairs_cut_kept_objects_onto_crops():
    from fgtool.nn.selftrain import paste_pairs

    real = torch.stack([torch.full((3, S, S), v) for v in (0.5, -0.5, 0.2)])
    lab = torch.ones(3, S, S, dtype=torch.long)  # 1 = background
    lab[:, 4:12, 6:20] = 0
    weight = torch.zeros(3, S, S)
    weight[0] = 1.0  # only the first photo's label is kept
    crops = torch.stack([torch.full((3, S, S), -0.9), torch.full((3, S, S), 0.9)])
    ok = torch.tensor([True, False])  # only the first crop exists
    img, l2, w2 = paste_pairs(real, lab, weight, crops, ok, share=2.0, k=1)
    assert img.shape == (6, 3, S, S) and torch.equal(l2, lab[[0] * 6]) and torch.equal(w2, weight[[0] * 6])
    obj = (lab[0] == 0)
    assert torch.all(img[:, :, obj] == 0.5) and torch.all(img[:, :, ~obj] == -0.9)
    # camouflaged: part of each object takes the crop's colour, the rest and the labels stay
    img, l3, _ = paste_pairs(real, lab, weight, crops, ok, share=2.0, k=1, camo=1.0, camo_shift=0.0)
    inside = img[:, 0][:, obj]
    near = (inside + 0.9).abs() < 1e-5  # the crop's mean colour
    assert torch.equal(l3, l2) and torch.all(near | (inside == 0.5))
    painted = near.float().mean(1)
    assert torch.all(painted > 0.2) and torch.all(painted < 0.8) and torch.all(img[:, :, ~obj] == -0.9)
    assert paste_pairs(real, lab, torch.zeros_like(weight), crops, ok, 1.0, 1) is None  # nothing kept
    assert paste_pairs(real, lab, weight, crops, torch.tensor([False, False]), 1.0, 1) is None  # no crop
    assert paste_pairs(real, lab, weight, crops, ok, 0.0, 1) is None
