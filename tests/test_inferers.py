"""The inferers against independent references: a per-slice MONAI sliding window and known pointwise maps."""

from __future__ import annotations

import pytest
import torch
from monai.inferers import SlidingWindowInferer
from torch import nn

from monai_rwkv.inferers import RestorationInferer, SliceRestorationInferer, fit_roi


def _conv_net(seed: int, dims: int = 2) -> nn.Module:
    torch.manual_seed(seed)
    conv = (nn.Conv2d if dims == 2 else nn.Conv3d)(1, 1, 3, padding=1)
    return conv.eval()


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
def test_slices_match_a_per_slice_sliding_window_on_transposed_slices(seed: int, overlap: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    i, j, k = (int(v) for v in torch.randint(9, 40, (3,), generator=gen))
    volume = torch.rand(2, 1, i, j, k % 5 + 1, generator=gen) * 10 - 5
    net = _conv_net(seed)
    roi = (8, 13)  # (rows, columns): not square, so a transposition error cannot hide
    inferer = SliceRestorationInferer(roi_size=roi, overlap=overlap, mode="gaussian", sw_batch_size=3)
    # slices are (rows j, columns i); an axis shorter than the window gets a window of its own length
    fitted = (min(roi[0], j), min(roi[1], i))
    reference = SlidingWindowInferer(roi_size=fitted, overlap=overlap, mode="gaussian", sw_batch_size=1)
    with torch.no_grad():
        out = inferer(volume, net)
        expected = torch.stack(
            [reference(volume[..., s].transpose(-1, -2), net).transpose(-1, -2) for s in range(volume.shape[-1])], -1
        )
    # float32 rounding only: a handful of roundings of values of magnitude <= max|out| (the blend is a convex sum)
    bound = 64 * torch.finfo(torch.float32).eps * float(expected.abs().max())
    torch.testing.assert_close(out, expected, rtol=0, atol=bound)


def test_each_slice_reaches_the_network_as_rows_j_columns_i() -> None:
    seen = []

    def probe(x: torch.Tensor) -> torch.Tensor:
        seen.extend([tuple(x.shape[-2:])] * x.shape[0])
        return x

    SliceRestorationInferer(roi_size=(7, 12), sw_batch_size=2)(torch.rand(1, 1, 12, 7, 3), probe)
    assert seen == [(7, 12)] * 3
    seen.clear()
    SliceRestorationInferer(roi_size=(12, 7), transpose=False)(torch.rand(1, 1, 12, 7, 2), probe)
    assert seen == [(12, 7)] * 2


@pytest.mark.parametrize("sw_batch_size", [1, 4])
def test_identity_keeps_the_volume_and_a_pointwise_map_is_applied_exactly(seed: int, sw_batch_size: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    volume = torch.rand(1, 1, 37, 21, 3, generator=gen)
    inferer = SliceRestorationInferer(roi_size=(16, 16), overlap=0.6, sw_batch_size=sw_batch_size)
    n = 16  # at most 4 x 4 windows cover a pixel at overlap 0.6 (roi 16: step 6): 2n roundings of values < 1
    torch.testing.assert_close(inferer(volume, nn.Identity()), volume, rtol=0, atol=n * torch.finfo(torch.float32).eps)
    a, b = float(torch.rand(1, generator=gen)) + 0.5, float(torch.rand(1, generator=gen))
    expected = volume * a + b
    out = inferer(volume, lambda x: x * a + b)
    torch.testing.assert_close(out, expected, rtol=0, atol=(n + 2) * torch.finfo(torch.float32).eps * 2.0)


def test_one_slice_volumes_and_planar_inputs() -> None:
    net = _conv_net(0)
    inferer = SliceRestorationInferer(roi_size=(16, 16))
    slice_ = torch.rand(1, 1, 20, 18)
    with torch.no_grad():
        torch.testing.assert_close(inferer(slice_, net), inferer(slice_[..., None], net)[..., 0])


def test_3d_patches_match_monai(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    volume = torch.rand(1, 1, 19, 23, 17, generator=gen)
    net = _conv_net(seed, dims=3)
    kwargs = {"roi_size": (8, 8, 8), "overlap": 0.25, "mode": "gaussian", "sw_batch_size": 2}
    with torch.no_grad():
        torch.testing.assert_close(
            RestorationInferer(**kwargs)(volume, net), SlidingWindowInferer(**kwargs)(volume, net)
        )


def test_a_slice_smaller_than_the_window_is_one_window_of_its_own_size(seed: int) -> None:
    """No constant padding: the network sees the slice itself, and the result is the network on the whole slice."""
    gen = torch.Generator().manual_seed(seed)
    i, j = (int(v) for v in torch.randint(5, 40, (2,), generator=gen))
    volume = torch.rand(1, 1, i, j, 3, generator=gen) * 2000 - 1000
    net, seen = _conv_net(seed), []

    def probe(x: torch.Tensor) -> torch.Tensor:
        seen.extend([tuple(x.shape[-2:])] * x.shape[0])
        return net(x)

    with torch.no_grad():
        out = SliceRestorationInferer(roi_size=(64, 48), overlap=0.25, mode="gaussian", sw_batch_size=2)(volume, probe)
        expected = torch.stack([net(volume[..., s].transpose(-1, -2)).transpose(-1, -2) for s in range(3)], -1)
    assert seen == [(j, i)] * 3
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6 * float(expected.abs().max()))


def test_a_slice_shorter_than_the_window_along_one_axis_slides_along_the_other(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    i, j = int(torch.randint(41, 90, (1,), generator=gen)), int(torch.randint(4, 16, (1,), generator=gen))
    volume = torch.rand(1, 1, i, j, 2, generator=gen) * 10 - 5
    net = _conv_net(seed)
    with torch.no_grad():
        out = SliceRestorationInferer(roi_size=(16, 16), overlap=0.25, mode="gaussian")(volume, net)
        window = SlidingWindowInferer(roi_size=(j, 16), overlap=0.25, mode="gaussian")
        expected = torch.stack([window(volume[..., s].transpose(-1, -2), net).transpose(-1, -2) for s in range(2)], -1)
    torch.testing.assert_close(out, expected, rtol=0, atol=64 * torch.finfo(torch.float32).eps * 5)


def test_3d_windows_fit_an_image_smaller_than_the_roi(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    volume = torch.rand(1, 1, 30, 6, 11, generator=gen)
    net, seen = _conv_net(seed, dims=3), []

    def probe(x: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(x.shape[2:]))
        return net(x)

    kwargs = {"overlap": 0.25, "mode": "gaussian", "sw_batch_size": 1}
    with torch.no_grad():
        out = RestorationInferer(roi_size=(8, 8, 16), **kwargs)(volume, probe)
        expected = SlidingWindowInferer(roi_size=(8, 6, 11), **kwargs)(volume, net)
    assert set(seen) == {(8, 6, 11)}
    torch.testing.assert_close(out, expected)
    with torch.no_grad():  # one value: the same window along every axis, fitted likewise
        cubic = SlidingWindowInferer(roi_size=(8, 6, 8), **kwargs)(volume, net)
        torch.testing.assert_close(RestorationInferer(roi_size=8, **kwargs)(volume, net), cubic)


def test_fit_roi() -> None:
    assert fit_roi((128, 128), (512, 100)) == (128, 100)
    assert fit_roi((-1, 64), (30, 20)) == (-1, 20)  # MONAI's "the image's size" stays as it is
    with pytest.raises(ValueError, match="differ in dimensions"):
        fit_roi((8, 8), (8, 8, 8))


def test_roi_must_be_two_dimensional_for_slices() -> None:
    with pytest.raises(ValueError, match="roi_size must be"):
        SliceRestorationInferer(roi_size=(8, 8, 8))


def test_a_3d_network_is_served_through_the_restorer_and_the_runner(tmp_path, seed: int) -> None:
    """The dataset runner restores a NIfTI volume with a 3D Restore-RWKV on 3D patches (no slab cutting)."""
    import nibabel as nib
    import numpy as np

    from monai_rwkv.apps.restore import InputImage, RestoreTask, restore_task
    from monai_rwkv.inference import Restorer, denormalize_intensity, normalize_intensity
    from monai_rwkv.networks.nets import RestoreRWKV

    torch.manual_seed(seed)
    net = RestoreRWKV(spatial_dims=3, dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1).eval()
    inferer = RestorationInferer(roi_size=(16, 16, 16), overlap=0.25, mode="gaussian", sw_batch_size=2)
    seen = []

    def network(x: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(x.shape))
        return net(x)

    restorer = Restorer(network, inferer, normalize_intensity, denormalize_intensity, device="cpu", progress=False)
    data = np.random.default_rng(seed).uniform(-1000, 2000, (20, 18, 24)).astype(np.float32)
    source = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([0.9, 0.9, 1.2, 1.0])), source)
    task = RestoreTask(InputImage(source, "ct", ".nii.gz"), nifti_output=tmp_path / "out.nii.gz")
    assert restore_task(restorer, task, "m", "1") == [tmp_path / "out.nii.gz"]
    assert seen and all(s[1:] == (1, 16, 16, 16) for s in seen)  # 3D patches, never slices
    with torch.no_grad():
        expected = denormalize_intensity(
            inferer(normalize_intensity(torch.as_tensor(data))[None, None], net).clamp(0, 1)
        )
    out = nib.load(tmp_path / "out.nii.gz")
    np.testing.assert_array_equal(out.get_fdata(dtype=np.float32), expected[0, 0].numpy())
    np.testing.assert_allclose(out.affine, np.diag([0.9, 0.9, 1.2, 1.0]), atol=1e-6)
