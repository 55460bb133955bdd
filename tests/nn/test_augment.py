"""fgtool.nn.augment: the affine perturbation and the contrastive views."""

import torch

from fgtool.nn.augment import color_jitter, random_affine, simclr_view


def test_affine_perturbation_identity_and_shared_warp():
    x = torch.rand(2, 1, 16, 16)
    y, _ = random_affine(x, (1.0, 1.0), 0.0, 0.0)
    assert torch.allclose(x, y, atol=1e-5)
    torch.manual_seed(1)
    m, grid = random_affine(x, (0.8, 1.5), 15.0, 0.15)
    t, _ = random_affine(x, (0.8, 1.5), 15.0, 0.15, grids=grid)
    assert torch.equal(m, t) and not torch.allclose(m, x)


def test_views_stay_in_range_and_jitter_off_is_identity():
    torch.manual_seed(0)
    x = torch.rand(6, 3, 16, 16) * 2 - 1
    v = simclr_view(x)
    assert v.shape == x.shape and v.min() >= -1 and v.max() <= 1 and not torch.allclose(v, x)
    assert torch.allclose(color_jitter(x, p=0.0, p_gray=0.0), x, atol=1e-6)
    g = color_jitter(x, p=0.0, p_gray=1.0)
    assert torch.allclose(g[:, 0], g[:, 1]) and torch.allclose(g[:, 1], g[:, 2])
