"""MixNMatch (Li, Singh, Ojha & Lee, CVPR 2020): FineGAN's generator plus encoders that
read background, pose, shape and texture codes off real photos, so factors from different
photos can be mixed.

Generator: FineGAN's (:class:`GeneratorFG`), with the stages called one by one so that the
background may take its own z, codes may be soft (softmax) vectors, and an image feature
map may stand in for the parent stage's phi(p, z).

Stage 1 (code mode), one run, phases G, D, Dpair:
  G+E:   FineGAN's G loss (10 bg_adv + bg_aux + child_adv + info_p + info_c)
         + paired adversarial loss against four image-code critics, one per code type
           (BiGAN/ALI; a critic never sees the relation between codes)
         + code re-prediction on images generated from *untied* codes (b, p, c drawn
           independently): 5 L1(z) + 5 CE(b) + 10 CE(p) + 10 CE(c); the images carry no
           gradient, so this part only moves the encoders
  D:     FineGAN's background and child discriminators
  Dpair: WGAN critics on (real image, E(image)) vs (G(y), y), Gaussian noise on the code
         branch, gradient penalty (weight 10) on interpolated pairs
Stage 2 (feature mode), from step ``model.stage2_start`` (phases Dfeat, S; stage-1 phases
stop there, so the generator and encoders are frozen; G renders with its EMA weights in eval
mode), the authors' second stage: codes y with a soft p in 20% of the iterations, S(x)
computed once, then
  Dfeat: the patch critic on feature maps (phi(p, z) real, S(photo) fake), Adam 2e-5
  S:     the authors' U-Net from image to phi(p, z), trained with L1(S(G(y)), phi(p, z)) on
         generated images plus the adversarial loss of S(photo) against the updated critic
Clustering: L2-normalised penultimate features of the p and c encoders, then k-means.

Options of ours (off by default; the synthetic recipe turns them on): FineGAN's
``bg_shift`` (the background is a random window of a larger canvas, so it cannot paint
the object), ``child_fills_parent``, ``info_p_input = "mask"`` and ``pose_warp``;
``w_info_free`` (the info losses on the untied-code images, with gradient to G) and
``w_recon`` (L1 reconstruction of real photos through E and G with straight-through codes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import FgtoolError
from ..nn.blocks import (
    GLU,
    ImageEncoder,
    InfoDiscriminator,
    ResBlock,
    down_block,
    eval_mode,
    init_weights,
    n_up,
    patch_geometry,
    resize_square,
    same_block,
    tiled_side,
)
from ..nn.compose import one_hot
from ..nn.losses import bce
from ..registry import register
from .base import FeatureEncoder, Phase
from .finegan import FineGAN, FineGANConfig, GeneratorFG

CODES = ("z", "b", "p", "c")


def _at_least_fp32(x: Tensor) -> Tensor:
    """fp32 for half-precision tensors (losses, penalties); fp32 and fp64 pass through."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


@dataclass
class MixNMatchConfig(FineGANConfig):
    phi_every: int | Literal["never"] = "never"  # MixNMatch clusters with its encoders: no phi heads
    enc_width: int | Literal["auto"] = "auto"  # base width of the four encoders (z, b, p, c); auto: ndf
    z_scale: float = 4.0  # the z encoder outputs tanh * z_scale
    # base width of the paired critics' image trunks; auto: ndf / 4 (the authors' 16)
    pair_width: int | Literal["auto"] = "auto"
    pair_hidden: int | Literal["auto"] = "auto"  # the critics' image feature and code layers; auto: 32 * pair width
    pair_noise: tuple[float, ...] = (0.5, 0.3, 0.3)  # Gaussian noise std after each of the critics' code layers
    lr_pair: float = 2e-4
    w_pair: float = 1.0  # paired adversarial loss (generator and encoders)
    w_gp: float = 10.0  # WGAN-GP weight of the paired critics
    w_rec_z: float = 5.0  # code re-prediction from untied-code images: L1 on z
    w_rec_b: float = 5.0  # ... and cross-entropies on b, p, c
    w_rec_p: float = 10.0
    w_rec_c: float = 10.0
    # FineGAN's info losses once more on the untied-code images, with gradient to G (ours):
    # the generator learns to draw any texture c on any shape p, which a mix asks of it
    w_info_free: float = 0.0
    # L1 reconstruction of the real photos through the encoders and the generator, G(E(x)),
    # with straight-through one-hot b, p, c (ours): trains both, so the generator learns
    # to draw the set's real silhouettes and the discrete codes must carry shape and texture
    w_recon: float = 0.0
    # step where stage 1 stops and stage 2 (feature extractor) starts, or never
    stage2_start: int | Literal["never"] = "never"
    lr_s: float = 2e-4
    lr_dfeat: float = 2e-5
    # share of stage-2 iterations whose parent codes are soft, softmax(N(0, I)) (the authors':
    # 0.2; the other iterations draw one-hot p)
    soft_p: float = 0.2
    w_feat_adv: float = 1.0
    w_feat_l1: float = 1.0
    # L1 between the parent masks the frozen generator draws from S(G(y)) and from phi(p, z)
    # (ours): the silhouette, which is what feature mode keeps of the pose reference,
    # weighs more than the rest of the map
    w_feat_mask: float = 0.0


# ----------------------------------------------------------------------------- networks


class Encoders(nn.Module):
    """Four encoders, each built like FineGAN's info discriminator (its wide-top trunk to 4x4,
    the code head).

    ``forward`` gives z as tanh * z_scale and b, p, c as logits.
    """

    def __init__(self, width: int, size: int, dims: dict[str, int], z_scale: float):
        super().__init__()
        for k in CODES:
            setattr(self, k, InfoDiscriminator(width, size, dims[k], adv=False, top="wide"))
        self.z_scale = z_scale

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        out = {k: _at_least_fp32(getattr(self, k).forward_info(x)) for k in CODES}
        out["z"] = torch.tanh(out["z"]) * self.z_scale
        return out

    def features(self, x: Tensor, k: str) -> Tensor:
        """Penultimate features of encoder ``k``: what its last (4x4) conv reads, flattened."""
        enc = getattr(self, k)
        return enc.info[:-1](enc.trunk(x)).flatten(1)


class PairCritic(nn.Module):
    """WGAN critic of an (image, code) pair (the authors' BiGAN critic): a BN-free image trunk
    (width doubling from ``width``, 16 x width at 4x4 for 128 px) and a 4x4 conv to ``hidden``;
    a code MLP of ``len(noise)`` linear layers, each followed by LReLU and Gaussian noise of
    that std (training only); joined by Linear(2h, 2h), LReLU, Linear(2h, 1)."""

    def __init__(self, width: int, size: int, code_dim: int, hidden: int, noise: tuple[float, ...]):
        super().__init__()
        trunk = ImageEncoder(width, size, bn=False, max_mult=16)
        self.image = nn.Sequential(trunk, nn.Conv2d(trunk.out_ch, hidden, 4), nn.LeakyReLU(0.2), nn.Flatten())
        self.noise = tuple(float(s) for s in noise)
        self.code = nn.ModuleList([nn.Linear(code_dim if i == 0 else hidden, hidden) for i in range(len(self.noise))])
        self.joint = nn.Sequential(nn.Linear(2 * hidden, 2 * hidden), nn.LeakyReLU(0.2), nn.Linear(2 * hidden, 1))

    def forward(self, img: Tensor, code: Tensor) -> Tensor:
        e = code.to(self.code[0].weight.dtype)
        for lin, std in zip(self.code, self.noise):
            e = F.leaky_relu(lin(e), 0.2)
            if self.training and std > 0:
                e = e + torch.randn_like(e) * std
        h = self.image(img)
        return self.joint(torch.cat([h, e.to(h.dtype)], 1)).flatten().float()


class PairCritics(nn.Module):
    def __init__(self, width: int, size: int, dims: dict[str, int], hidden: int, noise: tuple[float, ...]):
        super().__init__()
        for k in CODES:
            setattr(self, k, PairCritic(width, size, dims[k], hidden, noise))


def unet_down(cin: int, cout: int) -> nn.Sequential:
    """The authors' U-Net down-block: conv 4x4 stride 2 (with bias) to 2*cout, BN, GLU."""
    return nn.Sequential(nn.Conv2d(cin, cout * 2, 4, 2, 1), nn.BatchNorm2d(cout * 2), GLU())


def unet_up(cin: int, cout: int) -> nn.Sequential:
    """The authors' U-Net up-block: transposed conv 4x4 stride 2 (with bias) to 2*cout, BN, GLU."""
    return nn.Sequential(nn.ConvTranspose2d(cin, cout * 2, 4, 2, 1), nn.BatchNorm2d(cout * 2), GLU())


class FeatureExtractor(nn.Module):
    """S (feature mode): image -> the parent stage's feature map phi. The authors'
    ``FeatureExtractor``, a U-Net: two same-blocks to ``width``; ``n_up(size) + 1``
    down-blocks to 2 px, widths ``width * min(2^i, 16)``; as many up-blocks back to ``size``,
    each but the last followed by the skip of its resolution, concatenated [up, skip]; two
    ResBlocks at ``out_ch``. The first up-block halves the bottom width; the others give the
    width of the down-block at their input's resolution.

    At 128 px with width 32 and 16 channels out it is theirs, ``FeatureExtractor(3, 16)``:
    32@64, 64@32, 128@16, 256@8, 512@4, 512@2 down, 256@4, 512@8, 256@16, 128@32, 64@64,
    16@128 up (39,126,688 parameters). Smaller images drop the deepest levels."""

    def __init__(self, width: int, size: int, out_ch: int, in_ch: int = 3):
        super().__init__()
        levels = n_up(size) + 1  # down to 2 px
        chans = [width * min(2**i, 16) for i in range(levels)]
        self.first = nn.Sequential(same_block(in_ch, width), same_block(width, width))
        self.downs = nn.ModuleList(unet_down(a, b) for a, b in zip([width, *chans[:-1]], chans))
        self.ups = nn.ModuleList()
        ch = chans[-1]
        for k in range(levels):
            if k == levels - 1:
                self.ups.append(unet_up(ch, out_ch))
                break
            out = chans[-1] // 2 if k == 0 else chans[levels - 1 - k]
            self.ups.append(unet_up(ch, out))
            ch = out + chans[levels - 2 - k]
        self.last = nn.Sequential(ResBlock(out_ch), ResBlock(out_ch))

    def forward(self, x: Tensor) -> Tensor:
        h = self.first(x)
        skips = []
        for d in self.downs:
            h = d(h)
            skips.append(h)
        skips.pop()  # the bottom of the U is h itself
        for up in self.ups:
            h = up(h)
            if skips:
                h = torch.cat([h, skips.pop()], 1)
        return self.last(h)


class FeatureCritic(nn.Module):
    """Dfeat (feature mode): the authors' ``Dis_Dis``, a patch critic on feature maps. The
    map is resized (bilinear, corners aligned) to the side its patches tile exactly (126 at
    128 px, as the background D's input); valid convs without bias or BN, each followed by
    LeakyReLU 0.2, widen ``in_ch`` to 2x, 4x, 8x (theirs: 16 -> 32, 64, 128); a conv with bias
    gives the patch logits (theirs: a sigmoid; ours: logits for BCE-with-logits). The
    geometry is the background D's (:func:`patch_geometry`): at 128 px k4s2, k4s2, k4s1 and a
    k4s1 head, 24x24 patches."""

    def __init__(self, in_ch: int, size: int):
        super().__init__()
        geom = patch_geometry(size)
        self.side = tiled_side(size)
        chans = [in_ch, 2 * in_ch, 4 * in_ch, 8 * in_ch]
        self.trunk = nn.Sequential(*[down_block(chans[i], chans[i + 1], k, s, 0, bn=False, bias=False)
                                     for i, (k, s) in enumerate(geom[:-1])])
        k, s = geom[-1]
        self.adv = nn.Conv2d(chans[3], 1, k, s, 0)

    def forward(self, x: Tensor) -> Tensor:
        return self.adv(self.trunk(resize_square(x, self.side)))


def gradient_penalty(critics: nn.Module, real: dict[str, Tensor], fake: dict[str, Tensor]) -> Tensor:
    """The authors' WGAN-GP of the four paired critics: every input (the image and each code)
    is mixed between its real and fake value with its own weight per sample, one mixed image
    serving all four critics; each critic then adds (||grad||_2 - 1)^2 for the image and for
    its code separately, averaged over the batch (8 terms). ``real`` and ``fake`` hold
    "image" and the codes.

    Always fp32, autocast or not: a penalty on gradient norms is a second-order quantity
    that bf16/fp16 round too coarsely."""
    keys = ("image", *CODES)
    dev = real["image"].device
    with torch.autocast(dev.type, enabled=False):
        mixed = {}
        for k in keys:
            r, f = _at_least_fp32(real[k].detach()), _at_least_fp32(fake[k].detach())
            a = torch.rand(r.shape[0], device=dev, dtype=r.dtype).view(-1, *[1] * (r.dim() - 1))
            mixed[k] = (a * r + (1 - a) * f).requires_grad_(True)
        gp = mixed["image"].new_zeros(())
        for k in CODES:
            out = getattr(critics, k)(mixed["image"], mixed[k]).float()
            grads = torch.autograd.grad(out.sum(), (mixed["image"], mixed[k]), create_graph=True)
            for g in grads:
                gp = gp + ((g.flatten(1).norm(2, dim=1) - 1.0) ** 2).mean()
        return gp


def _pair_gap(critic: nn.Module, real: tuple[Tensor, Tensor], fake: tuple[Tensor, Tensor]) -> Tensor:
    """mean critic(real pairs) - mean critic(fake pairs), both in one forward (no BN)."""
    n = real[0].shape[0]
    out = critic(torch.cat([real[0], fake[0].to(real[0].dtype)]),
                 torch.cat([_at_least_fp32(real[1]), _at_least_fp32(fake[1]).to(_at_least_fp32(real[1]).dtype)]))
    return out[:n].mean() - out[n:].mean()


# ----------------------------------------------------------------------------- backend


@register
class MixNMatch(FineGAN, FeatureEncoder):
    name = "mixnmatch"
    Config = MixNMatchConfig
    ema = ("G",)
    inference_nets = ("G", "E", "S")

    def __init__(self, cfg: MixNMatchConfig, size: int):
        super().__init__(cfg, size)
        if cfg.phi_every != "never":
            raise FgtoolError("model.phi_every: MixNMatch has no phi heads (its encoders give the cluster "
                              "features); leave it at \"never\"")
        if cfg.stage2_start != "never" and cfg.stage2_start < 1:
            raise FgtoolError(f"model.stage2_start must be a step >= 1 or \"never\" (no stage 2), "
                              f"got {cfg.stage2_start}")
        if cfg.hard_start != "never":
            raise FgtoolError("model.hard_start is FineGAN's last stage; MixNMatch's authors have none")
        if not 0.0 <= cfg.soft_p <= 1.0:
            raise FgtoolError(f"model.soft_p is a share of iterations, in [0, 1], got {cfg.soft_p}")
        self.dims = {"z": cfg.z_dim, "b": cfg.n_child, "p": cfg.n_parent, "c": cfg.n_child}

    # ---------------------------------------------------------------- nets and phases
    def build(self) -> dict[str, nn.Module]:
        c, s = self.cfg, self.size
        pw = max(1, c.ndf // 4) if c.pair_width == "auto" else c.pair_width
        nets = super().build()  # FineGAN's G, Dbg, Dp, Dc; its post-hoc phi heads are not used
        for k in ("phi_p", "phi_c"):
            nets.pop(k)
        # MixNMatch's own G and parent/child Ds (narrower than FineGAN's; the parent D at ndf/2)
        G = GeneratorFG(c, s, layout="mixnmatch")
        new = {"G": G,
               "Dp": InfoDiscriminator(c.ndf // 2, s, c.n_parent, adv=True, top="flat"),
               "Dc": InfoDiscriminator(c.ndf, s, c.n_child, adv=True, top="flat"),
               "E": Encoders(c.ndf if c.enc_width == "auto" else c.enc_width, s, self.dims, c.z_scale),
               # stage 2: the authors' U-Net at ngf/2 (their 32) to phi's width (ngf/4, their 16),
               # and its patch critic
               "S": FeatureExtractor(max(1, c.ngf // 2), s, G.phi_ch),
               "Dfeat": FeatureCritic(G.phi_ch, s)}
        for m in new.values():
            init_weights(m, "orthogonal")
        # the critics keep PyTorch's default initialisation, as the authors'
        hidden = 32 * pw if c.pair_hidden == "auto" else c.pair_hidden
        new["Dpair"] = PairCritics(pw, s, self.dims, hidden, c.pair_noise)
        return {**nets, **new}

    def phases(self) -> list[Phase]:
        c = self.cfg
        s2 = None if c.stage2_start == "never" else c.stage2_start
        # stage 1 (stops at stage2_start), the authors' order: the Ds and the critics step on
        # this iteration's render G(y) and encoding E(x) (detached), then G and E step through
        # the updated ones on the same render and encoding
        ph = [Phase("D", ("Dbg", "Dc.trunk", "Dc.adv"), lr=c.lr_d, stop=s2, graph=("G",)),
              Phase("Dpair", ("Dpair",), lr=c.lr_pair, stop=s2, graph=("E",)),
              Phase("G", ("G", "E", "Dp", "Dc.info"), lr=c.lr_g, stop=s2)]
        if s2 is not None:  # stage 2, the authors' order: S(x) once, the critic steps on it (detached),
            # then S steps through the updated critic on the same S(x)
            ph += [Phase("Dfeat", ("Dfeat",), lr=c.lr_dfeat, start=s2, graph=("S",)),
                   Phase("S", ("S",), lr=c.lr_s, start=s2)]
        return ph

    def ema_active(self, name: str, step: int) -> bool:
        """Stage 2 starts from the averaged generator and keeps it frozen (the authors' second
        stage loads their EMA generator)."""
        return self.cfg.stage2_start == "never" or step < self.cfg.stage2_start

    def feature_ready(self, step: int) -> bool:
        """Whether a checkpoint at ``step`` has a trained extractor (feature mode)."""
        return self.cfg.stage2_start != "never" and step > self.cfg.stage2_start

    # ---------------------------------------------------------------- codes
    def free_codes(self, n: int, generator: torch.Generator | None = None, device=None) -> dict[str, Tensor]:
        """Codes with FineGAN's constraints removed: b, p and c drawn independently."""
        c, kw = self.cfg, {"generator": generator, "device": device}
        return {"z": torch.randn(n, c.z_dim, **kw), "b": torch.randint(0, c.n_child, (n,), **kw),
                "p": torch.randint(0, c.n_parent, (n,), **kw), "c": torch.randint(0, c.n_child, (n,), **kw)}

    def stage2_codes(self, n: int, device=None) -> dict[str, Tensor]:
        """The authors' stage-2 codes: z ~ N(0, I); b, p, c drawn independently; in a share
        ``soft_p`` of the iterations (one draw per batch) p is softmax(N(0, I)) for the whole
        batch, else one-hot. Their coin is Python's ``random``; ours is torch's generator, so
        that a resumed run draws the same codes."""
        c = self.cfg
        z = torch.randn(n, c.z_dim, device=device)
        if torch.rand(()).item() < c.soft_p:
            p = torch.softmax(torch.randn(n, c.n_parent, device=device), 1)
        else:
            p = torch.randint(0, c.n_parent, (n,), device=device)
        cc = torch.randint(0, c.n_child, (n,), device=device)
        b = torch.randint(0, c.n_child, (n,), device=device)
        return {"z": z, "b": b, "p": p, "c": cc}

    def code_vector(self, k: str, v: Tensor, like: Tensor) -> Tensor:
        """[N] indices -> one-hot [N, K]; [N, K] (soft) vectors pass through."""
        return v.to(like) if v.dim() == 2 else one_hot(v.to(like.device), self.dims[k]).to(like)

    def generate(self, nets, codes, perturb: bool = False) -> dict[str, Tensor]:
        """Codes: z [N, z_dim]; b, p, c as indices or soft [N, K] vectors. Optional: ``z_bg``
        (the background stage's z; default z) and ``feature`` (an [N, ngf, S, S] map from
        :meth:`shape_features` that replaces phi(p, z), so p is then not needed).
        ``perturb``: FineGAN's training warp of the object layers."""
        G = nets["G"]
        dev = next(G.parameters()).device
        z = codes["z"].to(dev)
        z_bg = codes["z_bg"].to(dev) if "z_bg" in codes else z
        if "feature" in codes:
            hp = codes["feature"].to(dev)
        else:
            hp = G.parent_features(z, self.code_vector("p", codes["p"], z))
        return G.compose(hp, G.background(z_bg, self.code_vector("b", codes["b"], z)),
                         self.code_vector("c", codes["c"], hp), self.perturb if perturb else None)

    # ---------------------------------------------------------------- capabilities
    def encode(self, nets, images: Tensor, hard: bool = False) -> dict[str, Tensor]:
        """z [N, z_dim] and b, p, c as softmax vectors [N, K] (``hard``: argmax indices [N])."""
        raw = nets["E"](images)
        out = {"z": raw["z"]}
        for k in ("b", "p", "c"):
            out[k] = raw[k].argmax(1) if hard else torch.softmax(raw[k], 1)
        return out

    def shape_features(self, nets, images: Tensor) -> Tensor:
        """Feature mode: S(image), the pixel-aligned shape-and-pose map that replaces phi(p, z)."""
        return nets["S"](images)

    def cluster_features(self, nets, images: Tensor) -> dict[str, Tensor]:
        E = nets["E"]
        return {"parent": F.normalize(E.features(images, "p").float(), dim=1),
                "child": F.normalize(E.features(images, "c").float(), dim=1)}

    # ---------------------------------------------------------------- losses
    def loss(self, phase, nets, batch, step) -> dict[str, Tensor]:
        if phase == "D":
            return self._loss_d(nets, batch, step)
        return {"G": self._loss_g, "Dpair": self._loss_pair, "S": self._loss_s,
                "Dfeat": self._loss_dfeat}[phase](nets, batch)

    def _fake_pairs(self, codes: dict, like: Tensor) -> dict[str, Tensor]:
        return {k: codes[k].to(like) if k == "z" else self.code_vector(k, codes[k], like) for k in CODES}

    def _encoded(self, nets, batch) -> tuple[dict, dict]:
        """E(x) of this iteration's photos, computed once (with its graph) and shared by the
        critics' phase (detached) and the G+E phase: raw outputs, and the codes the critics
        read (z, softmax b, p, c)."""
        cache = batch.setdefault("cache", {})
        if "enc" not in cache:
            raw = nets["E"](batch["image"])
            cache["enc"] = (raw, {"z": raw["z"], **{k: torch.softmax(raw[k], 1) for k in ("b", "p", "c")}})
        return cache["enc"]

    def _loss_g(self, nets, batch) -> dict[str, Tensor]:
        c = self.cfg
        parts = super()._loss_g(nets, batch)  # FineGAN's generator losses, fake cached
        out, codes = self._fake(nets, batch, grad=True)
        x = batch["image"]
        raw, enc = self._encoded(nets, batch)
        fake = self._fake_pairs(codes, raw["z"])
        # the encoders make real pairs look generated, the generator the reverse
        pair = sum(_pair_gap(getattr(nets["Dpair"], k), (x, enc[k]), (out["image"], fake[k])) for k in CODES)
        # code re-prediction on images from untied codes: no gradient reaches G
        n, dev = x.shape[0], x.device
        free = self.free_codes(n, device=dev)
        with torch.set_grad_enabled(c.w_info_free > 0):
            fo = self.generate(nets, free)
        pred = nets["E"](fo["image"].detach())
        rec = {"rec_z": F.l1_loss(pred["z"], free["z"].float()),
               **{f"rec_{k}": F.cross_entropy(pred[k], free[k]) for k in ("b", "p", "c")}}
        loss = (parts.pop("loss") + c.w_pair * pair + c.w_rec_z * rec["rec_z"] + c.w_rec_b * rec["rec_b"]
                + c.w_rec_p * rec["rec_p"] + c.w_rec_c * rec["rec_c"])
        extra = {}
        if c.w_info_free > 0:  # these images do train G, through the info heads only
            fp, fc = self.info_terms(nets, fo, free)
            extra = {"info_free_p": fp, "info_free_c": fc}
            loss = loss + c.w_info_free * (fp + fc)
        if c.w_recon > 0:
            extra.update(self.reconstruction(nets, x, raw))
            loss = loss + c.w_recon * extra["recon"]
        acc_c = (pred["c"].argmax(1) == free["c"]).float().mean()
        return {"loss": loss, **parts, "g_pair": pair, **rec, **extra, "rec_acc_c": acc_c}

    def reconstruction(self, nets, x: Tensor, raw: dict) -> dict[str, Tensor]:
        """``recon``: L1(G(E(x)), x) with hard codes whose gradient is the softmax's
        (straight-through)."""
        codes = {"z": raw["z"]}
        for k in ("b", "p", "c"):
            soft = torch.softmax(raw[k], 1)
            codes[k] = one_hot(soft.argmax(1), self.dims[k]).to(soft) + soft - soft.detach()
        return {"recon": F.l1_loss(self.generate(nets, codes)["image"].float(), x.float())}

    def _loss_pair(self, nets, batch) -> dict[str, Tensor]:
        c = self.cfg
        out, codes = self._fake(nets, batch, grad=True)
        x = batch["image"]
        enc = {k: v.detach() for k, v in self._encoded(nets, batch)[1].items()}
        fake_img = out["image"].detach()
        fake = self._fake_pairs(codes, enc["z"])
        wdist = sum(_pair_gap(getattr(nets["Dpair"], k), (x, enc[k]), (fake_img, fake[k])) for k in CODES)
        gp = gradient_penalty(nets["Dpair"], {"image": x, **enc}, {"image": fake_img, **fake})
        return {"loss": -wdist + c.w_gp * gp, "pair_wdist": wdist, "pair_gp": gp}

    def _stage2_fake(self, nets, batch) -> tuple[Tensor, Tensor, Tensor]:
        """phi(p, z), G(z, b, p, c) and its parent mask for the stage-2 codes
        (:meth:`stage2_codes`), from the frozen generator in eval mode (the authors'
        ``netG(..., only=True)``)."""
        cache = batch.setdefault("cache", {})
        if "s2" not in cache:
            n, dev = batch["image"].shape[0], batch["image"].device
            codes = self.stage2_codes(n, device=dev)
            G = nets["G"]
            with torch.no_grad(), eval_mode(G):
                z = codes["z"].to(next(G.parameters()).dtype)
                phi = G.parent_features(z, self.code_vector("p", codes["p"], z))
                out = self.generate(nets, {**codes, "z": z, "feature": phi})
            cache["s2"] = (phi, out["image"], out["parent_mask"])
        return cache["s2"]

    def _extracted(self, nets, batch) -> Tensor:
        """S(x) of this iteration's photos, computed once (with its graph) and shared by the
        critic's phase (detached) and S's phase, as the authors' loop does."""
        cache = batch.setdefault("cache", {})
        if "sx" not in cache:
            cache["sx"] = nets["S"](batch["image"])
        return cache["sx"]

    def _loss_dfeat(self, nets, batch) -> dict[str, Tensor]:
        """The authors' DD step: BCE(DD(S(x)), 0) + BCE(DD(phi(p, z)), 1)."""
        phi = self._stage2_fake(nets, batch)[0]
        sx = self._extracted(nets, batch).detach()
        D = nets["Dfeat"]
        fake, real = bce(D(sx), 0.0), bce(D(phi), 1.0)
        return {"loss": real + fake, "dfeat_real": real, "dfeat_fake": fake}

    def _loss_s(self, nets, batch) -> dict[str, Tensor]:
        """The authors' EX step: BCE(DD(S(x)), 1) + L1(S(G(y)), phi(p, z)), plus ours
        ``w_feat_mask``."""
        c = self.cfg
        phi, img, mask = self._stage2_fake(nets, batch)
        S, G = nets["S"], nets["G"]
        adv = bce(nets["Dfeat"](self._extracted(nets, batch)), 1.0)
        s_img = S(img)
        l1 = F.l1_loss(_at_least_fp32(s_img), _at_least_fp32(phi))
        parts = {"s_adv": adv, "s_l1": l1}
        loss = c.w_feat_adv * adv + c.w_feat_l1 * l1
        if c.w_feat_mask > 0:  # through the frozen mask head (G is not in this phase)
            with eval_mode(G):
                parts["s_mask"] = F.l1_loss(G.p_mask(G.p_half(s_img)).float(), mask.float())
            loss = loss + c.w_feat_mask * parts["s_mask"]
        return {"loss": loss, **parts}
