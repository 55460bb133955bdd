"""fgtool.nn.compose: Gaussian heatmaps on the pixel grid."""

import pytest
import torch

from fgtool.nn.compose import gaussian_heatmaps, pixel_grid


def test_heatmaps_use_sigma_squared():
    grid = pixel_grid(8, 0)
    c = torch.tensor([[[0.125, -0.125]]])
    h = gaussian_heatmaps(grid, c, torch.tensor([[0.5]]))
    d2 = ((grid - c[0, 0]) ** 2).sum(-1)
    assert torch.allclose(h[0, 0], torch.exp(-d2 / 0.25), atol=1e-6)
    assert h[0, 0].max() == pytest.approx(1.0, abs=1e-6)
