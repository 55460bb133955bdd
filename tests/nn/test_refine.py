"""fgtool.nn.refine: GrabCut refinement of soft masks and inpainting."""

import torch
import torch.nn.functional as F
from conftest import mask_iou, square_scene

S = 32


def test_grabcut_pulls_a_blob_back_to_the_object_edge():
    from fgtool.nn.refine import grabcut_refine

    x, gt = square_scene()
    blob = F.avg_pool2d(F.max_pool2d(gt.float()[:, None], 5, 1, 2), 3, 1, 1)[:, 0]  # 2 px too large, soft
    before = mask_iou(blob > 0.5, gt)
    after = grabcut_refine(x, blob, band=2)
    assert after.dtype == torch.bool and after.shape == gt.shape
    assert before < 0.8 and mask_iou(after, gt) > 0.97
    # no sure foreground (an empty map): the thresholded map is kept
    assert not grabcut_refine(x, torch.zeros_like(blob), band=2).any()
    # sure regions never change: on a flat image only the 2 px band either side is open
    flat = grabcut_refine(torch.zeros_like(x), blob, band=2)
    m = (blob > 0.5).float()[:, None]
    core = (1 - F.max_pool2d(1 - m, 5, 1, 2))[:, 0] > 0.5
    reach = F.max_pool2d(m, 5, 1, 2)[:, 0] > 0.5
    assert torch.all(flat[core]) and not flat[~reach].any()


def test_grabcut_does_not_depend_on_opencvs_global_rng():
    # GrabCut's k-means draws from OpenCV's process-wide RNG; a run resumed in a fresh process
    # must refine the same photo the same way as the uninterrupted run did
    import cv2

    from fgtool.nn.refine import grabcut_refine

    g = torch.Generator().manual_seed(0)
    x = F.avg_pool2d(torch.rand(16, 3, 32, 32, generator=g) * 2 - 1, 3, 1, 1)  # noisy photos
    p = torch.zeros(16, 32, 32)
    p[:, 8:24, 6:22] = 0.9
    outs = []
    for seed in (1, 2, 3):
        cv2.setRNGSeed(seed)
        outs.append(grabcut_refine(x, p, band=2, iters=5))
    assert all(torch.equal(o, outs[0]) for o in outs)
    assert torch.equal(grabcut_refine(x[5:6], p[5:6], band=2, iters=5), outs[0][5:6])  # alone = in a batch


def test_inpaint_fills_a_mask_from_its_surroundings():
    from fgtool.nn.refine import inpaint

    x = torch.tensor([-0.2, 0.4, 0.6]).view(1, 3, 1, 1).repeat(2, 1, S, S)
    obj = torch.zeros(2, S, S, dtype=torch.bool)
    obj[:, 10:20, 12:22] = True
    x[:, :, obj[0]] = torch.tensor([0.9, -0.9, -0.5]).view(3, 1)  # a red square
    y = inpaint(x, obj, grow=1)
    assert y.shape == x.shape
    assert torch.allclose(y[:, :, ~obj[0]], x[:, :, ~obj[0]], atol=1 / 127)  # the rest untouched
    assert torch.allclose(y[:, :, obj[0]], x[:, :, :1, :1].expand(2, 3, 1, 1).reshape(2, 3, 1), atol=2 / 127)
    assert torch.allclose(inpaint(x, torch.zeros_like(obj)), x, atol=1 / 127)  # nothing to fill
