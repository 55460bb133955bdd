"""fgtool.nn.losses: NT-Xent, cosine logits, binary entropy, the background D's real terms."""

import math

import torch
import torch.nn.functional as F

from fgtool.nn.losses import binary_entropy, cosine_logits, nt_xent


def test_nt_xent_matches_the_formula_and_rewards_agreeing_views():
    torch.manual_seed(0)
    a, b = torch.randn(4, 8), torch.randn(4, 8)
    f = F.normalize(torch.cat([a, b]), dim=1)
    sim = f @ f.t() / 0.5
    want = 0.0
    for i in range(8):
        j = (i + 4) % 8
        others = torch.cat([sim[i, :i], sim[i, i + 1:]])
        want += -(sim[i, j] - torch.logsumexp(others, 0))
    assert math.isclose(float(nt_xent(a, b, 0.5)), float(want / 8), rel_tol=1e-5)
    assert nt_xent(a, a + 0.01 * torch.randn(4, 8), 0.1) < nt_xent(a, b, 0.1)


def test_cosine_logits_and_binary_entropy():
    h = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    l = torch.tensor([[3.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    lg = cosine_logits(h, l, 0.1)
    assert torch.allclose(lg[0], torch.tensor([10.0, 0.0, 10 / math.sqrt(2)]), atol=1e-4)
    assert float(binary_entropy(torch.tensor([0.0, 1.0])).max()) < 1e-4
    assert math.isclose(float(binary_entropy(torch.tensor([0.5]))), math.log(2), rel_tol=1e-5)


def test_background_real_terms_count_crop_patches_as_real_background():
    from fgtool.nn.blocks import PatchDiscriminator
    from fgtool.nn.losses import background_real_terms, bce

    torch.manual_seed(0)
    D = PatchDiscriminator(8, 32)
    full = torch.randn(4, 3, 32, 32)
    fg = torch.zeros(4, 1, 32, 32)
    fg[:, :, 8:24, 8:24] = 1
    base = {"image": full, "full": full, "fg": fg}
    r0, a0, w = background_real_terms(D, base, 0, 0.5, 0)
    crop = torch.randn(4, 3, 32, 32)
    ok = torch.tensor([1.0, 0.0, 1.0, 1.0])
    r1, a1, _ = background_real_terms(D, {**base, "bg_crop": crop, "bg_crop_ok": ok}, 0, 0.5, 0)
    adv, aux = D(full)
    c_adv, c_aux = D(crop)
    wc = ok.view(-1, 1, 1, 1).expand_as(c_adv)
    want_r = ((bce(adv, 1.0, "none") * w).sum() + (bce(c_adv, 1.0, "none") * wc).sum()) / (w.sum() + wc.sum())
    want_a = (bce(aux, w, "none").sum() + (bce(c_aux, 1.0, "none") * wc).sum()) / (w.numel() + wc.sum())
    assert torch.allclose(r1, want_r) and torch.allclose(a1, want_a)
    assert not torch.allclose(r0, r1) and torch.allclose(a0, bce(aux, w))
