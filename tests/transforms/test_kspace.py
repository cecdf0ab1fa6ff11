"""k-space truncation against Parseval, the identity, and a direct float64 DFT reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_rwkv.transforms import KSpaceTruncate, KSpaceTruncated, kspace_keep, truncate_kspace


@pytest.mark.parametrize("shape", [(16, 16), (17, 15), (12, 9), (256, 192)])
@pytest.mark.parametrize("factor", [1, 2, 4, 3.5])
def test_energy_kept_is_the_kept_fraction_for_a_flat_spectrum(shape, factor, seed: int) -> None:
    """A single bright pixel has |k-space| = 1 everywhere: by Parseval the energy left is the fraction kept."""
    rng = np.random.default_rng(seed)
    image = torch.zeros(shape, dtype=torch.float64)
    image[int(rng.integers(shape[0])), int(rng.integers(shape[1]))] = float(rng.uniform(1, 1e4))
    out = truncate_kspace(image, factor)
    kept = (kspace_keep(shape[0], factor).stop - kspace_keep(shape[0], factor).start) * (
        kspace_keep(shape[1], factor).stop - kspace_keep(shape[1], factor).start
    )
    fraction = kept / (shape[0] * shape[1])
    assert float((out**2).sum() / (image**2).sum()) == pytest.approx(fraction, rel=1e-12)


def test_factor_4_keeps_6_25_percent_of_an_even_matrix() -> None:
    assert kspace_keep(256, 4) == slice(96, 160)  # 64 of 256 per axis: 1/16 of k-space
    assert kspace_keep(255, 4) == slice(95, 159)  # DC at index 127 is inside
    assert kspace_keep(5, 100) == slice(2, 3)  # at least the zero frequency


def test_factor_1_is_the_identity_for_magnitude_images(seed: int) -> None:
    image = torch.rand(2, 33, 20, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 4095
    torch.testing.assert_close(KSpaceTruncate(1)(image), image, rtol=0, atol=1e-9)


def _reference(image: np.ndarray, factor: float) -> np.ndarray:
    """The same degradation with explicit DFT matrices in float64 (no FFT, no shifts)."""
    out = np.empty_like(image)
    n0, n1 = image.shape
    freqs = [np.fft.fftfreq(n) * n for n in (n0, n1)]  # integer frequencies in FFT order
    masks = []
    for n, f in zip((n0, n1), freqs):
        keep = kspace_keep(n, factor)
        shifted = np.arange(n) - n // 2  # frequency at each fftshift index
        kept = set(shifted[keep].tolist())
        masks.append(np.array([int(round(v)) in kept for v in f]))
    dft0 = np.exp(-2j * np.pi * np.outer(np.arange(n0), np.arange(n0)) / n0)
    dft1 = np.exp(-2j * np.pi * np.outer(np.arange(n1), np.arange(n1)) / n1)
    spectrum = dft0 @ image @ dft1.T
    spectrum *= np.outer(masks[0], masks[1])
    out = np.abs(np.conj(dft0) @ spectrum @ np.conj(dft1).T / (n0 * n1))
    return out


@pytest.mark.parametrize("shape", [(24, 24), (25, 18)])
def test_matches_a_direct_dft_reference(shape, seed: int) -> None:
    image = np.random.default_rng(seed).uniform(0, 4095, shape)
    out = truncate_kspace(torch.as_tensor(image), 4).numpy()
    np.testing.assert_allclose(out, _reference(image, 4), rtol=0, atol=1e-9 * 4095)


def test_slices_along_the_third_axis_are_independent_and_meta_is_kept(seed: int) -> None:
    volume = torch.rand(1, 20, 14, 3, generator=torch.Generator().manual_seed(seed))
    out = KSpaceTruncated("image", factor=2)(
        {"image": MetaTensor(volume, affine=torch.diag(torch.tensor([2.0, 3, 4, 1])))}
    )
    for k in range(3):
        torch.testing.assert_close(out["image"][0, ..., k].as_tensor(), truncate_kspace(volume[0, ..., k], 2))
    assert out["image"].shape == volume.shape and torch.equal(
        out["image"].affine.diag(), torch.tensor([2.0, 3, 4, 1], dtype=torch.float64)
    )


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="factor must be >= 1"):
        KSpaceTruncate(0.5)
    with pytest.raises(ValueError, match="two different spatial axes"):
        KSpaceTruncate(4, spatial_axes=(1, 1))


def test_zero_fill_is_band_limited_interpolation(seed: int) -> None:
    """A band-limited periodic signal sampled on n points is reproduced exactly on factor * n points."""
    from monai_rwkv.transforms import zero_fill_kspace

    rng = np.random.default_rng(seed)
    for n_i, n_j, factor in ((16, 12, 2), (17, 9, 3), (10, 15, 4)):
        x_i, x_j = np.arange(n_i * factor) / factor, np.arange(n_j * factor) / factor
        f_i, f_j = (int(rng.integers(1, (n - 1) // 2)) for n in (n_i, n_j))  # below Nyquist
        phase = rng.uniform(0, 2 * np.pi, 2)

        def signal(a: np.ndarray, b: np.ndarray, f=(f_i, f_j), n=(n_i, n_j), p=phase) -> np.ndarray:
            return 5 + np.cos(2 * np.pi * f[0] * a[:, None] / n[0] + p[0]) * np.cos(
                2 * np.pi * f[1] * b[None, :] / n[1] + p[1]
            )

        coarse = torch.from_numpy(signal(np.arange(n_i), np.arange(n_j)))
        fine = zero_fill_kspace(coarse, factor)
        assert fine.shape == (n_i * factor, n_j * factor) and fine.dtype == torch.float64
        np.testing.assert_allclose(fine.numpy(), signal(x_i, x_j), atol=1e-10)
        np.testing.assert_allclose(fine.numpy()[::factor, ::factor], coarse.numpy(), atol=1e-10)


def test_zero_fill_then_truncate_gives_the_low_resolution_image_back(seed: int) -> None:
    from monai_rwkv.transforms import zero_fill_kspace

    image = torch.from_numpy(np.random.default_rng(seed).uniform(3000, 3300, (3, 21, 15)))  # odd: real result
    fine = zero_fill_kspace(image, 4, dims=(1, 2))
    # the fine image's spectrum is the coarse one, centred: cutting it back to 1/4 returns the coarse samples
    back = truncate_kspace(fine, 4, dims=(1, 2))[:, ::4, ::4]
    np.testing.assert_allclose(back.numpy(), image.numpy(), rtol=1e-9, atol=1e-9)


def test_zero_fill_transform_updates_the_affine_and_factor_one_is_the_identity() -> None:
    from monai.data import MetaTensor

    from monai_rwkv.transforms import KSpaceZeroFill, KSpaceZeroFilld

    affine = torch.tensor([[0.0, 0.9, 0, -5], [-0.8, 0, 0, 12], [0, 0, 3.0, 40], [0, 0, 0, 1]], dtype=torch.float64)
    image = MetaTensor(torch.rand(1, 6, 5, 2, dtype=torch.float64), affine=affine)
    out = KSpaceZeroFill(2)(image)
    assert tuple(out.shape) == (1, 12, 10, 2)
    expected = affine.clone()
    expected[:3, :2] /= 2
    np.testing.assert_allclose(out.affine.numpy(), expected.numpy())
    assert KSpaceZeroFill(1)(image) is image
    d = KSpaceZeroFilld("image", factor=2)({"image": image})
    np.testing.assert_array_equal(d["image"].numpy(), out.numpy())
    with pytest.raises(ValueError, match="integer"):
        KSpaceZeroFill(2.5)
    with pytest.raises(ValueError, match="channel-first"):
        KSpaceZeroFill(2)(torch.ones(4, 4))
