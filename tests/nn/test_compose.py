"""fgtool.nn.compose: Gaussian heatmaps on the pixel grid."""

import pytest
import torch

from fgtool.errors import FgtoolError
from fgtool.nn.compose import child_parent_codes, gaussian_heatmaps, pixel_grid


def test_heatmaps_use_sigma_squared():
    grid = pixel_grid(8, 0)
    c = torch.tensor([[[0.125, -0.125]]])
    h = gaussian_heatmaps(grid, c, torch.tensor([[0.5]]))
    d2 = ((grid - c[0, 0]) ** 2).sum(-1)
    assert torch.allclose(h[0, 0], torch.exp(-d2 / 0.25), atol=1e-6)
    assert h[0, 0].max() == pytest.approx(1.0, abs=1e-6)


def test_fixed_parent_and_child_codes_are_checked_as_given():
    """--fix p out of range names p (it used to fail on the children it implied), and a fixed
    child under another parent is refused instead of silently moving p."""
    with pytest.raises(FgtoolError, match=r"code p must be in 0\.\.4"):
        child_parent_codes(3, 20, 4, {"p": 5})
    with pytest.raises(FgtoolError, match="disagree"):
        child_parent_codes(3, 20, 4, {"p": 0, "c": 4})
    c, p = child_parent_codes(3, 20, 4, {"p": 1, "c": 7})
    assert c.tolist() == [7, 7, 7] and p.tolist() == [1, 1, 1]
    c, p = child_parent_codes(64, 20, 4, {"p": 2}, torch.Generator().manual_seed(0))
    assert set(c.tolist()) <= {8, 9, 10, 11} and p.tolist() == [2] * 64
