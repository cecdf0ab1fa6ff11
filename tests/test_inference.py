"""SliceWiseRestorer: exact identity through sliding windows, orientation, intensity mapping, meta, model loading."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from torch import nn

from monai_rwkv.inference import (
    CT_INTENSITY_RANGE,
    SliceWiseRestorer,
    denormalize_intensity,
    load_network,
    normalize_intensity,
    resolve_device,
    resolve_sw_batch_size,
)
from monai_rwkv.networks.nets import RestoreRWKV


def identity_restorer(**kwargs) -> SliceWiseRestorer:
    args = {"roi_size": (16, 16), "overlap": 0.5, "device": "cpu", "progress": False, **kwargs}
    return SliceWiseRestorer(nn.Identity(), **args)


def max_windows_per_pixel(roi: int, overlap: float) -> int:
    """
    Most 2D sliding windows of side ``roi`` covering one pixel: MONAI starts windows every
    ``step = max(int(roi * (1 - overlap)), 1)`` pixels, at most ``ceil(roi / step)`` of those starts fall in the
    ``roi`` positions that cover a pixel, plus the last window, moved back to end at the image border; squared in 2D.
    """
    step = max(int(roi * (1 - overlap)), 1)
    return (math.ceil(roi / step) + 1) ** 2


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.6])
def test_identity_network_gives_the_input_back(seed: int, overlap: float) -> None:
    """Gaussian blending of identical patch values is exact up to float32 rounding, for slices smaller and larger
    than the ROI."""
    rng = np.random.default_rng(seed)
    restorer = identity_restorer(overlap=overlap)
    # Error of the identity = float32 rounding only (u = eps / 2 per rounding, relative). A pixel covered by n windows
    # is sum_k fl(x * w_k) / sum_k w_k, all terms positive: the numerator goes through 1 product + n - 1 additions,
    # the weight sum through n - 1 additions, then 1 division: 2n roundings, |error| <= 2n * u * |x| = n * eps * |x|
    # (to first order). An off-by-one or mismatched blend weight errs by ~1e-2 or more, far above this.
    n = max_windows_per_pixel(16, overlap)
    eps = torch.finfo(torch.float32).eps
    low, high = CT_INTENSITY_RANGE
    span = high - low
    unit_bound = n * eps * 1.0  # values in [0, 1)
    # HU: 2 more roundings before the blend (x - low, / span) and 2 after (* span, + low), each <= u * span (all
    # magnitudes <= span): (2n + 4) * u * span = (n + 2) * eps * span, ~9e-3 HU for n = 16.
    hu_bound = (n + 2) * eps * span
    for _ in range(3):
        h, w = (int(s) for s in rng.integers(5, 50, size=2))
        unit = torch.rand(2, 1, h, w)
        torch.testing.assert_close(restorer.restore_slice(unit), unit, rtol=0, atol=unit_bound)
        hu = torch.rand(1, w, h, 2) * 4000 - 1000  # (C, i, j, k) inside the CT range
        torch.testing.assert_close(restorer(hu), hu, rtol=0, atol=hu_bound)


def test_slices_are_given_to_the_network_as_rows_j_columns_i() -> None:
    seen = []

    class Probe(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.extend([tuple(x.shape[-2:])] * x.shape[0])  # one entry per patch (slices share a call)
            return x

    volume = torch.zeros(1, 12, 7, 3)  # i=12, j=7
    SliceWiseRestorer(Probe(), roi_size=(64, 64), device="cpu", progress=False)(volume)
    assert seen == [(7, 12)] * 3  # a slice smaller than the ROI: one patch of the slice itself, never padded
    seen.clear()
    SliceWiseRestorer(Probe(), roi_size=(7, 12), device="cpu", progress=False)(volume)
    assert seen == [(7, 12)] * 3  # one patch per slice: rows j, columns i


def test_values_outside_the_range_are_clipped_and_nan_is_the_low_end() -> None:
    x = torch.tensor([-3000.0, -1024.0, 1024.0, 3072.0, 5000.0, float("nan")])
    unit = normalize_intensity(x)
    assert unit.tolist() == [0.0, 0.0, 0.5, 1.0, 1.0, 0.0]
    torch.testing.assert_close(denormalize_intensity(unit), torch.tensor([-1024.0, -1024, 1024, 3072, 3072, -1024]))
    restored = identity_restorer()(x.reshape(1, 2, 3, 1))
    assert restored.min() >= CT_INTENSITY_RANGE[0] and restored.max() <= CT_INTENSITY_RANGE[1]


def test_int16_output_is_rounded_and_meta_is_kept() -> None:
    affine = torch.tensor([[0.0, -0.7, 0, 5], [0.8, 0, 0, -3], [0, 0, 2.5, 11], [0, 0, 0, 1]], dtype=torch.float64)
    values = torch.tensor([-1000.4, 12.6, 40.3, 2999.7]).reshape(1, 2, 2, 1).repeat(1, 1, 1, 2)
    image = MetaTensor(values, affine=affine, meta={"filename_or_obj": "x.nii.gz"})
    out = identity_restorer(output_dtype="int16")(image)
    assert isinstance(out, MetaTensor) and out.dtype == torch.int16 and out.shape == image.shape
    assert out.as_tensor()[..., 0].flatten().tolist() == [-1000, 13, 40, 3000]
    torch.testing.assert_close(out.affine, affine)
    assert out.meta["filename_or_obj"] == "x.nii.gz"


def test_planar_input_and_several_channels() -> None:
    x = torch.rand(3, 20, 9) * 1000
    out = identity_restorer()(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, x, rtol=0, atol=2e-3)


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="output_dtype"):
        identity_restorer(output_dtype="uint8")
    with pytest.raises(ValueError, match="overlap"):
        identity_restorer(overlap=1.0)
    with pytest.raises(ValueError, match="roi_size"):
        identity_restorer(roi_size=(16, 16, 16))
    with pytest.raises(ValueError, match="channel-first"):
        identity_restorer()(torch.zeros(4, 4))
    for bad in (0, -2, 2.5, "four", True):
        with pytest.raises(ValueError, match="sw_batch_size must be 'auto' or a positive integer"):
            identity_restorer(sw_batch_size=bad)


def test_sw_batch_size_auto_depends_on_the_device() -> None:
    assert resolve_sw_batch_size("auto", "cuda") == 32
    assert resolve_sw_batch_size("auto", torch.device("cuda:1")) == 32
    assert resolve_sw_batch_size("auto", "cpu") == 4
    assert resolve_sw_batch_size(np.int64(7), "cuda") == 7
    assert identity_restorer(device="cpu").inferer.sw_batch_size == 4


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_device_resolution_without_cuda() -> None:
    assert resolve_device("auto") == torch.device("cpu")
    assert not identity_restorer(device="auto", amp=True).inferer.amp  # autocast only on CUDA
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")


def tiny_network() -> RestoreRWKV:
    return RestoreRWKV(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1)


def test_load_network_from_a_checkpoint_file(tmp_path, seed: int) -> None:
    source = tiny_network()
    path = tmp_path / "model.pt"
    torch.save({"state_dict": source.state_dict()}, path)  # a wrapped checkpoint is accepted too
    loaded = load_network(tiny_network(), path, device="cpu")
    assert not loaded.training
    for (name, a), b in zip(source.state_dict().items(), loaded.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    inferred = load_network(None, path)  # configuration inferred from the tensors
    assert inferred.config["dim"] == 8 and inferred.config["num_blocks"] == (1, 1, 1, 1)
    with pytest.raises(FileNotFoundError, match="model weights not found"):
        load_network(tiny_network(), tmp_path / "missing.pt")
    with pytest.raises(RuntimeError):
        load_network(RestoreRWKV(dim=16, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1), path)


def test_restore_rwkv_through_the_restorer_keeps_shape(seed: int) -> None:
    net = load_network(tiny_network(), device="cpu")
    restorer = SliceWiseRestorer(net, roi_size=(16, 16), overlap=0.25, device="cpu", progress=False)
    out = restorer(torch.rand(1, 20, 13, 1) * 2000 - 1000)
    assert out.shape == (1, 20, 13, 1) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert out.min() >= -1024 and out.max() <= 3072


def test_per_volume_normalisation_sees_the_whole_volume_across_slabs(seed: int) -> None:
    """A percentile scale is computed once over all slices (not per slab of 16) and undone exactly."""
    from monai_rwkv.inference import Restorer
    from monai_rwkv.inferers import SliceRestorationInferer
    from monai_rwkv.transforms.intensity import SCALE_KEY, RestoreIntensityScale, ScaleToPercentile

    rng = np.random.default_rng(seed)
    n = Restorer.slab_size * 2 + 3
    volume = rng.gamma(2.0, 300.0, (1, 13, 11, n)).astype(np.float32)
    volume[..., n - 5 :] *= 40  # the last slab is far brighter: a per-slab scale would differ from the volume's
    seen = []

    def network(x: torch.Tensor) -> torch.Tensor:
        seen.append(float(x.max()))
        return x

    normalize = ScaleToPercentile(99.0)
    restorer = Restorer(
        network,
        SliceRestorationInferer((8, 8), overlap=0.5, sw_batch_size=64),
        normalize,
        RestoreIntensityScale(),
        device="cpu",
        clip_output=False,
        progress=False,
    )
    image = MetaTensor(torch.from_numpy(volume), affine=torch.diag(torch.tensor([0.5, 0.6, 2.0, 1.0])))
    out = restorer(image)
    scale = normalize(image).meta[SCALE_KEY]
    assert max(seen) == pytest.approx(float(volume.max()) * scale, rel=1e-5)  # one scale for every slab
    assert out.meta[SCALE_KEY] == scale and torch.equal(out.affine, image.affine)
    np.testing.assert_allclose(out.numpy(), volume, rtol=1e-5, atol=1e-5 * float(volume.max()))


def test_the_output_grid_is_the_one_normalize_returns() -> None:
    """A normalisation that changes the grid (e.g. zero-filling k-space onto a finer grid) sets the output's."""
    from monai_rwkv.inference import Restorer
    from monai_rwkv.inferers import SliceRestorationInferer

    def upsample(x: MetaTensor) -> MetaTensor:
        affine = x.affine.clone()
        affine[:3, :2] /= 2
        return MetaTensor(x.as_tensor().repeat_interleave(2, 1).repeat_interleave(2, 2) / 100, affine=affine)

    restorer = Restorer(
        nn.Identity(),
        SliceRestorationInferer((8, 8)),
        upsample,
        lambda y: y * 100,
        device="cpu",
        clip_output=False,
        progress=False,
    )
    image = MetaTensor(torch.rand(1, 5, 7, 3) * 50, affine=torch.diag(torch.tensor([1.0, 1.0, 3.0, 1.0])))
    out = restorer(image)
    assert tuple(out.shape) == (1, 10, 14, 3)
    np.testing.assert_allclose(out.affine.numpy(), np.diag([0.5, 0.5, 3.0, 1.0]))
    np.testing.assert_allclose(out[0, ::2, ::2].numpy(), image[0].numpy(), rtol=1e-5)


def test_network_input_is_computed_on_whole_slices_before_the_sliding_window(seed: int) -> None:
    """A per-slice noise-level channel reaches every patch of a slice with the value of the whole slice, across
    slab boundaries and for several image channels; the network's output is the restored image."""
    from monai_rwkv.inference import Restorer
    from monai_rwkv.inferers import SliceRestorationInferer
    from monai_rwkv.transforms import NoiseLevelMap, estimate_noise_level, noise_level_channel

    rng = np.random.default_rng(seed)
    n = Restorer.slab_size + 5
    sigmas = rng.uniform(0.002, 0.05, (2, n))
    volume = 0.4 + rng.normal(size=(2, 40, 33, n)) * sigmas[:, None, None, :]
    volume[:, :10] += 0.3  # an edge in every slice
    seen: dict[float, list[float]] = {}

    def network(x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1] == 2
        for patch in x:  # the level channel is constant over each patch
            level = float(patch[1].mean())
            assert torch.all(patch[1] == patch[1, 0, 0])
            seen.setdefault(level, []).append(float(patch[0].mean()))
        return x[:, :1] * 2.0

    restorer = Restorer(
        network,
        SliceRestorationInferer((8, 8), overlap=0.25, sw_batch_size=5),
        lambda v: v,
        lambda v: v,
        device="cpu",
        clip_output=False,
        progress=False,
        network_input=NoiseLevelMap(reference=0.01, slice_dim=2),
    )
    out = restorer(torch.from_numpy(volume).float())
    torch.testing.assert_close(out, torch.from_numpy(volume).float() * 2.0)
    slices = torch.from_numpy(volume).float().permute(0, 3, 2, 1).reshape(2 * n, 33, 40)  # (rows j, columns i)
    expected = noise_level_channel(estimate_noise_level(slices), 0.01)
    assert sorted(seen) == pytest.approx(sorted(set(expected.tolist())), abs=1e-4)
    assert restorer.describe()["network_input"] == "NoiseLevelMap"
