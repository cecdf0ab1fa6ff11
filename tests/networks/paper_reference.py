"""The Restore-RWKV forward pass written directly from the paper's equations, on a raw state dict.

Independent of monai_rwkv.networks: only torch.nn.functional and the O(T^2) Bi-WKV definition. Used to
check that our modules, loaded with the same tensors, compute the published model (2D, float64).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from monai_rwkv.ops import bi_wkv_quadratic


def _omni_shift(x: torch.Tensor, sd: dict, p: str) -> torch.Tensor:
    a = sd[p + "alpha"]
    c = x.shape[1]
    return (
        a[0] * x
        + a[1] * F.conv2d(x, sd[p + "conv1x1.weight"], groups=c)
        + a[2] * F.conv2d(x, sd[p + "conv3x3.weight"], padding=1, groups=c)
        + a[3] * F.conv2d(x, sd[p + "conv5x5.weight"], padding=2, groups=c)
    )


def _tokens(x: torch.Tensor) -> torch.Tensor:  # b c h w -> b (h w) c
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, x.shape[1])


def _spatial_mix(x: torch.Tensor, h: int, w: int, sd: dict, p: str) -> torch.Tensor:
    b, t, c = x.shape
    xs = _tokens(_omni_shift(x.reshape(b, h, w, c).permute(0, 3, 1, 2), sd, p + "omni_shift."))
    k, v, r = xs @ sd[p + "key.weight"].T, xs @ sd[p + "value.weight"].T, xs @ sd[p + "receptance.weight"].T
    for j in range(sd[p + "spatial_decay"].shape[0]):
        dec, first = sd[p + "spatial_decay"][j] / t, sd[p + "spatial_first"][j] / t
        if j % 2 == 0:
            v = bi_wkv_quadratic(dec, first, k, v)
        else:  # column-major sequence: (h w) -> (w h) and back
            kt = k.reshape(b, h, w, c).transpose(1, 2).reshape(b, t, c)
            vt = v.reshape(b, h, w, c).transpose(1, 2).reshape(b, t, c)
            v = bi_wkv_quadratic(dec, first, kt, vt).reshape(b, w, h, c).transpose(1, 2).reshape(b, t, c)
    return (torch.sigmoid(r) * v) @ sd[p + "output.weight"].T


def _channel_mix(x: torch.Tensor, h: int, w: int, sd: dict, p: str) -> torch.Tensor:
    b, t, c = x.shape
    xs = _tokens(_omni_shift(x.reshape(b, h, w, c).permute(0, 3, 1, 2), sd, p + "omni_shift."))
    k = torch.relu(xs @ sd[p + "key.weight"].T) ** 2
    return torch.sigmoid(xs @ sd[p + "receptance.weight"].T) * (k @ sd[p + "value.weight"].T)


def _block(x: torch.Tensor, sd: dict, p: str) -> torch.Tensor:
    b, c, h, w = x.shape
    t = _tokens(x)
    ln1 = F.layer_norm(t, (c,), sd[p + "ln1.weight"], sd[p + "ln1.bias"], 1e-5)
    t = t + sd[p + "gamma1"] * _spatial_mix(ln1, h, w, sd, p + "att.")
    ln2 = F.layer_norm(t, (c,), sd[p + "ln2.weight"], sd[p + "ln2.bias"], 1e-5)
    t = t + sd[p + "gamma2"] * _channel_mix(ln2, h, w, sd, p + "ffn.")
    return t.reshape(b, h, w, c).permute(0, 3, 1, 2)


def _stage(x: torch.Tensor, sd: dict, name: str) -> torch.Tensor:
    n = len({k.split(".")[1] for k in sd if k.startswith(name + ".")})
    for i in range(n):
        x = _block(x, sd, f"{name}.{i}.")
    return x


def paper_forward(sd: dict, img: torch.Tensor) -> torch.Tensor:
    """Restore-RWKV on (B, in, H, W) with H, W multiples of 8, from an official-layout state dict."""
    enc1 = _stage(F.conv2d(img, sd["patch_embed.weight"], sd["patch_embed.bias"], padding=1), sd, "encoder_level1")
    enc2 = _stage(F.pixel_unshuffle(F.conv2d(enc1, sd["down1_2.body.0.weight"], padding=1), 2), sd, "encoder_level2")
    enc3 = _stage(F.pixel_unshuffle(F.conv2d(enc2, sd["down2_3.body.0.weight"], padding=1), 2), sd, "encoder_level3")
    lat = _stage(F.pixel_unshuffle(F.conv2d(enc3, sd["down3_4.body.0.weight"], padding=1), 2), sd, "latent")
    up3 = F.pixel_shuffle(F.conv2d(lat, sd["up4_3.body.0.weight"], padding=1), 2)
    dec3 = F.conv2d(torch.cat([up3, enc3], 1), sd["reduce_chan_level3.weight"], sd["reduce_chan_level3.bias"])
    dec3 = _stage(dec3, sd, "decoder_level3")
    up2 = F.pixel_shuffle(F.conv2d(dec3, sd["up3_2.body.0.weight"], padding=1), 2)
    dec2 = F.conv2d(torch.cat([up2, enc2], 1), sd["reduce_chan_level2.weight"], sd["reduce_chan_level2.bias"])
    dec2 = _stage(dec2, sd, "decoder_level2")
    up1 = F.pixel_shuffle(F.conv2d(dec2, sd["up2_1.body.0.weight"], padding=1), 2)
    dec1 = _stage(torch.cat([up1, enc1], 1), sd, "decoder_level1")
    out = F.conv2d(_stage(dec1, sd, "refinement"), sd["output.weight"], sd["output.bias"], padding=1)
    return out + img if out.shape[1] == img.shape[1] else out
