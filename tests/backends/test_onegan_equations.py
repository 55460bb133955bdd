"""OneGAN's losses are the paper's equations 10-18 (Benny & Wolf, ECCV 2020), with the paper
recipe's options: each test computes one equation by hand on a tiny model and compares it with
the loss terms the backend computes on the same nets and tensors.

The generated batch is put in the backend's per-iteration cache, and the reconstructions the
G phase draws (random mixup weights and code samples) are recorded as it makes them, so the
hand computation sees exactly the backend's tensors. The nets run in eval mode (the
discriminators' BatchNorm then uses fixed statistics) and in fp32, as the backend casts its
losses to fp32; the hand computations run in float64 from those tensors."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY
from torch.distributions import Normal, kl_divergence

from fgtool import api
from fgtool.backends.onegan import OneGAN

S = 32
N = 4
P2 = 5  # Phase II (reconstruction of fakes and of reals) from this step; step 0 is Phase I
# the paper recipe's settings of the options that decide eq. 10, 15 and 18
PAPER = ("model.kl_reduce=sum", "model.bg_aux_norm=sets", "model.rec_mask_reg=false")
TOL = {"rtol": 1e-6, "atol": 1e-6}


def _d(t: torch.Tensor) -> torch.Tensor:
    return t.detach().double()


def _close(got: torch.Tensor, want: torch.Tensor) -> None:
    got, want = _d(got), _d(want)
    assert torch.allclose(got, want, **TOL), (float(got), float(want))


def _log_sig(x: torch.Tensor) -> torch.Tensor:
    """log(sigmoid(x)) in float64; log(1 - sigmoid(x)) is _log_sig(-x)."""
    x = _d(x)
    return -torch.log1p(torch.exp(-x))


def _ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy by hand: -log softmax(logits)[label], averaged over the batch."""
    lg = _d(logits)
    log_p = lg - torch.logsumexp(lg, 1, keepdim=True)
    return -log_p[torch.arange(lg.shape[0]), labels].mean()


class Setup:
    """A tiny OneGAN in eval mode, one real batch with boxes, one generated batch."""

    def __init__(self, *sets: str):
        cfg = api.resolve_config("onegan", None, str(TINY),
                                 [f"model.phase2_start={P2}", f"model.real_start={P2}", *sets])
        self.b = OneGAN(cfg.model_cfg, cfg.data.size)
        self.c = self.b.cfg
        torch.manual_seed(0)
        self.nets = self.b.build()
        for k, m in self.nets.items():
            m.eval()
            if hasattr(m, "cloned"):  # the clones keep their own weights: a test tells them from Dbg, Dc
                m.cloned.fill_(True)
        g = torch.Generator().manual_seed(1)
        image = torch.rand(N, 3, S, S, generator=g) * 2 - 1
        fg = torch.zeros(N, 1, S, S)
        for i, (y, x) in enumerate([(6, 4), (10, 8), (4, 12), (12, 2)]):  # boxes: unequal patch counts
            fg[i, :, y:y + 14, x:x + 12] = 1
        self.real = {"image": image, "fg": fg}
        self.codes = self.b.sample_codes(N, g)
        with torch.no_grad():
            self.out = self.b._generate_all(self.nets, self.codes)
        self.recons: list[tuple[torch.Tensor, dict]] = []
        orig = self.b._recon_train

        def record(nets, x):
            r = orig(nets, x)
            self.recons.append((x, r))
            return r

        self.b._recon_train = record

    def batch(self) -> dict:
        return {**self.real, "cache": {"gen": (self.out, self.codes)}}

    def loss(self, phase: str, step: int, batch: dict | None = None) -> dict:
        self.recons.clear()
        torch.manual_seed(2)
        with torch.no_grad():
            return self.b.loss(phase, self.nets, self.batch() if batch is None else batch, step)

    # ---- the equations by hand
    def eq10(self, Dbg, Dc, fake_bg, fake_img) -> dict:
        real = self.real["image"]
        a_r, b_r = Dbg(real)
        w = _d(Dbg.patch_weights(self.real["fg"], tuple(a_r.shape[-2:]), 1.0))  # 1: outside the box
        assert 0 < w.sum() < w.numel() / 2  # both sets present, of unequal size
        a_f = Dbg(fake_bg)[0]
        dbg_a = -((w * _log_sig(a_r)).sum() / w.sum() + _log_sig(-a_f).mean())
        dbg_b = -((w * _log_sig(b_r)).sum() / w.sum() + ((1 - w) * _log_sig(-b_r)).sum() / (1 - w).sum())
        dc_a = -(_log_sig(Dc.forward_adv(real)).mean() + _log_sig(-Dc.forward_adv(fake_img)).mean())
        return {"A": dbg_a, "B": dbg_b, "C": dc_a, "L_D": 10 * dbg_a + dbg_b + dc_a}

    def eq11(self, Dbg, Dc, bg, img) -> dict:
        a, b = Dbg(bg)
        gbg_a, gbg_b, gc_a = -_log_sig(a).mean(), -_log_sig(b).mean(), -_log_sig(Dc.forward_adv(img)).mean()
        return {"A": gbg_a, "B": gbg_b, "C": gc_a, "L_G": 10 * gbg_a + gbg_b + gc_a}

    def eq12(self) -> dict:
        E, img = self.nets["E"], self.out["image"]
        ce_p = _ce(E.shape(img)["logits_p"], self.codes["p"])
        ce_c = _ce(E.style(img)["logits_c"], self.codes["c"])
        info = _ce(self.nets["Dc"].forward_info(img), self.codes["c"])
        return {"ce_p": ce_p, "ce_c": ce_c, "info_c": info, "L_E": ce_p + ce_c + info}

    def eq13(self) -> torch.Tensor:
        E, o = self.nets["E"], self.out
        sh, st = E.shape(o["image"]), E.style(o["image"])
        b_bg = E.bg(o["image"], o["mask"])
        return sum(((_d(a) - _d(b)) ** 2).mean() for a, b in
                   ((o["v_c"], st["mu_c"]), (o["v_p"], sh["mu_p"]), (o["A_fg"], sh["B_fg"]), (o["A_bg"], b_bg)))

    def l_rm(self, m: torch.Tensor) -> torch.Tensor:
        """L_RM (ours; the paper defers it to its supplementary): mean binary entropy of the
        mask (clamped to [1e-6, 1 - 1e-6]) + the hinge keeping each image's mean mask in mask_area."""
        m = _d(m)
        e = m.clamp(1e-6, 1 - 1e-6)
        ent = -(e * e.log() + (1 - e) * (1 - e).log()).mean()
        lo, hi = self.c.mask_area
        per = m.mean(dim=(1, 2, 3))
        return ent + ((lo - per).clamp(min=0) + (per - hi).clamp(min=0)).mean()

    def eq14(self) -> torch.Tensor:
        o = self.out
        l_rv = sum(((_d(v) ** 2).mean(1) - 1).pow(2).mean() for v in (o["v_bg"], o["v_p"], o["v_c"]))
        l_g = self.eq11(self.nets["Dbg"], self.nets["Dc"], o["background"], o["image"])["L_G"]
        return l_g + self.eq12()["L_E"] + self.eq13() + 0.1 * l_rv + 2 * self.l_rm(o["mask"])

    @staticmethod
    def eq15(r: dict) -> torch.Tensor:
        def kl(mu, logvar, mean):  # KL(N(mu, diag sigma) || N(mean, I)) per sample, batch mean
            q = Normal(_d(mu), (0.5 * _d(logvar)).exp())
            return kl_divergence(q, Normal(_d(mean), torch.ones_like(_d(mu)))).sum(1).mean()

        return (kl(r["mu_p"], r["lv_p"], r["v_p"]) + kl(r["mu_c"], r["lv_c"], r["v_c"])
                + kl(r["mu_z"], r["lv_z"], torch.zeros_like(r["mu_z"])))

    def eq16(self, path: str, x: torch.Tensor, r: dict) -> torch.Tensor:
        rec = (_d(x) - _d(r["image"])).abs().mean()
        if path == "rf":
            rec = rec + (_d(self.out["background"]) - _d(r["background"])).abs().mean() \
                + (_d(self.out["mask"]) - _d(r["mask"])).abs().mean()
        return rec

    def eq17(self, path: str, x: torch.Tensor, r: dict) -> torch.Tensor:
        Dc, Dbg = self.nets[f"Dc_{path}"], self.nets[f"Dbg_{path}"]
        per = ((_d(Dc.trunk(x)) - _d(Dc.trunk(r["image"]))) ** 2).mean()
        if path == "rf":
            per = per + ((_d(Dbg.trunk(self.out["background"])) - _d(Dbg.trunk(r["background"]))) ** 2).mean()
        return per

    def recon(self) -> dict[str, tuple[torch.Tensor, dict]]:
        """The G phase's reconstructions by path (fakes first, then reals)."""
        assert len(self.recons) == 2
        (xf, rf), (xr, rr) = self.recons
        assert torch.equal(xf, self.out["image"]) and torch.equal(xr, self.real["image"])
        return {"rf": (xf, rf), "rr": (xr, rr)}


@pytest.fixture(scope="module")
def paper() -> Setup:
    return Setup(*PAPER)


@pytest.fixture(scope="module")
def phase2(paper) -> tuple[dict, dict]:
    """The paper setting's G phase in Phase II: its parts and its reconstructions by path."""
    parts = paper.loss("G", P2)
    return parts, paper.recon()


def test_eq10_discriminators(paper):
    """L_D = 10 L_DbgA + L_DbgB + L_DcA, with
    L_DbgA = -(E_{x in Xbg} log DbgA(x) + E_{e,z} log(1 - DbgA(Gbg(e, z)))),
    L_DbgB = -(E_{x in Xbg} log DbgB(x) + E_{x in Xc} log(1 - DbgB(x))),
    L_DcA  = -(E_{x in Xc} log DcA(x) + E_{e,z} log(1 - DcA(G(e, z)))).
    Xbg: the real photos' patches outside the box; Xc: the rest, and the photos for DcA. The
    same for each Phase II path against its own clones, with its reconstructions as fakes."""
    o = paper.out
    parts = paper.loss("D", 0)
    want = paper.eq10(paper.nets["Dbg"], paper.nets["Dc"], o["background"], o["image"])
    _close(parts["d_bg_real"] + parts["d_bg_fake"], want["A"])
    _close(parts["d_bg_aux"], want["B"])
    _close(parts["d_real"] + parts["d_fake"], want["C"])
    _close(parts["loss"], want["L_D"])
    # a Phase II path: its own clones, its reconstruction as the fake
    g = torch.Generator().manual_seed(3)
    rec = {"image": torch.rand(N, 3, S, S, generator=g) * 2 - 1, "background": torch.rand(N, 3, S, S, generator=g)}
    batch = paper.batch()
    batch["cache"]["rr"] = rec
    parts = paper.loss("D_rr", P2, batch)
    want = paper.eq10(paper.nets["Dbg_rr"], paper.nets["Dc_rr"], rec["background"], rec["image"])
    _close(parts["d_rr_bg_aux"], want["B"])
    _close(parts["loss"], want["L_D"])


def test_eq11_generator_adversarial(paper, phase2):
    """L_G = 10 L_GbgA + L_GbgB + L_GcA, with L_GbgA = -E log DbgA(Gbg(e, z)),
    L_GbgB = -E log DbgB(Gbg(e, z)), L_GcA = -E log DcA(G(e, z)) (the generators maximise
    the log of the discriminators' verdicts). On a Phase II path: the same on its
    reconstruction (background and image) against the path's clones."""
    parts = paper.loss("G", 0)
    o = paper.out
    want = paper.eq11(paper.nets["Dbg"], paper.nets["Dc"], o["background"], o["image"])
    _close(parts["g_bg_adv"], want["A"])
    _close(parts["g_bg_aux"], want["B"])
    _close(parts["g_adv"], want["C"])
    parts2, recon = phase2
    for path, (_, r) in recon.items():
        want = paper.eq11(paper.nets[f"Dbg_{path}"], paper.nets[f"Dc_{path}"], r["background"], r["image"])
        _close(parts2[f"{path}_adv"], want["L_G"])


def test_eq12_classification(paper):
    """L_E = CE(e^_p, phi_p) + CE(e^_c, phi_c) + CE(DcB(I), phi_c): the shape and style
    encoders' class predictions on the generated image I, and the image discriminator's
    child-class head, against the parent and child classes I was generated from."""
    parts = paper.loss("G", 0)
    want = paper.eq12()
    for k in ("ce_p", "ce_c", "info_c"):
        _close(parts[k], want[k])
    _close(parts["ce_p"] + parts["ce_c"] + parts["info_c"], want["L_E"])


def test_eq13_distances(paper):
    """L_MSE = MSE(v_c, mu_c) + MSE(v_p, mu_p) + MSE(A_fg, B_fg) + MSE(A_bg, B_bg): the
    generated image's code vectors and pre-images against the encoders' means and bypasses
    (B_bg = Ebg(I, Im) reads the generated mask); each MSE a mean over its elements."""
    _close(paper.loss("G", 0)["mse"], paper.eq13())


def test_eq14_generation_total(paper):
    """L_GEN = L_G + L_E + L_MSE + 0.1 L_Rv + 2 L_RM: the whole G loss of Phase I. L_Rv and
    L_RM are ours (the paper defers them to its supplementary): L_Rv = sum over v_bg, v_p,
    v_c of mean_n (mean_d v^2 - 1)^2, L_RM the mask's binary entropy plus an area hinge."""
    parts = paper.loss("G", 0)
    assert not paper.recons  # Phase I: generation only
    _close(parts["loss"], paper.eq14())


def test_eq15_kl(paper, phase2):
    """L_VAE = KL(N(mu_p, diag sigma_p) || N(v_p, I)) + KL(N(mu_c, diag sigma_c) || N(v_c, I))
    + KL(N(mu_z, diag sigma_z) || N(0, I)), each the divergence of the two Gaussians (a sum
    over the code's dimensions), averaged over the batch; v_p, v_c are the embeddings of the
    encoders' predicted classes. Computed here with torch.distributions."""
    parts, recon = phase2
    for path, (_, r) in recon.items():
        _close(parts[f"{path}_vae"], paper.eq15(r))


def test_eq16_reconstruction(paper, phase2):
    """L_REC = L1(I, I^) for a real image; L1(I, I^) + L1(Ibg, Ibg^) + L1(Im, Im^) for a
    generated one, whose background and mask are known. L1: mean absolute difference."""
    parts, recon = phase2
    for path, (x, r) in recon.items():
        _close(parts[f"{path}_rec"], paper.eq16(path, x, r))


def test_eq17_perceptual(paper, phase2):
    """L_PER = L2(DcC(I), DcC(I^)) for a real image, plus L2(DbgC(Ibg), DbgC(Ibg^)) for a
    generated one: the mean squared difference of the hidden features (the trunk outputs) of
    the path's own image and background discriminators."""
    parts, recon = phase2
    for path, (x, r) in recon.items():
        _close(parts[f"{path}_per"], paper.eq17(path, x, r))


def test_eq18_total(paper, phase2):
    """L_AE = L_GEN + L_VAE + L_REC + L_PER: Phase II's G loss, with per reconstruction path
    (fakes, reals) its adversarial terms against its own discriminator clones (Sec. 4.3, the
    eq. 11 form) and eq. 15-17. Our default (rec_mask_reg) adds 2 L_RM of each path's mask."""
    parts, recon = phase2
    want = paper.eq14()
    for path, (x, r) in recon.items():
        adv = paper.eq11(paper.nets[f"Dbg_{path}"], paper.nets[f"Dc_{path}"], r["background"], r["image"])["L_G"]
        want = want + adv + paper.eq15(r) + paper.eq16(path, x, r) + paper.eq17(path, x, r)
    _close(parts["loss"], want)
    ours = Setup("model.kl_reduce=sum", "model.bg_aux_norm=sets")
    parts = ours.loss("G", P2)
    want = ours.eq14()
    for path, (x, r) in ours.recon().items():
        adv = ours.eq11(ours.nets[f"Dbg_{path}"], ours.nets[f"Dc_{path}"], r["background"], r["image"])["L_G"]
        want = want + adv + ours.eq15(r) + ours.eq16(path, x, r) + ours.eq17(path, x, r) + 2 * ours.l_rm(r["mask"])
    _close(parts["loss"], want)


def test_defaults_differ_from_the_paper_where_documented():
    """The CPU recipe's defaults: KL averaged over dimensions, the aux BCE averaged over all
    patches (the two sets weighted by their patch counts)."""
    s = Setup()
    parts = s.loss("G", P2)
    for path, (_, r) in s.recon().items():
        kl = 0.0
        for mu, lv, t in ((r["mu_p"], r["lv_p"], r["v_p"]), (r["mu_c"], r["lv_c"], r["v_c"]),
                          (r["mu_z"], r["lv_z"], torch.zeros_like(r["mu_z"]))):
            kl = kl + (0.5 * (_d(lv).exp() + (_d(mu) - _d(t)) ** 2 - 1 - _d(lv))).mean()
        _close(parts[f"{path}_vae"], kl)
        assert not torch.allclose(_d(parts[f"{path}_vae"]), s.eq15(r), rtol=1e-3)
    d = s.loss("D", 0)
    Dbg = s.nets["Dbg"]
    b_r = Dbg(s.real["image"])[1]
    w = _d(Dbg.patch_weights(s.real["fg"], tuple(b_r.shape[-2:]), 1.0))
    _close(d["d_bg_aux"], -(w * _log_sig(b_r) + (1 - w) * _log_sig(-b_r)).mean())
    want = s.eq10(Dbg, s.nets["Dc"], s.out["background"], s.out["image"])["B"]
    assert not torch.allclose(_d(d["d_bg_aux"]), want, rtol=1e-3)
