"""BatchNorm then GLU, keeping only the BatchNorm's input for the backward pass.

In the GLU blocks (conv, BatchNorm, GLU) autograd keeps two maps of 2C channels per block:
the conv's output for the BatchNorm's backward and the BatchNorm's output for the GLU's. The
second is a per-channel affine function of the first, so :class:`_BNGLU` keeps only the
first and its batch statistics, and recomputes the normalised map (one multiply-add pass)
when the gradient arrives. On FineGAN's fp32 paper step at batch 16 the most memory in use
fell from 4.56 to 3.54 GiB, at 2% of the step's time (docs/benchmarks.md). The forward numbers
are the plain path's, bit for bit; the gradients match it to float rounding
(tests/nn/test_blocks.py).

Used in training on a CPU in full precision; autocast, inference and BatchNorm without
running statistics keep the plain modules. It has no double backward: no fgtool loss
differentiates through a generator's gradients, and asking for one raises an error.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable


def glu_view(x: Tensor) -> tuple[Tensor, int]:
    """The tensor and dim a GLU halves: the NHWC memory's last dim for a channels_last map
    (one contiguous kernel; see :class:`fgtool.nn.blocks.GLU`), else dim 1."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return x.permute(0, 2, 3, 1), -1
    return x, 1


class _BNGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y: Tensor, weight: Tensor, bias: Tensor, running_mean: Tensor, running_var: Tensor,
                momentum: float, eps: float) -> Tensor:
        z, mean, invstd = torch.ops.aten.native_batch_norm(y, weight, bias, running_mean, running_var, True,
                                                           momentum, eps)
        zv, dim = glu_view(z)
        out = torch.nn.functional.glu(zv, dim)
        ctx.save_for_backward(y, weight, bias, mean, invstd)
        ctx.eps, ctx.dim = eps, dim
        return out.permute(0, 3, 1, 2) if dim == -1 else out

    @staticmethod
    @once_differentiable
    def backward(ctx, g: Tensor):
        y, weight, bias, mean, invstd = ctx.saved_tensors
        shape = (1, -1) + (1,) * (y.dim() - 2)
        scale = (weight * invstd).view(shape)
        z = torch.addcmul(bias.view(shape) - mean.view(shape) * scale, y, scale)  # the forward's BN output
        if ctx.dim == -1:
            gz = torch.ops.aten.glu_backward(g.permute(0, 2, 3, 1), z.permute(0, 2, 3, 1), -1).permute(0, 3, 1, 2)
        else:
            gz = torch.ops.aten.glu_backward(g, z, 1)
        del z
        need = ctx.needs_input_grad
        gy, gw, gb = torch.ops.aten.native_batch_norm_backward(gz, y, weight, None, None, mean, invstd, True,
                                                               ctx.eps, [need[0], need[1], need[2]])
        return gy, gw, gb, None, None, None, None


def fusable(bn: nn.Module, y: Tensor) -> bool:
    """Whether ``GLU(bn(y))`` may run as :class:`_BNGLU`: a training BatchNorm with running
    statistics and affine weights, on a CPU, in fp32, outside autocast, with gradients."""
    return (isinstance(bn, nn.BatchNorm2d) and bn.training and bn.affine and bn.track_running_stats
            and bn.momentum is not None and y.device.type == "cpu" and y.dtype == torch.float32
            and y.dim() == 4 and torch.is_grad_enabled() and (y.requires_grad or bn.weight.requires_grad)
            and not torch.is_autocast_enabled("cpu"))


def bn_glu(bn: nn.BatchNorm2d, y: Tensor) -> Tensor:
    """``GLU(bn(y))`` through :class:`_BNGLU` (``fusable(bn, y)`` must hold)."""
    bn.num_batches_tracked.add_(1)
    return _BNGLU.apply(y, bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.momentum, bn.eps)

