"""OneGAN (Benny & Wolf, ECCV 2020): one model for conditional generation, foreground
segmentation, two-level clustering and object removal. Built from the paper alone (no
public code exists); where the paper leaves a detail open, the choice is marked "ours".

Nets (``build``):
  G   background generator Gbg = Gbg1(Gbg0(v_bg, z)) and foreground generator
      Gfg = Gfg2(Gfg1(Gfg0(v_p, z), v_p), v_c) -> (foreground, mask); codes are learned
      embeddings of the one-hots, v = V(e), and the background follows the parent
      (e_bg = e_p). Every generator layer uses GLU-LayerNorm, ``GLU(LN(xL), xR)``.
      The pre-images A_bg, A_fg sit at 1/4 of the image size (ours).
  E   background encoder Ebg(I * (1 - Im), Im) -> bypass B_bg; shape encoder Ep(I) -> (e_p logits,
      mu_p, sigma_p, bypass B_fg, mu_z, sigma_z); style encoder Ec(I) -> (e_c logits,
      mu_c, sigma_c). LayerNorm, not BatchNorm (ours: the same encoder runs on several
      paths and at inference).
  Dbg FineGAN's patch discriminator: real/fake (DbgA) and background/object (DbgB) heads.
  Dc  image discriminator: real/fake (DcA) and child-class (DcB) heads.
  Dbg_rf, Dc_rf, Dbg_rr, Dc_rr: per-path clones for the reconstruction of fakes and of
      reals, initialised from Dbg and Dc when Phase II begins (``on_phase_start``).

Paths:
  generation      codes -> G -> I; the encoders re-read the codes from I.
                  L_GEN = 10 L_GbgA + L_GbgB + L_GcA               (eq. 11)
                        + CE(e_p) + CE(e_c) + CE(DcB(I), c)        (eq. 12)
                        + MSE(v_c, mu_c) + MSE(v_p, mu_p) + MSE(A_fg, B_fg) + MSE(A_bg, B_bg)  (eq. 13)
                        + 0.1 L_Rv + 2 L_RM                        (eq. 14)
  reconstruction  I -> Ep, Ec -> Gfg -> (Ifg, Im) -> Ebg(I, Im) -> Gbg -> Ibg -> composite,
                  with the four mixups of eq. 9 between encoders and generators
                  (beta1, beta2 ~ U[0, 1], beta3, beta4 ~ U[0.5, 1], per sample).
                  L_AE = L_GEN + per path: adversarial (eq. 11 against the path's own D
                         clones, Sec. 4.3) [+ 2 L_RM of its mask: ours, ``rec_mask_reg``]
                       + KL(N(mu, sigma) || N(v, I)) for p, c and N(0, I) for z      (eq. 15)
                       + L1(I, I^) [+ L1(Ibg, Ibg^) + L1(Im, Im^) on fakes]         (eq. 16)
                       + L2 of Dc hidden features [+ of Dbg features of Ibg on fakes] (eq. 17)
                                                                    (eq. 18)
Discriminators:   L_D = 10 L_DbgA + L_DbgB + L_DcA                   (eq. 10), per path.
The paper recipe's options (``kl_reduce = "sum"``, ``bg_aux_norm = "sets"``,
``rec_mask_reg = false``) make these the paper's equations; tests/backends/test_onegan_equations.py
computes each by hand. The defaults are the CPU recipe's (docs/models/onegan.md).

The paper's supplementary (not available) defines L_Rv and L_RM; ours:
  L_Rv = mean over codes of (mean_d v^2 - 1)^2: embeddings keep the unit scale of the
         N(v, I) prior the encoders are pulled towards;
  L_RM = mean binary entropy of the mask + a hinge keeping the mean mask in ``mask_area``.

Segmentation: the mask of the reconstruction path of a real image (posterior means, the
mixup weights fixed at ``infer_beta``); object removal: that path's background image.
Ours, optional (``seg_start``): a small segmenter S distilled from those masks of the real
photos (GrabCut-refined), then self-trained on its own (fgtool.nn.selftrain); once trained,
it is what ``segment`` uses.
Clustering: the penultimate features of the shape and style encoders.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import FgtoolError
from ..nn.blocks import InfoDiscriminator, PatchDiscriminator, SmallSegmenter, eval_mode, init_weights
from ..nn.compose import child_parent_codes, composite, full_code, mixup, one_hot, sample_beta
from ..nn.losses import background_real_terms, bce
from ..nn.selftrain import (
    SelfTrainConfig,
    check_self_train,
    paste_pairs,
    pseudo_labels,
    segmenter_probs,
    self_training_loss,
    teacher_probs,
)
from ..registry import register
from .base import Backend, Clusterer, Encoder, Grid, ObjectRemover, Phase, Segmenter, Translator, as_rgb
from .onegan_nets import OneGANEncoders, OneGANGenerator, code_scale, copy_weights, kl_normal, mask_regulariser

PATHS = ("rf", "rr")  # reconstruction of fakes, of reals


@dataclass
class OneGANConfig(SelfTrainConfig):
    n_child: int = 200  # Nc (CUB 200, Dogs 120, Cars 196)
    n_parent: int = 20  # Np (CUB 20, Dogs 12, Cars 14); n_child must be a multiple of it
    z_dim: int = 100
    bg_dim: int = 64  # sizes of the learned code embeddings v_bg, v_p, v_c (ours: the paper gives none)
    p_dim: int = 64
    c_dim: int = 64
    ngf: int = 64  # generator width at full resolution
    top_mult: int = 16  # the 4x4 top of each generator has ngf * top_mult channels (FineGAN: 16)
    ndf: int = 64  # discriminator base width
    enc_width: int | Literal["auto"] = "auto"  # encoder base width; auto: ndf
    lr_g: float = 2e-4  # generators, embeddings, encoders and DcB (one Adam)
    lr_d: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    # multi-phase schedule (steps): Phase I generation only; Phase II from phase2_start adds the
    # reconstruction of fakes, and from real_start that of reals (steps, or never)
    phase2_start: int | Literal["never"] = 200000
    real_start: int | Literal["never"] = 400000
    beta_code: tuple[float, float] = (0.0, 1.0)  # mixup 1, 2 (embedding vs encoder code)
    beta_map: tuple[float, float] = (0.5, 1.0)  # mixup 3, 4 (pre-image vs bypass)
    infer_beta: tuple[float, float, float, float] = (0.5, 0.5, 0.75, 0.75)  # at inference: the range middles
    w_bg_adv: float = 10.0
    w_bg_aux: float = 1.0
    w_adv: float = 1.0
    w_cls: float = 1.0  # L_E
    w_mse: float = 1.0  # L_MSE
    w_rv: float = 0.1
    w_rm: float = 2.0
    w_rec_adv: float = 1.0  # scales the adversarial terms of the reconstruction paths
    w_vae: float = 1.0
    w_rec: float = 1.0
    w_per: float = 1.0
    # eq. 15 per sample: "mean" over the code's dimensions (ours: on the scale of the per-pixel L1
    # terms); "sum": the KL divergence of the Gaussians (the paper). Both average over the batch
    kl_reduce: str = "mean"
    # ours: L_RM (w_rm times) also on the masks of the reconstruction paths; false: only on the
    # generated mask, as the paper (eq. 14, 18)
    rec_mask_reg: bool = True
    mask_area: tuple[float, float] = (0.1, 0.9)  # L_RM hinge on the mean mask
    bg_patch_thresh: float = 1.0  # as FineGAN: share of a patch's field outside the box to count as background
    bg_warmup: int = 0  # steps over which real background patches fade from all to box-outside ones
    # eq. 10's L_DbgB on real photos: "patches" averages the BCE over all patches (FineGAN's code);
    # "sets": the mean over background patches plus the mean over object patches (the paper's two
    # expectations, one per set)
    bg_aux_norm: str = "patches"
    # ours, never by default: a distilled segmenter. From this step the GAN stops (its phases end) and a
    # small segmenter S (fgtool.nn.blocks.SmallSegmenter, seg_width) learns from the batch's real
    # photos: first against OneGAN's own masks of them (the reconstruction path, refined by
    # self_refine), then from self_start against its own (self-training). Once S has trained,
    # `segment` and `eval --metric iou` use it; object removal still uses the reconstruction path.
    # The self_* keys, seg_width, lr_s, seg_betas, w_ce, w_dice: fgtool.nn.selftrain.SelfTrainConfig
    seg_start: int | Literal["never"] = "never"
    self_start: int | Literal["never"] = "never"  # never: S learns OneGAN's masks to the end
    # the foreground share a pseudo-label of S's own may have (with self_guard > 0): outside it,
    # the label is dropped (an all-object or no-object label feeds on itself)
    self_fg_range: tuple[float, float] = (0.02, 0.8)
    # ours, 0 = off: from self_start, this share of a batch more pairs: objects of the batch's photos
    # whose labels the guard kept, cut out by those labels and put on other photos' box-outside
    # crops (data.bg_crops; fgtool.nn.selftrain.paste_pairs)
    seg_paste: float = 0.0
    # ours, 0 = off: this share of the pasted objects has its far side of a random line through
    # its centre painted in its new background's mean colour, moved by U[shift / 2, shift]
    # (fgtool.nn.selftrain.camouflage, as GANSeg's seg_camo): objects half the colour of
    # their surroundings (a two-tone star on grass) are then seen whole
    seg_camo: float = 0.0
    seg_camo_shift: float = 0.6
    # whether the background D also takes data.bg_crops as real background (the paper's set); false:
    # the crops serve seg_paste only, and the GAN trains exactly as without them
    d_bg_crops: bool = True


# ----------------------------------------------------------------------------- backend


@register
class OneGAN(Backend, Encoder, Clusterer, Segmenter, ObjectRemover, Translator):
    name = "onegan"
    Config = OneGANConfig
    ema = ("G", "E")  # segmentation runs the encoders with the generators: average both
    inference_nets = ("G", "E", "S")

    def __init__(self, cfg: OneGANConfig, size: int):
        super().__init__(cfg, size)
        if cfg.n_parent < 1 or cfg.n_child % cfg.n_parent:
            raise FgtoolError(f"model.n_child ({cfg.n_child}) must be a multiple of model.n_parent ({cfg.n_parent})")
        if size < 16:
            raise FgtoolError(f"onegan needs images of at least 16 px, got data.size={size}")
        p2, rs = cfg.phase2_start, cfg.real_start
        if any(v != "never" and v < 0 for v in (p2, rs)):
            raise FgtoolError("model.phase2_start and model.real_start are steps >= 0, or \"never\"")
        if rs != "never" and (p2 == "never" or rs < p2):
            raise FgtoolError(f"model.real_start ({rs}) must be \"never\" or >= model.phase2_start ({p2}): "
                              "real images are reconstructed only in Phase II")
        for name, (lo, hi) in (("beta_code", cfg.beta_code), ("beta_map", cfg.beta_map)):
            if not 0.0 <= lo <= hi <= 1.0:
                raise FgtoolError(f"model.{name} must be a range inside [0, 1], got ({lo}, {hi})")
        if cfg.kl_reduce not in ("mean", "sum"):
            raise FgtoolError(f"model.kl_reduce must be mean or sum, got {cfg.kl_reduce!r}")
        if cfg.bg_aux_norm not in ("patches", "sets"):
            raise FgtoolError(f"model.bg_aux_norm must be patches or sets, got {cfg.bg_aux_norm!r}")
        if not all(0.0 <= b <= 1.0 for b in cfg.infer_beta):
            raise FgtoolError(f"model.infer_beta values must be in [0, 1], got {cfg.infer_beta}")
        check_self_train(cfg)
        seg, own = cfg.seg_start, cfg.self_start
        if (seg != "never" and seg < 1) or (own != "never" and (seg == "never" or own < seg)):
            raise FgtoolError(f"model.seg_start ({seg}) must be a step >= 1 or \"never\" (no segmenter) and "
                              f"model.self_start ({own}) \"never\" or no earlier than it")
        lo, hi = cfg.self_fg_range
        if cfg.seg_paste < 0:
            raise FgtoolError(f"model.seg_paste is a share of the batch >= 0, got {cfg.seg_paste}")
        if not 0.0 <= cfg.seg_camo <= 1.0 or cfg.seg_camo_shift < 0:
            raise FgtoolError(f"model.seg_camo is a share in [0, 1] and model.seg_camo_shift >= 0, "
                              f"got {cfg.seg_camo} and {cfg.seg_camo_shift}")
        if not 0.0 <= lo <= hi <= 1.0:
            raise FgtoolError(f"model.self_fg_range must be a range inside [0, 1], got ({lo}, {hi})")
        self.ratio = cfg.n_child // cfg.n_parent

    # ---------------------------------------------------------------- schedule, nets and phases
    def schedule(self) -> dict[str, int]:
        """The multi-phase schedule as data: path -> first step (paths never started are left out)."""
        c = self.cfg
        s = {"gen": 0}
        if c.phase2_start != "never":
            s["rf"] = c.phase2_start
            if c.real_start != "never":
                s["rr"] = c.real_start
        return s

    def paths(self, step: int) -> list[str]:
        return [p for p, start in self.schedule().items() if step >= start]

    def build(self) -> dict[str, nn.Module]:
        c, s = self.cfg, self.size
        G = OneGANGenerator(c, s)
        # the discriminators are FineGAN's (the paper: "Following FineGAN"): a background patch
        # D without BatchNorm (with it, each all-real or all-fake batch is normalised on its own
        # and a shallow patch D barely tells photos from an untrained generator's backgrounds:
        # docs/experiments/onegan-discriminators.md) and the child D's wide top
        def d_pair() -> tuple[nn.Module, nn.Module]:
            return PatchDiscriminator(c.ndf, s), InfoDiscriminator(c.ndf, s, c.n_child, adv=True, top="wide")

        nets: dict[str, nn.Module] = {"G": G, "E": OneGANEncoders(c, s, G.pre_ch)}
        nets["Dbg"], nets["Dc"] = d_pair()
        for path in self.schedule():
            if path != "gen":
                nets[f"Dbg_{path}"], nets[f"Dc_{path}"] = d_pair()
        for m in nets.values():
            init_weights(m, "orthogonal")
        for emb in (G.Vbg, G.Vp, G.Vc):  # v = V(e) starts as a draw from N(0, I) per class
            nn.init.normal_(emb.weight, 0.0, 1.0)
        for k, m in nets.items():
            if k.endswith(PATHS):
                # set once the clone has been initialised from the generation-path D; saved
                # with the weights, so a resumed run knows whether the copy happened
                m.register_buffer("cloned", torch.zeros((), dtype=torch.bool))
        if c.seg_start != "never":
            nets["S"] = SmallSegmenter(2, c.seg_width)  # channel 0 object, 1 background
            # set by its first training step; saved, so a checkpoint says whether S can segment
            nets["S"].register_buffer("trained", torch.zeros((), dtype=torch.bool))
        return nets

    def clones(self) -> list[tuple[str, str]]:
        return [(f"{d}_{p}", d) for p in PATHS if p in self.schedule() for d in ("Dbg", "Dc")]

    def on_phase_start(self, phase: str, nets, step: int) -> None:
        """Phase II begins (D_rf's first step): every reconstruction path's discriminators
        start as copies of the generation path's (weights and BatchNorm statistics), the reals'
        too, though they train only from real_start. The ``cloned`` flags are saved with the
        weights, so a checkpoint says whether the copy happened."""
        if phase != "D_rf":
            return
        for dst, src in self.clones():
            if not bool(nets[dst].cloned):
                copy_weights(nets[dst], nets[src])

    def phases(self) -> list[Phase]:
        c = self.cfg
        kw = {"betas": c.betas}
        ph = []
        sch = self.schedule()
        stop = None if c.seg_start == "never" else c.seg_start  # None: the GAN never stops
        # G first: its outputs are cached (detached) for the discriminator phases
        ph += [Phase("G", ("G", "E", "Dc.info"), lr=c.lr_g, stop=stop, **kw),
               Phase("D", ("Dbg", "Dc.trunk", "Dc.adv"), lr=c.lr_d, stop=stop, **kw)]
        for p in PATHS:
            if p in sch:
                ph.append(Phase(f"D_{p}", (f"Dbg_{p}", f"Dc_{p}.trunk", f"Dc_{p}.adv"), start=sch[p],
                                lr=c.lr_d, stop=stop, **kw))
        if stop is not None:
            ph.append(Phase("S", ("S",), lr=c.lr_s, betas=tuple(c.seg_betas), start=c.seg_start))
        return ph

    # ---------------------------------------------------------------- codes
    def sample_codes(self, n: int, generator: torch.Generator | None = None, device=None, **fix) -> dict[str, Tensor]:
        """c uniform (or among the children of a fixed p); p = c // (Nc / Np); b = p (the
        background follows the parent) unless fixed. Fixed values: ints or [n] tensors."""
        c_cfg = self.cfg
        kw = {"generator": generator, "device": device}
        z = fix["z"] if "z" in fix else torch.randn(n, c_cfg.z_dim, **kw)
        c, p = child_parent_codes(n, c_cfg.n_child, self.ratio, fix, generator, device)
        b = full_code(fix["b"], n, device) if "b" in fix else p.clone()
        for name, v, hi in (("c", c, c_cfg.n_child), ("p", p, c_cfg.n_parent), ("b", b, c_cfg.n_parent)):
            if v.numel() and (v.min() < 0 or v.max() >= hi):
                raise FgtoolError(f"code {name} must be in 0..{hi - 1}")
        return {"z": z, "b": b, "p": p, "c": c}

    def code_sizes(self) -> dict[str, int]:
        return {"z": 0, "b": self.cfg.n_parent, "p": self.cfg.n_parent, "c": self.cfg.n_child}

    def n_clusters(self) -> int:
        return self.cfg.n_child

    def _vec(self, v: Tensor, n: int, like: Tensor) -> Tensor:
        """[N] indices -> one-hot [N, n]; [N, n] (soft) vectors pass through."""
        return v.to(like) if v.dim() == 2 else one_hot(v.to(like.device), n).to(like)

    # ---------------------------------------------------------------- the two paths
    def _generate_all(self, nets, codes) -> dict[str, Tensor]:
        """Generation path (eq. 2-5), with the pre-images and code vectors the losses need."""
        G = nets["G"]
        dev = next(G.parameters()).device
        z = codes["z"].to(dev).float()
        z_bg = codes["z_bg"].to(dev).float() if "z_bg" in codes else z
        c = self.cfg
        v_bg = G.Vbg(self._vec(codes["b"], c.n_parent, z))
        v_p = G.Vp(self._vec(codes["p"], c.n_parent, z))
        v_c = G.Vc(self._vec(codes["c"], c.n_child, z))
        a_bg = G.pre_bg(v_bg, z_bg)
        bg = G.bg.g1(a_bg)
        a_fg = G.pre_fg(v_p, z)
        fg, m = G.fg.render(a_fg, v_p, v_c)
        return {"image": composite(fg, m, bg), "background": bg, "foreground": fg, "mask": m,
                "A_bg": a_bg, "A_fg": a_fg, "v_bg": v_bg, "v_p": v_p, "v_c": v_c}

    def generate(self, nets, codes) -> dict[str, Tensor]:
        """Codes: z [N, z_dim]; b, p (n_parent values) and c as indices or soft [N, K]
        vectors; optional ``z_bg`` (the background's z; default z)."""
        out = self._generate_all(nets, codes)
        return {k: out[k] for k in ("image", "background", "foreground", "mask")}

    def reconstruct(self, nets, x: Tensor, betas: tuple | None = None, sample: bool = False,
                    child: Tensor | None = None) -> dict[str, Tensor]:
        """Reconstruction path (Fig. 2). ``betas``: (b1, b2, b3, b4) numbers or per-sample
        tensors, default ``infer_beta``; ``sample``: draw the codes from the encoders'
        Gaussians (training) instead of taking their means. ``child`` ([N] class ids): the
        style code is that class's embedding instead of the photo's (image-to-image
        translation, Fig. 6); shape, pose and bypasses still come from the photo."""
        G, E = nets["G"], nets["E"]
        b1, b2, b3, b4 = betas if betas is not None else self.cfg.infer_beta
        sh, st = E.shape(x), E.style(x)

        def draw(mu, lv):
            return mu + torch.randn_like(mu) * (0.5 * lv.clamp(-10, 10)).exp() if sample else mu

        vp_hat, vc_hat, z_hat = draw(sh["mu_p"], sh["lv_p"]), draw(st["mu_c"], st["lv_c"]), draw(sh["mu_z"], sh["lv_z"])
        q_p, q_c = torch.softmax(sh["logits_p"], 1), torch.softmax(st["logits_c"], 1)
        v_p, v_c, v_bg = G.Vp(q_p), G.Vc(q_c), G.Vbg(q_p)  # embeddings of the predicted classes
        vp_mix, vc_mix = mixup(v_p, vp_hat, b1), mixup(v_c, vc_hat, b2)  # mixups 1, 2
        if child is not None:
            vc_mix = G.Vc(one_hot(child.to(x.device), self.cfg.n_child).to(v_c))
        a_fg = mixup(G.pre_fg(vp_mix, z_hat), sh["B_fg"], b3)  # mixup 3
        fg, m = G.fg.render(a_fg, vp_mix, vc_mix)
        a_bg = mixup(G.pre_bg(v_bg, z_hat), E.bg(x, m), b4)  # mixup 4
        bg = G.bg.g1(a_bg)
        return {"image": composite(fg, m, bg), "background": bg, "foreground": fg, "mask": m,
                "v_p": v_p, "v_c": v_c, **sh, **st}

    def _train_betas(self, n: int, like_code: Tensor, like_map: Tensor) -> tuple[Tensor, ...]:
        c = self.cfg
        return (sample_beta(n, *c.beta_code, like_code), sample_beta(n, *c.beta_code, like_code),
                sample_beta(n, *c.beta_map, like_map), sample_beta(n, *c.beta_map, like_map))

    def _recon_train(self, nets, x: Tensor) -> dict[str, Tensor]:
        n = x.shape[0]
        like_code = x.new_zeros(n, 1)
        like_map = x.new_zeros(n, 1, 1, 1)
        return self.reconstruct(nets, x, self._train_betas(n, like_code, like_map), sample=True)

    # ---------------------------------------------------------------- losses
    def loss(self, phase, nets, batch, step) -> dict[str, Tensor]:
        if phase == "G":
            return self._loss_g(nets, batch, step)
        if phase == "S":
            return self._loss_s(nets, batch, step)
        if phase == "D":
            out, _ = self._gen(nets, batch, grad=False)
            return self._loss_d(nets["Dbg"], nets["Dc"], batch, out["background"], out["image"], step, "")
        path = phase.split("_", 1)[1]
        fake = self._recon_cached(nets, batch, path)
        return self._loss_d(nets[f"Dbg_{path}"], nets[f"Dc_{path}"], batch, fake["background"], fake["image"],
                            step, f"_{path}")

    def _own_probs(self, nets, x: Tensor) -> Tensor:
        """OneGAN's own map [N, 2, H, W] (object, background) of photos: the reconstruction mask."""
        m = self.reconstruct(nets, x)["mask"].float().clamp(0, 1)
        return torch.cat([m, 1.0 - m], 1)

    def _loss_s(self, nets, batch, step: int) -> dict[str, Tensor]:
        """The distilled segmenter: pseudo-labels of the real photos from OneGAN (before
        self_start) or from S itself (after), then CE + Dice on a jittered, flipped view."""
        c, S, real = self.cfg, nets["S"], batch["image"]
        if not getattr(S, "_trained", False):  # the flag is read once per process (a host sync)
            S.trained.fill_(True)
            S._trained = True
        own = c.self_start != "never" and step >= c.self_start
        if own:
            prob = segmenter_probs(S, real, c.self_tta)
        else:
            with eval_mode(nets["G"]), eval_mode(nets["E"]):
                prob = teacher_probs(lambda x: self._own_probs(nets, x), real, c.self_tta)
        # the guard judges S's own labels; OneGAN's rough masks are what GrabCut is there to rewrite
        lab, weight = pseudo_labels(c, prob, real, c.self_fg_range, guard=None if own else 0.0)
        pasted = None
        if own and c.seg_paste > 0 and "bg_crop" in batch:
            pasted = paste_pairs(real, lab, weight, batch["bg_crop"], batch["bg_crop_ok"] > 0.5, c.seg_paste, 1,
                                 camo=c.seg_camo, camo_shift=c.seg_camo_shift)
        if pasted is not None:
            real, lab, weight = (torch.cat([a, b]) for a, b in zip((real, lab, weight), pasted))
        out = self_training_loss(c, S, real, lab, weight)
        n_paste = 0.0 if pasted is None else float(pasted[0].shape[0])
        return {"loss": out["s_self"], **out, "s_own": torch.tensor(float(own)), "s_pasted": torch.tensor(n_paste)}

    def _gen(self, nets, batch, grad: bool) -> tuple[dict, dict]:
        return self.fake_batch(nets, batch, grad, render=self._generate_all, key="gen")

    def _recon_cached(self, nets, batch, path: str) -> dict[str, Tensor]:
        """The reconstruction a D phase scores: cached by the G phase, else made here."""
        cache = batch.setdefault("cache", {})
        if path not in cache:
            with torch.no_grad():
                x = self._gen(nets, batch, grad=False)[0]["image"] if path == "rf" else batch["image"]
                r = self._recon_train(nets, x.detach())
            cache[path] = {"image": r["image"].detach(), "background": r["background"].detach()}
        return cache[path]

    def _adv_g(self, Dbg, Dc, bg: Tensor, img: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        f_adv, f_aux = Dbg(bg)
        return bce(f_adv, 1.0), bce(f_aux, 1.0), bce(Dc.forward_adv(img), 1.0)  # aux: 1 = background

    def _loss_g(self, nets, batch, step: int) -> dict[str, Tensor]:
        c = self.cfg
        paths = self.paths(step)
        out, codes = self._gen(nets, batch, grad=True)
        E, Dc = nets["E"], nets["Dc"]
        img = out["image"]
        # ---- generation path (eq. 11-14)
        f_adv, f_aux = nets["Dbg"](out["background"])
        g_bgA, g_bgB = bce(f_adv, 1.0), bce(f_aux, 1.0)  # aux: 1 = background
        c_adv, c_info = Dc(img)  # one trunk pass for DcA and DcB
        g_cA = bce(c_adv, 1.0)
        sh, st = E.shape(img), E.style(img)  # eq. 12-13 train the generators too (the paper)
        b_bg = E.bg(img, out["mask"])
        ce_p = F.cross_entropy(sh["logits_p"], codes["p"])
        ce_c = F.cross_entropy(st["logits_c"], codes["c"])
        info_c = F.cross_entropy(c_info.float(), codes["c"])
        mse = (F.mse_loss(st["mu_c"], out["v_c"].detach().float()) + F.mse_loss(sh["mu_p"], out["v_p"].detach().float())
               + F.mse_loss(sh["B_fg"].float(), out["A_fg"].detach().float())
               + F.mse_loss(b_bg.float(), out["A_bg"].detach().float()))
        rv = code_scale(out["v_bg"]) + code_scale(out["v_p"]) + code_scale(out["v_c"])
        rm = mask_regulariser(out["mask"], c.mask_area)
        loss = (c.w_bg_adv * g_bgA + c.w_bg_aux * g_bgB + c.w_adv * g_cA + c.w_cls * (ce_p + ce_c + info_c)
                + c.w_mse * mse + c.w_rv * rv + c.w_rm * rm)
        parts = {"g_bg_adv": g_bgA, "g_bg_aux": g_bgB, "g_adv": g_cA, "ce_p": ce_p, "ce_c": ce_c, "info_c": info_c,
                 "mse": mse, "reg_v": rv, "reg_m": rm, "mask_area": out["mask"].float().mean().detach(),
                 "acc_c": (st["logits_c"].argmax(1) == codes["c"]).float().mean()}
        # ---- reconstruction paths (eq. 15-17), from Phase II on
        for path in ("rf", "rr"):
            if path not in paths:
                continue
            if path == "rf":  # fakes are data here: no gradient into the generation that made them
                x, t_bg, t_m = img.detach(), out["background"].detach(), out["mask"].detach()
            else:
                x, t_bg, t_m = batch["image"], None, None
            r = self._recon_train(nets, x)
            batch["cache"][path] = {"image": r["image"].detach(), "background": r["background"].detach()}
            Dbg_p, Dc_p = nets[f"Dbg_{path}"], nets[f"Dc_{path}"]
            a_bgA, a_bgB, a_cA = self._adv_g(Dbg_p, Dc_p, r["background"], r["image"])
            adv = c.w_bg_adv * a_bgA + c.w_bg_aux * a_bgB + c.w_adv * a_cA
            kl = c.kl_reduce
            vae = (kl_normal(r["mu_p"], r["lv_p"], r["v_p"].detach(), kl)
                   + kl_normal(r["mu_c"], r["lv_c"], r["v_c"].detach(), kl) + kl_normal(r["mu_z"], r["lv_z"], 0.0, kl))
            rec = F.l1_loss(r["image"].float(), x.float())
            # perceptual: L2 between the path's discriminator features of input and output,
            # one forward over both so they share the batch statistics
            per = self._feature_l2(Dc_p.trunk, r["image"], x)
            if t_bg is not None:
                rec = rec + F.l1_loss(r["background"].float(), t_bg.float()) + F.l1_loss(r["mask"].float(), t_m.float())
                per = per + self._feature_l2(Dbg_p.trunk, r["background"], t_bg)
            loss = loss + (c.w_rec_adv * adv + c.w_vae * vae + c.w_rec * rec + c.w_per * per)
            if c.rec_mask_reg:
                loss = loss + c.w_rm * mask_regulariser(r["mask"], c.mask_area)
            parts.update({f"{path}_adv": adv, f"{path}_vae": vae, f"{path}_rec": rec, f"{path}_per": per,
                          f"{path}_mask_area": r["mask"].float().mean().detach()})
        return {"loss": loss, **parts}

    @staticmethod
    def _feature_l2(trunk: nn.Module, out: Tensor, target: Tensor) -> Tensor:
        n = out.shape[0]
        f = trunk(torch.cat([out, target.detach().to(out.dtype)]))
        return F.mse_loss(f[:n].float(), f[n:].detach().float())

    def _loss_d(self, Dbg, Dc, batch, fake_bg: Tensor, fake_img: Tensor, step: int, tag: str) -> dict[str, Tensor]:
        """Eq. 10 for one path: 10 (real/fake background) + background/object + real/fake image.
        Real backgrounds are the patches of the full view outside the (real or pseudo) box."""
        c = self.cfg
        if not c.d_bg_crops:  # the crops are the segmenter's (seg_paste), not the background D's
            batch = {k: v for k, v in batch.items() if k not in ("bg_crop", "bg_crop_ok")}
        bg_real, bg_aux, _ = background_real_terms(Dbg, batch, step, c.bg_patch_thresh, c.bg_warmup,
                                                   aux_sets=c.bg_aux_norm == "sets")
        bg_fake = bce(Dbg(fake_bg.detach())[0], 0.0)
        real = bce(Dc.forward_adv(batch["image"]), 1.0)
        fake = bce(Dc.forward_adv(fake_img.detach()), 0.0)
        loss = c.w_bg_adv * (bg_real + bg_fake) + c.w_bg_aux * bg_aux + c.w_adv * (real + fake)
        return {"loss": loss, f"d{tag}_bg_real": bg_real, f"d{tag}_bg_fake": bg_fake, f"d{tag}_bg_aux": bg_aux,
                f"d{tag}_real": real, f"d{tag}_fake": fake}

    # ---------------------------------------------------------------- capabilities
    def encode(self, nets, images: Tensor, hard: bool = False) -> dict[str, Tensor]:
        """z (posterior mean) and b, p, c as softmax vectors (``hard``: argmax indices); b = p."""
        E = nets["E"]
        sh, st = E.shape(images), E.style(images)
        q_p, q_c = torch.softmax(sh["logits_p"], 1), torch.softmax(st["logits_c"], 1)
        if hard:
            q_p, q_c = q_p.argmax(1), q_c.argmax(1)
        return {"z": sh["mu_z"], "b": q_p, "p": q_p, "c": q_c}

    def cluster_features(self, nets, images: Tensor) -> dict[str, Tensor]:
        E = nets["E"]
        return {"parent": F.normalize(E.shape.features(images)[1].float(), dim=1),
                "child": F.normalize(E.style.features(images).float(), dim=1)}

    def segment(self, nets, images: Tensor) -> Tensor:
        """Foreground probability [N, 1, H, W] in [0, 1]: the distilled segmenter's once it has
        trained (model.seg_start), else the reconstruction path's mask."""
        if self.has_segmenter(nets):
            return nets["S"](images).float().softmax(1)[:, :1]
        return self.reconstruct(nets, images)["mask"].float().clamp(0, 1)

    @staticmethod
    def has_segmenter(nets) -> bool:
        S = nets.get("S")
        return S is not None and bool(S.trained)

    def remove_object(self, nets, images: Tensor, fill: str = "gan") -> Tensor:
        """Each photo with its object removed [N, 3, H, W] in [-1, 1]. ``fill="gan"``: the
        background generator's output (the paper); ``"inpaint"``: the photo with the pixels of
        its mask (:meth:`segment` > 0.5, grown by 1 px per 32) filled in from around them
        (fgtool.nn.refine.inpaint)."""
        if fill == "inpaint":
            from ..nn.refine import inpaint

            mask = self.segment(nets, images)[:, 0] > 0.5
            return inpaint(images, mask, grow=max(1, self.size // 32))
        if fill != "gan":
            raise FgtoolError(f"--fill must be one of gan, inpaint, got {fill!r}")
        return self.reconstruct(nets, images)["background"].float().clamp(-1, 1)

    def translate(self, nets, images: Tensor, child: Tensor | int) -> Tensor:
        """Each photo reconstructed with child class ``child`` (an int or [N] ids) as its style."""
        n = images.shape[0]
        c = full_code(child, n, images.device)
        if c.numel() and (c.min() < 0 or c.max() >= self.cfg.n_child):
            raise FgtoolError(f"child class must be in 0..{self.cfg.n_child - 1}")
        return self.reconstruct(nets, images, child=c)["image"].float().clamp(-1, 1)

    def grids(self, nets, generator: torch.Generator, which: str = "train") -> dict[str, Grid]:
        c = self.cfg
        codes = self.sample_codes(16, generator)
        out = self.generate(nets, codes)
        g = {"samples": Grid(out["image"], 8)}
        n = 6
        cols = ["background", "mask", "foreground", "image"]
        layers = torch.stack([as_rgb(out[k][:n].float()) for k in cols], 1).flatten(0, 1)
        g["layers"] = Grid(layers, len(cols), [f"c={int(v)}" for v in codes["c"][:n]], cols)
        if self.has_segmenter(nets):  # the distilled segmenter on generated images, beside G's masks
            seg = self.segment(nets, out["image"][:8])
            g["segmenter"] = Grid(torch.cat([out["image"][:8], as_rgb(out["mask"][:8].float()), as_rgb(seg)]), 8,
                                  ["image", "G mask", "S mask"])
        if which == "train":
            return g
        rows, ncol = min(c.n_parent, 6), min(self.ratio, 8)
        z = torch.randn(rows, c.z_dim, generator=generator).repeat_interleave(ncol, 0)
        p = torch.arange(rows).repeat_interleave(ncol)
        cc = p * self.ratio + torch.arange(ncol).repeat(rows)
        g["fix_p_vary_c"] = Grid(self.generate(nets, {"z": z, "b": p, "p": p, "c": cc})["image"], ncol,
                                 [f"p={i}" for i in range(rows)], [f"child {j}" for j in range(ncol)])
        nz = 8
        cc = torch.randint(0, c.n_child, (rows,), generator=generator)
        z = torch.randn(nz, c.z_dim, generator=generator).repeat(rows, 1)
        cr = cc.repeat_interleave(nz)
        g["fix_c_vary_z"] = Grid(self.generate(nets, {"z": z, "b": cr // self.ratio, "p": cr // self.ratio,
                                                      "c": cr})["image"],
                                 nz, [f"c={int(v)}" for v in cc], [f"z{j}" for j in range(nz)])
        return g
