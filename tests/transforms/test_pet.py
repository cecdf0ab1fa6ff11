"""Tests of the PET phantom and acquisition simulator (monai_rwkv/transforms/pet.py).

Random tests take the fresh ``seed`` fixture of tests/conftest.py. The phantoms are built here (discs on 64 x 64
slices of 2 mm, and random tissue maps), so no data is needed. Statistical tests reconstruct several noise
realisations as slices of one call (the slices of a call share the count scale, and identical slices get identical
expected counts).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from scipy import ndimage

from monai_rwkv.transforms.pet import (
    FULL_COUNTS_PER_SLICE,
    LOW_COUNT_FRACTION,
    MAX_SUV,
    MU_WATER_511KEV_PER_MM,
    PETAcquisition,
    PETAcquisitiond,
    RandFDGPhantom,
    RandPETAcquisition,
    RandPETAcquisitiond,
    attenuation_map,
    fdg_phantom,
    lesion_labels,
    pet_geometry,
    random_deformation,
    simulate_pet,
)
from monai_rwkv.transforms.tomography import backproject, radon

SPACING = 2.0  # mm
SIZE = 64  # pixels: a 128 mm field of view
FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


def radius_mm(size: int = SIZE, spacing: float = SPACING) -> np.ndarray:
    """Distance of every pixel centre from the slice centre, in mm."""
    c = (np.arange(size) - (size - 1) / 2) * spacing
    return np.hypot(c[:, None], c[None, :])


def disc(radius: float, value: float = 1.0, supersample: int = 4) -> np.ndarray:
    """A uniform disc of ``radius`` mm with partial-volume edges (float64, SIZE x SIZE)."""
    n = SIZE * supersample
    c = (np.arange(n) - (n - 1) / 2) * SPACING / supersample
    inside = (np.hypot(c[:, None], c[None, :]) <= radius).astype(np.float64)
    return value * inside.reshape(SIZE, supersample, SIZE, supersample).mean(axis=(1, 3))


def random_tissue(rng: np.random.Generator, shape=(24, 20)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random grey/white/CSF probabilities summing to <= 1 (a random share is left to the background)."""
    parts = rng.dirichlet(np.ones(4), size=shape)  # (..., 4): gm, wm, csf, outside
    return parts[..., 0], parts[..., 1], parts[..., 2]


# ----------------------------------------------------------------------------------------------------------------
# phantom


def test_fdg_phantom_tissue_values(seed):
    rng = np.random.default_rng(seed)
    gm, wm, csf = random_tissue(rng)
    ratios = (rng.uniform(3, 5), rng.uniform(0.5, 1.5), rng.uniform(0, 0.1))
    out = fdg_phantom(gm, wm, csf, ratios)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64 and out.shape == gm.shape
    expected = 2.0 * (ratios[0] * gm + ratios[1] * wm + ratios[2] * csf) / ratios[1]
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=0)
    # pure tissues with the default ratios: white 2 SUV, grey 8 SUV, CSF 0.1 SUV; the range is the paper's [0, 20]
    pure = np.eye(3)
    np.testing.assert_allclose(fdg_phantom(pure[0], pure[1], pure[2]), [8.0, 2.0, 0.1], rtol=1e-6)
    full = torch.from_numpy(np.stack([gm, wm, csf])).float()
    t = fdg_phantom(full[0], full[1], full[2], (30.0, 1.0, 0.0))  # grey would be 60 SUV: clipped
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    assert float(t.min()) >= 0 and float(t.max()) <= MAX_SUV


def test_fdg_phantom_lesions(seed):
    rng = np.random.default_rng(seed)
    shape = (30, 30)
    gm = np.full(shape, rng.uniform(0.3, 0.6))
    wm = 1.0 - gm
    csf = np.zeros(shape)
    base = fdg_phantom(gm, wm, csf)
    centre, radius = (rng.uniform(10, 20), rng.uniform(10, 20)), rng.uniform(2.0, 6.0)
    contrast = rng.uniform(0.3, 2.0)
    out = fdg_phantom(gm, wm, csf, lesions=[(centre, radius, contrast)])
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    inside = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2
    np.testing.assert_allclose(out[inside], contrast * base[inside].mean(), rtol=1e-12)
    np.testing.assert_array_equal(out[~inside], base[~inside])
    # a very hot lesion saturates at MAX_SUV; a 3-D lesion is a ball
    assert fdg_phantom(gm, wm, csf, lesions=[(centre, radius, 100.0)]).max() == MAX_SUV
    vol = [np.repeat(m[..., None], 9, axis=-1) for m in (gm, wm, csf)]
    out3 = fdg_phantom(*vol, lesions=[((15.0, 15.0, 4.0), 3.0, 2.0)])
    changed = out3 != fdg_phantom(*vol)
    assert changed[15, 15, 1:8].all() and not changed[15, 15, 0] and not changed[15, 15, 8]


def test_rand_fdg_phantom(seed):
    rng = np.random.default_rng(seed)
    gm, wm, csf = random_tissue(rng, (40, 36))
    gm[10:30, 8:28], wm[10:30, 8:28], csf[10:30, 8:28] = 0.5, 0.45, 0.05  # a brain for the lesions
    tissue = torch.from_numpy(np.stack([gm, wm, csf])).float()
    phantom = RandFDGPhantom()
    phantom.set_random_state(seed)
    seen_lesions = 0
    for _ in range(8):
        out = phantom(tissue)
        assert out.shape == (1, 40, 36) and out.dtype == torch.float32
        assert float(out.min()) >= 0 and float(out.max()) <= MAX_SUV
        r_gm, r_wm, r_csf = phantom.ratios
        assert 3 <= r_gm <= 5 and r_wm == 1 and 0 <= r_csf <= 0.1
        assert len(phantom.lesions) <= 3
        for centre, radius, contrast in phantom.lesions:
            i, j = (int(c) for c in centre)
            assert gm[i, j] + wm[i, j] >= 0.5 and 2 <= radius <= 6 and 0.3 <= contrast <= 3
        seen_lesions += len(phantom.lesions)
        expected = fdg_phantom(tissue[0], tissue[1], tissue[2], phantom.ratios, phantom.lesions)
        torch.testing.assert_close(out[0], expected)
    assert seen_lesions > 0  # 8 draws without any lesion: probability 0.25 ** 8
    again = RandFDGPhantom().set_random_state(seed)
    first = RandFDGPhantom().set_random_state(seed)(tissue.numpy())
    assert isinstance(first, np.ndarray)
    np.testing.assert_array_equal(first, again(tissue.numpy()))
    volume = RandFDGPhantom().set_random_state(seed)(tissue[..., None].expand(-1, -1, -1, 5).double())
    assert volume.shape == (1, 40, 36, 5) and volume.dtype == torch.float64
    default = RandFDGPhantom(prob=0.0)(tissue)
    torch.testing.assert_close(default[0], fdg_phantom(tissue[0], tissue[1], tissue[2]))


def test_attenuation_map(seed):
    rng = np.random.default_rng(seed)
    shape = (48, 48)
    r = np.hypot(*np.meshgrid(np.arange(48) - 23.5, np.arange(48) - 23.5, indexing="ij")) * SPACING  # mm
    brain = r <= rng.uniform(25.0, 35.0)
    gm = np.where(brain, rng.uniform(0.2, 0.6, shape), 0.0)
    wm = np.where(brain, 1.0 - gm - 0.05, 0.0)
    csf = np.where(brain, 0.05, 0.0)
    csf[24, 24] = 1.0 - gm[24, 24] - wm[24, 24]
    mu = attenuation_map(gm, wm, csf, spacing=SPACING, head_margin_mm=8.0, smooth_fwhm_mm=4.0)
    assert mu.shape == shape and mu.dtype == np.float64
    edge = r[brain].max()
    np.testing.assert_allclose(mu[r <= edge - 6], MU_WATER_511KEV_PER_MM, rtol=1e-9)  # inside the head: water
    np.testing.assert_allclose(mu[(r > edge) & (r <= edge + 3)], MU_WATER_511KEV_PER_MM, rtol=0.03)  # skull
    assert np.all(mu[r > edge + 8 + 3 * math.sqrt(2) * SPACING] == 0)  # air beyond the margin and the smoothing
    assert np.all(mu >= 0) and mu.max() <= MU_WATER_511KEV_PER_MM * (1 + 1e-12)
    sharp = attenuation_map(gm, wm, csf, spacing=SPACING, head_margin_mm=0.0, smooth_fwhm_mm=0.0)
    np.testing.assert_array_equal(sharp, np.where(brain, MU_WATER_511KEV_PER_MM, 0.0))


def test_phantom_errors():
    ones, zeros = np.ones((4, 4)), np.zeros((4, 4))
    with pytest.raises(ValueError, match="same shape"):
        fdg_phantom(ones, zeros, np.zeros((4, 5)))
    with pytest.raises(ValueError, match=r"gm must be a probability map"):
        fdg_phantom(ones * 2, zeros, zeros)
    with pytest.raises(ValueError, match="non-finite"):
        fdg_phantom(ones, ones * np.nan, zeros)
    with pytest.raises(ValueError, match="white > 0"):
        fdg_phantom(ones, zeros, zeros, ratios=(4.0, 0.0, 0.1))
    with pytest.raises(ValueError, match="3 coordinates but the maps have 2"):
        fdg_phantom(ones, zeros, zeros, lesions=[((1, 1, 1), 2.0, 2.0)])
    with pytest.raises(ValueError, match="radius must be > 0"):
        fdg_phantom(ones, zeros, zeros, lesions=[((1, 1), 0.0, 2.0)])
    with pytest.raises(ValueError, match=r"\(centre, radius, contrast\)"):
        fdg_phantom(ones, zeros, zeros, lesions=[((1, 1), 2.0)])
    with pytest.raises(ValueError, match="spacing must be a number or 2 numbers"):
        attenuation_map(ones, zeros, zeros, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match=r"expects channel-first tissue maps \(3, H, W\)"):
        RandFDGPhantom()(np.ones((2, 4, 4)))
    with pytest.raises(ValueError, match="gm_ratio_range"):
        RandFDGPhantom(gm_ratio_range=(5.0, 3.0))
    with pytest.raises(ValueError, match="lesion_contrast_range"):
        RandFDGPhantom(lesion_contrast_range=(0.0, 3.0))
    with pytest.raises(ValueError, match="max_lesions"):
        RandFDGPhantom(max_lesions=-1)


# ----------------------------------------------------------------------------------------------------------------
# projector pair and acquisition


def test_projector_pair_is_nearly_adjoint(seed):
    """backproject is the adjoint of radon up to dy dx / (dtheta du) and ~1 % of mismatch: the OSEM premise."""
    g = torch.Generator().manual_seed(seed)
    geom = pet_geometry((32, 32), SPACING)
    image = torch.rand(32, 32, dtype=torch.float64, generator=g, requires_grad=True)
    sino = radon(image, geom)
    weights = torch.rand(sino.shape, dtype=torch.float64, generator=g)
    (exact,) = torch.autograd.grad((sino * weights).sum(), image)
    scale = SPACING * SPACING / (math.pi / geom.n_views * geom.det_spacing)
    approx = scale * backproject(weights, geom)
    assert float((approx - exact).norm() / exact.norm()) < 0.02


def test_unbiased_mean_in_uniform_region(seed):
    value = 2.0 + 6.0 * np.random.default_rng(seed).random()
    activity = torch.from_numpy(disc(50.0, value))
    mu = torch.from_numpy(disc(55.0, MU_WATER_511KEV_PER_MM))
    batch = activity.expand(6, -1, -1)
    gen = torch.Generator().manual_seed(seed)
    out = simulate_pet(batch, mu, counts=2e5, spacing=SPACING, generator=gen)
    assert out.shape == batch.shape and out.dtype == torch.float64 and float(out.min()) >= 0
    centre = torch.from_numpy(radius_mm() <= 30.0)
    mean = float(out[:, centre].mean())
    assert abs(mean / value - 1) < 0.03, (mean, value)


def test_noise_variance_scales_with_counts(seed):
    activity = torch.from_numpy(disc(50.0, 4.0)).expand(12, -1, -1)
    mu = torch.from_numpy(disc(55.0, MU_WATER_511KEV_PER_MM))
    centre = torch.from_numpy(radius_mm() <= 30.0)
    variances = []
    for i, counts in enumerate((1e5, 4e5)):
        gen = torch.Generator().manual_seed(seed + i)
        out = simulate_pet(activity, mu, counts=counts, spacing=SPACING, generator=gen)
        variances.append(float(out[:, centre].var(dim=0).mean()))  # per-pixel variance over the realisations
    ratio = variances[0] / variances[1]
    assert abs(ratio / 4 - 1) < 0.25, variances


def test_noise_free_reconstruction_is_the_blurred_phantom(seed):
    rng = np.random.default_rng(seed)
    activity = disc(54.0, 2.0) + disc(30.0, rng.uniform(3, 6))  # warm background with a hot core
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for _ in range(3):  # hot and cold spots
        cy, cx = rng.uniform(22, 42, size=2)
        activity[(yy - cy) ** 2 + (xx - cx) ** 2 <= rng.uniform(2, 4) ** 2] = rng.uniform(0.5, 12.0)
    mu = disc(56.0, MU_WATER_511KEV_PER_MM)
    res, post = 4.0, 4.0
    out = simulate_pet(
        torch.from_numpy(activity), torch.from_numpy(mu), counts=1e13, iterations=8, subsets=16, spacing=SPACING,
        post_filter_fwhm_mm=post, resolution_fwhm_mm=res, generator=torch.Generator().manual_seed(seed),
    ).numpy()  # fmt: skip
    blurred = ndimage.gaussian_filter(activity, math.hypot(res, post) * FWHM_TO_SIGMA / SPACING, mode="nearest")
    obj = radius_mm() <= 50.0
    error = np.linalg.norm((out - blurred)[obj]) / np.linalg.norm(blurred[obj])
    assert error < 0.02, error
    unfiltered = simulate_pet(
        torch.from_numpy(activity), torch.from_numpy(mu), counts=1e13, iterations=8, spacing=SPACING,
        post_filter_fwhm_mm=0.0, resolution_fwhm_mm=res, generator=torch.Generator().manual_seed(seed),
    ).numpy()  # fmt: skip
    assert unfiltered[obj].std() > out[obj].std()  # the post-filter smooths


def test_attenuation_correction_is_flat(seed):
    value = 1.0 + 4.0 * np.random.default_rng(seed).random()
    activity = torch.from_numpy(disc(58.0, value))
    mu = torch.from_numpy(disc(58.0, MU_WATER_511KEV_PER_MM))  # 116 mm of water: 67 % attenuation at the centre
    out = simulate_pet(
        activity, mu, counts=1e10, iterations=6, spacing=SPACING, generator=torch.Generator().manual_seed(seed)
    ).numpy()
    r = radius_mm()
    centre, ring = out[r <= 10].mean(), out[(r >= 30) & (r <= 40)].mean()
    assert abs(centre / ring - 1) < 0.01, (centre, ring)  # no cupping
    assert abs(centre / value - 1) < 0.01 and abs(ring / value - 1) < 0.01


def test_shared_or_per_slice_count_scale(seed):
    """Shared: a slice 4 times as active gets 4 times the counts (half the relative noise); per slice: the same."""
    base = torch.from_numpy(disc(50.0, 2.0))
    batch = torch.stack([base] * 6 + [4 * base] * 6)
    mu = torch.from_numpy(disc(55.0, MU_WATER_511KEV_PER_MM))
    centre = torch.from_numpy(radius_mm() <= 30.0)
    ratios = {}
    for shared in (True, False):
        gen = torch.Generator().manual_seed(seed)
        out = simulate_pet(batch, mu, counts=2e5, spacing=SPACING, generator=gen, shared_scale=shared)[:, centre]
        rel_std = [float((g.var(dim=0) / g.mean(dim=0) ** 2).mean().sqrt()) for g in (out[:6], out[6:])]
        ratios[shared] = rel_std[0] / rel_std[1]
    assert abs(ratios[True] / 2 - 1) < 0.2 and abs(ratios[False] - 1) < 0.2, ratios
    # per slice, a slice without activity gives zeros (and does not disturb the others)
    with_empty = simulate_pet(torch.stack([base, 0 * base]), mu, spacing=SPACING, shared_scale=False)
    assert float(with_empty[1].abs().max()) == 0 and float(with_empty[0].max()) > 1


def test_simulate_pet_errors():
    act = torch.from_numpy(disc(40.0, 2.0))
    with pytest.raises(ValueError, match="counts"):
        simulate_pet(act, None, counts=0.0)
    with pytest.raises(ValueError, match="background_fraction"):
        simulate_pet(act, None, background_fraction=-0.1)
    with pytest.raises(ValueError, match="iterations"):
        simulate_pet(act, None, iterations=0)
    with pytest.raises(ValueError, match="subsets"):
        simulate_pet(act, None, subsets=1.5)
    with pytest.raises(ValueError, match=r"subsets \(100\) cannot exceed the number of views \(64\)"):
        simulate_pet(act, None, subsets=100)
    with pytest.raises(ValueError, match="post_filter_fwhm_mm"):
        simulate_pet(act, None, post_filter_fwhm_mm=-1.0)
    with pytest.raises(ValueError, match="non-negative"):
        simulate_pet(-act, None)
    with pytest.raises(ValueError, match="no counts"):
        simulate_pet(act * 0, None)
    with pytest.raises(ValueError, match="does not broadcast"):
        simulate_pet(act, torch.zeros(3, 3))
    with pytest.raises(ValueError, match="attenuation must be finite and non-negative"):
        simulate_pet(act, -torch.ones_like(act))
    with pytest.raises(ValueError, match="do not match the geometry"):
        simulate_pet(act, None, geometry=pet_geometry((32, 32)))


# ----------------------------------------------------------------------------------------------------------------
# transforms


def small_pair(seed: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """A (1, size, size) random warm disc phantom and its attenuation map, float32."""
    rng = np.random.default_rng(seed)
    r = np.hypot(*np.meshgrid(np.arange(size) - (size - 1) / 2, np.arange(size) - (size - 1) / 2, indexing="ij"))
    inside = r <= size * 0.4
    act = np.where(inside, rng.uniform(1.0, 8.0, (size, size)), 0.0)
    mu = np.where(inside, MU_WATER_511KEV_PER_MM, 0.0)
    return torch.from_numpy(act[None]).float(), torch.from_numpy(mu[None]).float()


FAST = {"iterations": 1, "subsets": 4, "spacing": SPACING}


def test_array_and_dict_agree_and_reproduce(seed):
    act, mu = small_pair(seed)
    rand = RandPETAcquisition(count_fraction=(0.05, 0.5), **FAST).set_random_state(seed)
    first = rand(act, mu)
    assert first.shape == act.shape and first.dtype == torch.float32
    assert 0.05 <= rand.count_fraction <= 0.5
    again = RandPETAcquisition(count_fraction=(0.05, 0.5), **FAST).set_random_state(seed)(act, mu)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.equal(first, rand(act, mu))  # the next call draws new noise
    d = RandPETAcquisitiond(["a", "b"], attenuation_key="mu", count_fraction=(0.05, 0.5), **FAST)
    out = d.set_random_state(seed)({"a": act, "b": act.clone(), "mu": mu})
    torch.testing.assert_close(out["a"], first, rtol=0, atol=0)
    assert not torch.equal(out["a"], out["b"])  # same count level, independent noise
    assert out["mu"] is mu
    fixed = PETAcquisition(count_fraction=LOW_COUNT_FRACTION, seed=seed, **FAST)
    torch.testing.assert_close(fixed(act, mu), fixed(act, mu), rtol=0, atol=0)
    fd = PETAcquisitiond("a", attenuation_key="mu", count_fraction=LOW_COUNT_FRACTION, seed=seed, **FAST)
    torch.testing.assert_close(fd({"a": act, "mu": mu})["a"], fixed(act, mu), rtol=0, atol=0)
    assert not torch.equal(PETAcquisition(1.0, seed=seed, **FAST)(act, mu), fixed(act, mu))


def test_transform_kinds_shapes_and_spacing(seed):
    act, mu = small_pair(seed)
    numpy_out = RandPETAcquisition(**FAST).set_random_state(seed)(act.double().numpy(), mu.numpy())
    assert isinstance(numpy_out, np.ndarray) and numpy_out.dtype == np.float64 and numpy_out.shape == (1, 32, 32)
    meta = MetaTensor(act, affine=torch.diag(torch.tensor([SPACING, SPACING, 1.0, 1.0])))
    no_spacing = {k: v for k, v in FAST.items() if k != "spacing"}
    from_meta = RandPETAcquisition(**no_spacing).set_random_state(seed)(meta, mu)
    assert isinstance(from_meta, MetaTensor)
    explicit = RandPETAcquisition(**FAST).set_random_state(seed)(act, mu)
    torch.testing.assert_close(from_meta.as_tensor(), explicit, rtol=0, atol=0)
    # a volume (C, H, W, D): its D slices are simulated together; channels of the attenuation broadcast
    volume = torch.stack([act[0], act[0].flip(0), act[0].flip(1)], dim=-1)[None].expand(2, -1, -1, -1)
    mu_vol = mu[..., None].expand(-1, -1, -1, 3)
    out = RandPETAcquisition(**FAST).set_random_state(seed)(volume, mu_vol)
    assert out.shape == (2, 32, 32, 3) and float(out.min()) >= 0
    transposed = RandPETAcquisition(spatial_axes=(1, 0), **FAST).set_random_state(seed)(
        volume.transpose(1, 2), mu_vol.transpose(1, 2)
    )
    torch.testing.assert_close(transposed.transpose(1, 2), out)
    integer = RandPETAcquisition(**FAST).set_random_state(seed)((act * 10).round().int())
    assert integer.dtype == torch.float32
    skipped = RandPETAcquisition(prob=0.0, **FAST)(act, mu)
    assert skipped is act


def test_transform_errors():
    act, mu = small_pair(0)
    with pytest.raises(ValueError, match="count_fraction must be positive"):
        RandPETAcquisition(count_fraction=0.0)
    with pytest.raises(ValueError, match="count_fraction must be positive"):
        RandPETAcquisition(count_fraction=(0.5, 0.1))
    with pytest.raises(ValueError, match="counts"):
        RandPETAcquisition(full_counts=-1.0)
    with pytest.raises(ValueError, match=r"subsets \(16\) cannot exceed n_views \(8\)"):
        RandPETAcquisition(n_views=8)
    with pytest.raises(ValueError, match="spatial_axes"):
        RandPETAcquisition(spatial_axes=(0, 0))
    with pytest.raises(ValueError, match=r"channel-first activity \(C, H, W\)"):
        RandPETAcquisition(**FAST)(act[0])
    with pytest.raises(ValueError, match="spatial axis 2"):
        RandPETAcquisition(spatial_axes=(0, 2), **FAST)(act)
    with pytest.raises(ValueError, match="1 or 2 channels"):
        RandPETAcquisition(**FAST)(act.expand(2, -1, -1), mu.expand(3, -1, -1))
    with pytest.raises(ValueError, match="one count_fraction"):
        PETAcquisition(count_fraction=(0.1, 0.2))
    with pytest.raises(KeyError, match="attenuation_key 'mu'"):
        RandPETAcquisitiond("a", attenuation_key="mu", **FAST)({"a": act})
    out = RandPETAcquisitiond("a", attenuation_key="mu", allow_missing_keys=True, **FAST)({"a": act})
    assert out["a"].shape == act.shape


def test_default_levels():
    assert LOW_COUNT_FRACTION == pytest.approx(1 / 12)
    assert FULL_COUNTS_PER_SLICE > 0
    assert MU_WATER_511KEV_PER_MM == pytest.approx(0.0096)
    geom = pet_geometry((128, 128), 2.0)
    assert (geom.n_views, geom.n_det, geom.det_spacing) == (128, 130, 2.0)


def test_lesion_labels_match_the_phantom(seed):
    rng = np.random.default_rng(seed)
    shape = (24, 26, 5)
    gm = rng.uniform(0.2, 0.6, shape)
    wm, csf = 1.0 - gm, np.zeros(shape)
    lesions = [((rng.uniform(5, 20), rng.uniform(5, 20), rng.uniform(0, 4)), rng.uniform(2, 5), rng.uniform(0.3, 3))]
    lesions.append((lesions[0][0], lesions[0][1] * 0.5, 1.7))  # painted last: covers the middle of the first
    labels = lesion_labels(shape, lesions).numpy()
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    for index, (centre, radius, _) in enumerate(lesions):
        inside = ((grid - np.asarray(centre)) ** 2).sum(-1) <= radius**2
        later = np.isin(labels, list(range(index + 2, len(lesions) + 1)))
        np.testing.assert_array_equal(labels[inside & ~later], index + 1)
    assert set(np.unique(labels)) == {0, 1, 2}
    out = fdg_phantom(gm, wm, csf, lesions=lesions)
    np.testing.assert_array_equal(out[labels == 0], fdg_phantom(gm, wm, csf)[labels == 0])
    assert np.ptp(out[labels == 2]) == 0 and np.ptp(out[labels == 1]) == 0
    assert lesion_labels((4, 4), []).sum() == 0
    with pytest.raises(ValueError, match="coordinates"):
        lesion_labels((4, 4), [((1.0, 1.0, 1.0), 1.0, 1.0)])


def test_random_deformation(seed):
    rng = np.random.default_rng(seed)
    shape = (40, 44, 6)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    disc = (((yy - 20) ** 2 + (xx - 22) ** 2) <= 12**2).astype(np.float64)
    maps = np.stack([np.repeat(disc[..., None], shape[2], -1) * w for w in (0.6, 0.4)], -1)
    same = random_deformation(maps, rng, displacement_mm=0.0)
    np.testing.assert_array_equal(same, maps)
    shift = rng.uniform(2.0, 4.0)
    out = random_deformation(maps, np.random.default_rng(seed), displacement_mm=shift, spacing=2.0)
    assert out.shape == maps.shape and out.min() >= 0 and out.max() <= 1
    assert not np.allclose(out, maps)
    # the same field moves every channel: their ratio is kept where there is tissue
    tissue = out[..., 0] > 0.05
    np.testing.assert_allclose(out[..., 1][tissue] / out[..., 0][tissue], 0.4 / 0.6, rtol=1e-6)
    # no voxel moves further than the largest displacement (shift mm = shift / 2 voxels): the disc's edge stays
    # within that distance of the original edge
    moved = out[..., 0, 0] > 0.3
    far_out = ndimage.distance_transform_edt(disc == 0) > shift / 2 + 1
    far_in = ndimage.distance_transform_edt(disc == 1) > shift / 2 + 1
    assert not (moved & far_out).any() and (moved | ~far_in).all()
    with pytest.raises(ValueError, match="displacement_mm"):
        random_deformation(maps, rng, displacement_mm=-1.0)
