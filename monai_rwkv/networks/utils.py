"""Model size and cost, counted with the conventions of the Restore-RWKV paper."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from monai_rwkv.networks.blocks import OmniShift, ReWKV

__all__ = ["WKV_MACS_PER_ELEMENT", "count_macs", "count_parameters"]

#: Multiply-accumulates charged per (token, channel) for each Bi-WKV scan. With this charge, conv and
#: matmul MACs plus Bi-WKV give the paper's 37.46 G for the default model at 1 x 1 x 128 x 128.
WKV_MACS_PER_ELEMENT = 4


def count_parameters(model: nn.Module, fused_omni_shift: bool = True) -> int:
    """Number of parameters; with ``fused_omni_shift`` each Omni-Shift counts as its one fused kernel.

    The fused convention is the paper's (27,846,625 for the default model); without it the four
    training branches and their mixing weights are counted as they are trained (27,996,737).
    """
    total = sum(p.numel() for p in model.parameters())
    if fused_omni_shift:
        for module in model.modules():
            if isinstance(module, OmniShift):
                total += module.conv5x5.weight.numel() - sum(p.numel() for p in module.parameters())
    return total


@torch.no_grad()
def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of one inference forward pass on a zero-filled input of ``input_shape``.

    Convolutions and matrix products are counted by :class:`torch.utils.flop_counter.FlopCounterMode`
    (in eval mode, so each Omni-Shift is one fused depthwise convolution); every Bi-WKV scan adds
    :data:`WKV_MACS_PER_ELEMENT` per token and channel. Element-wise operations are not counted.
    """
    wkv_elements = 0

    def on_spatial_mix(module: ReWKV, args: tuple, _output: torch.Tensor) -> None:
        nonlocal wkv_elements
        wkv_elements += args[0].shape[1] * args[0].shape[2] * module.recurrence * args[0].shape[0]

    was_training = model.training
    model.eval()
    handles = [m.register_forward_hook(on_spatial_mix) for m in model.modules() if isinstance(m, ReWKV)]
    try:
        param = next(model.parameters())
        with FlopCounterMode(display=False) as counter:
            model(torch.zeros(*input_shape, dtype=param.dtype, device=param.device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return counter.get_total_flops() // 2 + WKV_MACS_PER_ELEMENT * wkv_elements
