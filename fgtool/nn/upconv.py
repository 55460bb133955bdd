"""The nearest x2 upsampling folded into the 3x3 conv that follows it (the up-blocks of
FineGAN, MixNMatch, C3-GAN and OneGAN): the same numbers in fewer multiply-adds."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Row (and column) sums that fold a 3-tap kernel onto nearest-x2 input: output row 2i reads
# upsampled rows 2i-1, 2i, 2i+1 = input rows i-1, i, i, so it sees taps [w0, w1 + w2] on input
# rows (i-1, i); output row 2i+1 sees [w0 + w1, w2] on rows (i, i+1).
_FOLD = ((1.0, 0.0, 0.0), (0.0, 1.0, 1.0)), ((1.0, 1.0, 0.0), (0.0, 0.0, 1.0))


class _Interleave(torch.autograd.Function):
    """Phase (a, b) of a [B, 4*cout, H+1, W+1] conv output, window [a:a+H, b:b+W] of channel
    group 2a+b, written to pixels (2i+a, 2j+b) of a [B, cout, 2H, 2W] map in one pass."""

    @staticmethod
    def _views(y: Tensor, out: Tensor, h: int, w: int, co: int, last: bool):
        if last:  # NHWC: y [B, H+1, W+1, 4co] against out [B, H, 2, W, 2, co]
            y = y.permute(0, 2, 3, 1)
            for a in (0, 1):
                for c in (0, 1):
                    g = 2 * a + c
                    yield y[:, a:a + h, c:c + w, g * co:(g + 1) * co], out[:, :, a, :, c, :]
        else:  # NCHW: y [B, 4co, H+1, W+1] against out [B, co, H, 2, W, 2]
            for a in (0, 1):
                for c in (0, 1):
                    g = 2 * a + c
                    yield y[:, g * co:(g + 1) * co, a:a + h, c:c + w], out[:, :, :, a, :, c]

    @staticmethod
    def forward(ctx, y: Tensor, h: int, w: int, co: int, last: bool) -> Tensor:
        ctx.shape, ctx.last = (h, w, co), last
        b_ = y.shape[0]
        out = y.new_empty((b_, h, 2, w, 2, co) if last else (b_, co, h, 2, w, 2))
        for src, dst in _Interleave._views(y, out, h, w, co, last):
            dst.copy_(src)
        if last:
            return out.view(b_, 2 * h, 2 * w, co).permute(0, 3, 1, 2)
        return out.view(b_, co, 2 * h, 2 * w)

    @staticmethod
    def backward(ctx, grad: Tensor):
        h, w, co = ctx.shape
        b_ = grad.shape[0]
        if ctx.last:
            g = grad.permute(0, 2, 3, 1).reshape(b_, h, 2, w, 2, co)
            gy = grad.new_zeros(b_, h + 1, w + 1, 4 * co).permute(0, 3, 1, 2)
        else:
            g = grad.reshape(b_, co, h, 2, w, 2)
            gy = grad.new_zeros(b_, 4 * co, h + 1, w + 1)
        for dst, src in _Interleave._views(gy, g, h, w, co, ctx.last):
            dst.copy_(src)
        return gy, None, None, None, None


def up_conv3x3(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``conv3x3(nearest_x2(x))`` without building the upsampled map: the same numbers up
    to float rounding, in 16 multiply-adds per input pixel and channel pair instead of 36.

    Each of the four output phases (row parity a, column parity b) is a 2x2 conv of the
    input with the 3x3 weight's taps summed by ``_FOLD``. All four run as one conv to
    4*cout channels with padding 1; phase (a, b) is the window [a:a+H, b:b+W] of its
    channel group, interleaved back into the 2H x 2W map. The weight stays the 3x3
    parameter, so checkpoints and gradients are a plain conv's."""
    _, _, h, w = x.shape
    co = weight.shape[0]
    fold = torch.tensor(_FOLD, dtype=weight.dtype, device=weight.device)  # [2 parity, 2 tap, 3]
    k = torch.einsum("aiy,bjx,ocyx->abocij", fold, fold, weight).reshape(4 * co, weight.shape[1], 2, 2)
    last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    y = F.conv2d(x, k.contiguous(memory_format=torch.channels_last) if last else k,
                 None if bias is None else bias.repeat(4), padding=1)
    return _Interleave.apply(y, h, w, co, last and y.is_contiguous(memory_format=torch.channels_last))


class UpConv3x3(nn.Conv2d):
    """A 3x3 conv (pad 1) applied to the nearest x2 upsampling of its input, computed by
    :func:`up_conv3x3`. Its parameters are the plain ``nn.Conv2d``'s."""

    naive: bool = False  # benchmarks and tests only: upsample, then convolve

    def __init__(self, cin: int, cout: int, bias: bool = False):
        super().__init__(cin, cout, 3, 1, 1, bias=bias)

    @staticmethod
    def folds(x: Tensor) -> bool:
        """Where the folded conv measured faster (docs/benchmarks.md): a CPU, full precision, inputs
        of 8 px and more. Under bf16 autocast the convs are cheap and the interleave is not."""
        return (x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and min(x.shape[-2:]) >= 8
                and not torch.is_autocast_enabled(x.device.type))

    def forward(self, x: Tensor) -> Tensor:
        if UpConv3x3.naive or not self.folds(x):
            return super().forward(F.interpolate(x, scale_factor=2, mode="nearest"))
        return up_conv3x3(x, self.weight, self.bias)
