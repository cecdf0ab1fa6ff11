"""Tests of the low-dose CT simulator (monai_rwkv/transforms/ct.py).

Random tests take the fresh ``seed`` fixture of tests/conftest.py. Phantoms are built here (anti-aliased by 4x4
supersampling), so no data is needed; one test also checks a slice of the prepared real head CT when ``data/ct``
exists (see scripts/prepare_ct_data.py).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.data import MetaTensor

from monai_rwkv.transforms import (
    FILTER_WINDOWS,
    LowDoseCT,
    LowDoseCTd,
    ParallelBeamGeometry,
    RandLowDoseCT,
    RandLowDoseCTd,
    hu_to_mu,
    iradon,
    mu_to_hu,
    radon,
    reconstruction_kernel,
    simulate_low_dose_ct,
)
from monai_rwkv.transforms.ct import BEAMS, VIEW_SAMPLINGS, complete_views, view_aliasing
from monai_rwkv.transforms.fanbeam import FanBeamGeometry

SPACING = 1.6  # mm; 128 x 128 pixels -> a 205 mm field of view, a head-sized phantom
REPO = Path(__file__).resolve().parents[2]

# (centre x, centre y, semi-axis a, semi-axis b (mm), rotation (rad), HU), painted in order on air (-1000 HU)
HEAD = [
    (0, 0, 90, 72, 0.0, 900),  # skull
    (0, 0, 84, 66, 0.0, 35),  # brain
    (-18, -5, 10, 28, -0.3, 0),  # ventricles (CSF)
    (18, -5, 10, 28, 0.3, 0),
    (0, 40, 12, 12, 0.0, 75),  # lesions
    (-40, 30, 6, 6, 0.0, 120),
    (35, -40, 20, 10, 0.5, 15),
    (0, -55, 4, 4, 0.0, 300),
]
WATER = [(0, 0, 85, 85, 0.0, 0)]  # a 170 mm water cylinder


def ellipse_phantom(ellipses, shape=(128, 128), spacing=SPACING, supersample=4) -> torch.Tensor:
    """Paint ellipses (mm, HU) on air; returns an (H, W) float64 tensor in HU with partial-volume edges."""
    h, w = shape[0] * supersample, shape[1] * supersample
    y = (torch.arange(h, dtype=torch.float64) - (h - 1) / 2) * spacing / supersample
    x = (torch.arange(w, dtype=torch.float64) - (w - 1) / 2) * spacing / supersample
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    img = torch.full_like(xx, -1000.0)
    for cx, cy, a, b, angle, hu in ellipses:
        c, s = math.cos(angle), math.sin(angle)
        u, v = (xx - cx) * c + (yy - cy) * s, -(xx - cx) * s + (yy - cy) * c
        img[(u / a) ** 2 + (v / b) ** 2 <= 1] = hu
    return F.avg_pool2d(img[None, None], supersample)[0, 0]


def flat_mask(img: torch.Tensor, radius: int = 5) -> torch.Tensor:
    """Pixels whose (2 radius + 1)^2 neighbourhood is uniform, i.e. away from every edge."""
    size = 2 * radius + 1
    hi = F.max_pool2d(img[None, None], size, 1, radius)[0, 0]
    lo = -F.max_pool2d(-img[None, None], size, 1, radius)[0, 0]
    return (hi - lo) < 1e-6


def radius_mm(shape=(128, 128), spacing=SPACING) -> torch.Tensor:
    """Distance of each pixel centre from the image centre, in mm."""
    y, x = ParallelBeamGeometry.create(shape, spacing).pixel_coordinates()
    return torch.sqrt(x[None, :] ** 2 + y[:, None] ** 2)


def rmse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).pow(2).mean().sqrt())


def test_geometry_defaults():
    geom = ParallelBeamGeometry.create((256, 256), 0.957)
    assert geom.n_views == 408  # ceil(pi / 2 * 256) rounded up to a multiple of 8
    assert geom.det_spacing == pytest.approx(0.957 / 2)
    # the detector covers the image diagonal
    assert (geom.n_det - 1) * geom.det_spacing >= math.hypot(256, 256) * 0.957
    assert geom.angles()[-1] < math.pi
    with pytest.raises(ValueError):
        ParallelBeamGeometry.create((1, 64))
    with pytest.raises(ValueError):
        ParallelBeamGeometry.create((64, 64), spacing=(1.0, -1.0))


def test_radon_matches_analytic_disc():
    """Line integrals of a disc of radius R: 2 sqrt(R^2 - u^2) mu, at every view."""
    radius, mu = 60.0, 0.02
    img = ellipse_phantom([(0, 0, radius, radius, 0.0, 0.0)])  # water disc, air outside
    geom = ParallelBeamGeometry.create(img.shape, SPACING)
    sino = radon(hu_to_mu(img, mu_water=mu), geom)
    u = geom.detector_positions()
    expected = 2 * mu * torch.sqrt((radius**2 - u**2).clamp_min(0))
    rel_l1 = float((sino - expected).abs().mean() / expected.mean())
    assert rel_l1 < 0.005, rel_l1  # measured 0.0032 (pixelised partial-volume edge of the disc)
    inner = u.abs() < radius - 2 * SPACING  # rays at least two pixels inside the rim: within 3 % (measured 2.0 %)
    assert float(((sino - expected)[:, inner] / expected[inner]).abs().max()) < 0.03
    assert sino.shape == (geom.n_views, geom.n_det)


def test_fbp_reconstructs_head_phantom():
    """Noise-free projection + FBP: HU error away from edges is small, means of regions are preserved."""
    img = ellipse_phantom(HEAD)
    geom = ParallelBeamGeometry.create(img.shape, SPACING)
    rec = mu_to_hu(iradon(radon(hu_to_mu(img), geom), geom))
    assert rec.shape == img.shape and rec.dtype == img.dtype
    flat = flat_mask(img)
    # measured with the default Ram-Lak filter: 22.0 HU overall, dominated by the 1900 HU skull/air edges;
    # 9.7 HU more than 8 mm away from every edge (Gibbs ringing of the sharp ramp; 3.2 HU with the Hann window)
    assert rmse(rec, img) < 26.0
    assert rmse(rec[flat], img[flat]) < 12.0
    near_flat = flat_mask(img, radius=2)
    for hu in (-1000, 0, 35, 15):  # air, CSF, brain, a small lesion: mean errors measured within 0.4 HU
        region = near_flat & ((img - hu).abs() < 1e-6)
        assert region.sum() > 50
        assert abs(float((rec - img)[region].mean())) < 1.5, hu


@pytest.mark.parametrize("window", FILTER_WINDOWS)
def test_fbp_windows_preserve_means(window):
    img = ellipse_phantom(WATER)
    geom = ParallelBeamGeometry.create(img.shape, SPACING, n_views=96)
    rec = mu_to_hu(iradon(radon(hu_to_mu(img), geom), geom, window=window))
    r = radius_mm()
    assert abs(float(rec[r < 60].mean())) < 3.0
    assert abs(float(rec[r > 100].mean()) + 1000) < 3.0
    with pytest.raises(ValueError):
        iradon(radon(hu_to_mu(img), geom), geom, window="bogus")


def test_cutoff_at_image_nyquist_reduces_ringing():
    img = ellipse_phantom(HEAD)
    geom = ParallelBeamGeometry.create(img.shape, SPACING)  # half-pixel bins: cutoff 0.5 = image Nyquist
    sino = radon(hu_to_mu(img), geom)
    full, half = (mu_to_hu(iradon(sino, geom, cutoff=c)) for c in (1.0, 0.5))
    flat = flat_mask(img)
    # measured: ringing 9.7 -> 3.8 HU away from edges, overall (edge blur) 22 -> 39 HU
    assert rmse(half[flat], img[flat]) < 0.5 * rmse(full[flat], img[flat])
    assert rmse(half, img) > rmse(full, img)
    with pytest.raises(ValueError):
        iradon(sino, geom, cutoff=0.0)


def _noise_std(dose: float, seed: int, repeats: int = 2) -> float:
    """Noise std (HU) in the central water region: low-dose minus noise-free reconstruction."""
    img = ellipse_phantom(WATER).float()
    sim = RandLowDoseCT(dose_fraction=dose, electronic_noise_var=0.0, spacing=SPACING, n_views=128)
    sim.set_random_state(seed)
    noisy = sim(img.expand(repeats, 1, -1, -1))  # independent noise per batch item
    geom = sim.geometry(img)
    clean = mu_to_hu(iradon(radon(hu_to_mu(img), geom), geom))
    return float((noisy - clean)[:, 0, radius_mm() < 55].std())


def test_noise_std_scales_as_inverse_sqrt_dose(seed):
    doses = (1.0, 0.25, 0.0625)
    stds = [_noise_std(dose, seed + i) for i, dose in enumerate(doses)]
    # std * sqrt(dose) is constant within 10 % (measured spread 1-2 %, about 12 HU at full dose)
    scaled = [s * math.sqrt(d) for s, d in zip(stds, doses)]
    assert max(scaled) / min(scaled) < 1.10, stds


def test_mean_hu_of_water_and_air_preserved(seed):
    img = ellipse_phantom(WATER).float()
    sim = RandLowDoseCT(dose_fraction=0.25, spacing=SPACING)  # quarter dose with electronic noise
    sim.set_random_state(seed)
    out = sim(img)
    r = radius_mm()
    assert abs(float(out[r < 60].mean())) < 5.0  # water: 0 HU (measured within 1 HU)
    assert abs(float(out[r > 100].mean()) + 1000) < 5.0  # air: -1000 HU


def test_deterministic_with_seed():
    img = ellipse_phantom(HEAD, shape=(64, 64), spacing=3.2).float()[None]
    a = RandLowDoseCT(dose_fraction=(0.1, 0.5), spacing=3.2).set_random_state(7)(img)
    b = RandLowDoseCT(dose_fraction=(0.1, 0.5), spacing=3.2).set_random_state(7)(img)
    c = RandLowDoseCT(dose_fraction=(0.1, 0.5), spacing=3.2).set_random_state(8)(img)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


# One float32 low-dose scan of a head-like slice per beam, hashed; the input comes from numpy (torch.randn's float32
# values themselves differ between instruction sets).
_SCAN_HASHES = """
import hashlib, numpy as np, torch
from monai_rwkv.transforms.ct import simulate_low_dose_ct
from monai_rwkv.transforms.fanbeam import FanBeamGeometry
from monai_rwkv.transforms.tomography import ParallelBeamGeometry
torch.set_num_threads(1)
n = 256
yy, xx = np.meshgrid(np.linspace(-1, 1, n), np.linspace(-1, 1, n), indexing="ij")
r = np.hypot(xx, yy / 1.2)
hu = np.where(r < 0.85, 40.0, -1000.0) + np.where((r > 0.78) & (r < 0.85), 1200.0, 0.0)
hu = torch.from_numpy(hu + 30 * np.random.default_rng(0).standard_normal((n, n))).float()[None]
for geometry in (ParallelBeamGeometry.create((n, n), 0.9, 180), FanBeamGeometry.create((n, n), 0.9, 360)):
    out = simulate_low_dose_ct(hu, geometry, 0.25, generator=torch.Generator().manual_seed(1))
    print(out.dtype, hashlib.sha256(out.numpy().tobytes()).hexdigest())
"""


def test_simulated_scan_is_the_same_on_every_cpu_instruction_set():
    """A seed gives the same scan whichever vector instructions torch uses (float32 inputs did not, see
    SIMULATION_DTYPE): the scan of a subprocess with ATEN_CPU_CAPABILITY=default equals that of the CPU's own."""
    native = torch.backends.cpu.get_cpu_capability().lower()
    if native == "default":
        pytest.skip("this CPU has no vectorised ATen kernels to compare with the default ones")

    def hashes(capability: str) -> str:
        env = {**os.environ, "ATEN_CPU_CAPABILITY": capability}
        run = subprocess.run([sys.executable, "-c", _SCAN_HASHES], env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        return run.stdout

    native_hashes = hashes(native)
    assert native_hashes.count("torch.float32") == 2
    assert hashes("default") == native_hashes


def test_torch_numpy_metatensor_and_shapes():
    img = ellipse_phantom(HEAD, shape=(64, 48), spacing=3.0).float()
    sim = RandLowDoseCT(spacing=3.0, n_views=64)
    for shape in [(64, 48), (1, 64, 48), (2, 1, 64, 48)]:
        x = img.expand(shape).clone()
        out = sim.set_random_state(3)(x)
        assert isinstance(out, torch.Tensor) and out.shape == x.shape and out.dtype == torch.float32
        out_np = sim.set_random_state(3)(x.numpy())
        assert isinstance(out_np, np.ndarray) and out_np.shape == x.shape and out_np.dtype == np.float32
        np.testing.assert_allclose(out_np, out.numpy(), atol=1e-3)
    # integer HU input gives float output; MetaTensor keeps its metadata and supplies the spacing
    out_int = sim.set_random_state(3)(img.round().to(torch.int16).numpy())
    assert out_int.dtype == np.float32
    meta = MetaTensor(img[None], affine=torch.diag(torch.tensor([3.0, 3.0, 1.0, 1.0])), meta={"tag": "ct"})
    out_meta = RandLowDoseCT(n_views=64).set_random_state(3)(meta)
    assert isinstance(out_meta, MetaTensor) and out_meta.meta["tag"] == "ct"
    assert torch.allclose(out_meta.as_tensor(), sim.set_random_state(3)(img[None]), atol=1e-3)


def test_prob_zero_is_identity():
    img = ellipse_phantom(HEAD).float()
    assert RandLowDoseCT(prob=0.0)(img) is img


def test_dict_transform():
    img = ellipse_phantom(HEAD, shape=(64, 64), spacing=3.2).float()[None]
    data = {"image": img.clone(), "label": img.clone(), "name": "phantom"}
    tfm = RandLowDoseCTd(keys="image", dose_fraction=0.25, spacing=3.2).set_random_state(11)
    out = tfm(data)
    assert out["name"] == "phantom" and torch.equal(out["label"], img)
    assert out["image"].shape == img.shape and not torch.equal(out["image"], img)
    again = RandLowDoseCTd(keys="image", dose_fraction=0.25, spacing=3.2).set_random_state(11)(data)
    assert torch.equal(out["image"], again["image"])
    assert torch.equal(RandLowDoseCTd(keys="image", prob=0.0)(data)["image"], img)
    with pytest.raises(KeyError):
        RandLowDoseCTd(keys="missing")(data)


def test_fixed_low_dose_gives_the_same_scan_on_every_call():
    img = ellipse_phantom(HEAD, shape=(48, 40), spacing=3.2).float()[None]
    fixed = LowDoseCT(dose_fraction=0.3, seed=5, spacing=3.2, n_views=60)
    first, second = fixed(img), fixed(img)
    assert torch.equal(first, second)  # deterministic: a cache may hold it
    assert torch.equal(first, RandLowDoseCT(dose_fraction=0.3, spacing=3.2, n_views=60).set_random_state(5)(img))
    assert not torch.equal(first, LowDoseCT(dose_fraction=0.3, seed=6, spacing=3.2, n_views=60)(img))


def test_fixed_low_dose_of_a_volume_simulates_each_axial_slice_with_its_pixel_spacing():
    """A (1, i, j, k) volume: slices along k, each an image of rows j, columns i, spacing (pixdim j, pixdim i)."""
    slices = [ellipse_phantom(HEAD, shape=(40, 48), spacing=3.0).float(), ellipse_phantom(WATER, (40, 48), 3.0).float()]
    volume = torch.stack(slices, dim=-1).transpose(0, 1)[None]  # (1, i=48, j=40, k=2)
    affine = torch.diag(torch.tensor([3.0, 2.5, 4.0, 1.0], dtype=torch.float64))
    meta_volume = MetaTensor(volume.clone(), affine=affine, meta={"tag": "ct"})
    fixed = LowDoseCT(seed=2, n_views=60)
    out = fixed(meta_volume)
    assert isinstance(out, MetaTensor) and out.shape == volume.shape and out.meta["tag"] == "ct"
    assert torch.equal(out.affine, affine)
    expected = RandLowDoseCT(spacing=(2.5, 3.0), n_views=60).set_random_state(2)(volume.permute(3, 0, 2, 1))
    assert torch.equal(out.as_tensor(), expected.permute(1, 3, 2, 0))
    plain_slice = slices[0][None]  # no meta: 1 mm pixels, not the spacing of the volume seen before
    assert torch.equal(fixed(plain_slice), RandLowDoseCT(n_views=60).set_random_state(2)(plain_slice))
    dict_out = LowDoseCTd(keys="image", seed=2, n_views=60)({"image": meta_volume, "label": meta_volume})
    assert torch.equal(dict_out["image"], out) and dict_out["label"] is meta_volume
    with pytest.raises(ValueError, match="channel-first"):
        LowDoseCT()(torch.zeros(4, 4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_noise_free():
    img = ellipse_phantom(HEAD).float()
    geom = ParallelBeamGeometry.create(img.shape, SPACING)
    cpu = mu_to_hu(iradon(radon(hu_to_mu(img), geom), geom))
    gpu = mu_to_hu(iradon(radon(hu_to_mu(img.cuda()), geom), geom)).cpu()
    assert torch.allclose(cpu, gpu, atol=0.5)
    out = RandLowDoseCT(spacing=SPACING).set_random_state(0)(img.cuda())
    assert out.is_cuda and out.shape == img.shape


def _real_test_slice() -> torch.Tensor | None:
    """A test-split slice of the prepared real head CT, or None when the data was not prepared."""
    split = REPO / "data" / "ct" / "split.json"
    if not split.is_file():
        return None
    nib = pytest.importorskip("nibabel")
    info = json.loads(split.read_text())
    test = info["splits"]["test"]
    volume = nib.load(str(split.parent / test["file"]))
    return torch.from_numpy(np.asarray(volume.dataobj[:, :, 0], dtype=np.float32))


def test_fbp_on_real_head_slice_if_present():
    img = _real_test_slice()
    if img is None:
        pytest.skip("run scripts/prepare_ct_data.py to test on the real head CT")
    geom = ParallelBeamGeometry.create(img.shape, 0.957)
    ref = img.clamp_min(-1000).double()
    rec = mu_to_hu(iradon(radon(hu_to_mu(ref), geom), geom))
    assert rmse(rec, ref) < 20.0  # measured 13.1 HU on this slice (7-13 HU over the test split; bone edges)


def test_dict_randomizes_once_per_call_then_each_key_takes_the_next_noise_stream(seed):
    """MONAI's idiom, as RandPoissonCountsd: one dose per call for all keys, and each key its own noise."""
    img = ellipse_phantom(HEAD, shape=(24, 20), spacing=8.0).float()[None]
    args = {"dose_fraction": (0.1, 0.5), "spacing": 8.0, "n_views": 24}
    array = RandLowDoseCT(**args).set_random_state(seed)
    dictionary = RandLowDoseCTd(["a", "b"], **args).set_random_state(seed)
    for _ in range(2):
        out = dictionary({"a": img, "b": img})
        assert torch.equal(out["a"], array(img))
        dose = array.dose
        assert torch.equal(out["b"], array(img, randomize=False)) and array.dose == dose
        assert dictionary.transform.dose == dose and not torch.equal(out["a"], out["b"])


def test_scanner_settings_drawn_from_ranges(seed: int) -> None:
    """Ranges are drawn per call within their bounds (photons log-uniformly), windows from the list, views as integers;
    ``params`` reports the draw; the same seed gives the same draws and images; values alone keep the old draws."""
    rng = np.random.default_rng(seed)
    image = torch.from_numpy(rng.uniform(-1000, 1500, (1, 24, 20)).astype(np.float32))
    settings = {
        "dose_fraction": (0.05, 0.5),
        "incident_photons": (2e5, 2e7),
        "electronic_noise_var": (0.0, 40.0),
        "n_views": (32, 96),
        "window": ("ram-lak", "shepp-logan", "hann"),
        "cutoff": (0.5, 1.0),
        "detector_blur_fwhm": (0.0, 2.0),
    }
    ct = RandLowDoseCT(spacing=1.0, **settings)
    ct.set_random_state(seed)
    seen = []
    for _ in range(30):
        ct.randomize()
        seen.append(ct.params)
    for key, bounds in settings.items():
        values = [p[key] for p in seen]
        if key == "window":
            assert set(values) == set(bounds)
            continue
        assert min(values) >= bounds[0] and max(values) <= bounds[1] and len(set(values)) > 10, key
    assert all(isinstance(p["n_views"], int) for p in seen)
    photons = np.log10([p["incident_photons"] for p in seen])
    assert photons.min() < 6.0 < photons.max()  # log-uniform over 5.3 .. 7.3 decades
    first = RandLowDoseCT(spacing=1.0, **settings).set_random_state(seed)
    second = RandLowDoseCT(spacing=1.0, **settings).set_random_state(seed)
    np.testing.assert_array_equal(first(image).numpy(), second(image).numpy())
    assert first.params == second.params
    # fixed values draw only the dose range and the seed, as before the scanner settings existed
    old = RandLowDoseCT(dose_fraction=(0.1, 0.5), spacing=1.0).set_random_state(seed)
    old.randomize()
    reference = np.random.RandomState(seed)
    reference.rand()  # RandomizableTransform's draw for prob
    assert old.dose == reference.uniform(0.1, 0.5) and old.seed == reference.randint(2**32)
    for bad in (
        {"window": ("ram-lak", "box")},
        {"cutoff": (0.5, 1.5)},
        {"n_views": (90, 30)},
        {"incident_photons": 0},
        {"n_views": (30, 90), "views_sampling": "log"},
    ):
        with pytest.raises(ValueError):
            RandLowDoseCT(**bad)


def test_views_sampling_log_uniform(seed: int) -> None:
    """``views_sampling="log-uniform"`` draws integer view counts inside the range with each octave equally likely
    (half the draws of 120-720 below its geometric mean 294, against 29 % uniformly); the dictionary version passes
    it on."""
    draws = {}
    for sampling in VIEW_SAMPLINGS:
        ct = RandLowDoseCT(n_views=(120, 720), views_sampling=sampling).set_random_state(seed)
        draws[sampling] = []
        for _ in range(4000):
            ct.randomize()
            draws[sampling].append(ct.n_views)
        assert all(isinstance(v, int) and 120 <= v <= 720 for v in draws[sampling])
        assert min(draws[sampling]) < 130 and max(draws[sampling]) > 700
    below = {k: float(np.mean(np.asarray(v) < 294)) for k, v in draws.items()}
    assert abs(below["log-uniform"] - 0.5) < 0.04 and abs(below["uniform"] - 174 / 601) < 0.04
    octave = np.asarray(draws["log-uniform"])
    assert abs(np.mean(octave < 240) - np.mean((octave >= 240) & (octave < 480))) < 0.05
    dictionary = RandLowDoseCTd("image", n_views=(120, 720), views_sampling="log-uniform")
    assert dictionary.transform.views_sampling == "log-uniform"


def test_detector_blur_softens_the_image_not_the_noise(seed: int) -> None:
    """Noise-free scans: the blur lowers the image's high frequencies and keeps its mean."""
    rng = np.random.default_rng(seed)
    image = torch.full((1, 48, 48), -1000.0)
    image[:, 8:40, 8:40] = 40.0
    image[:, 20:28, 14:34] = float(rng.uniform(600, 1200))
    geometry = ParallelBeamGeometry.create((48, 48), 1.0)

    def scan(blur: float, photons: float, gen_seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(gen_seed)
        out = simulate_low_dose_ct(image, geometry, 1.0, photons, 0.0, generator=generator, detector_blur_fwhm=blur)
        return out

    def high_frequency(x: torch.Tensor) -> float:
        return float((x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean())

    sharp, soft = scan(0.0, 1e12, 0), scan(float(rng.uniform(2.0, 3.0)), 1e12, 0)
    assert high_frequency(soft) < 0.9 * high_frequency(sharp)
    assert abs(float(soft.mean() - sharp.mean())) < 5.0  # a blur moves no attenuation
    with pytest.raises(ValueError, match="detector_blur_fwhm"):
        scan(-1.0, 1e6, 0)


@pytest.mark.parametrize("beam", BEAMS)
def test_reconstruction_kernel_is_the_noise_free_many_view_scan(beam: str, seed: int) -> None:
    """The 2-D response matches a noise-free 720-view scan (per 180 degrees) of a random kernel as closely as the
    simulator's own discretisation lets a Ram-Lak scan match the image; for a soft kernel, much more closely than the
    unfiltered image does (a mild kernel barely moves the image, so that comparison needs a soft one)."""
    rng = np.random.default_rng(seed)
    image = ellipse_phantom(HEAD, spacing=2.0)
    texture = torch.from_numpy(rng.normal(0, 40, (16, 16))).repeat_interleave(8, 0).repeat_interleave(8, 1)
    image = image + texture * (image > -500)  # inside the head: air below -1000 HU has no attenuation to scan

    def noise_free(**kernel: object) -> RandLowDoseCT:
        scanner = RandLowDoseCT(
            dose_fraction=1.0,
            incident_photons=1e14,
            electronic_noise_var=0.0,
            spacing=2.0,
            n_views=720,
            beam=beam,
            **kernel,
        )
        return scanner.set_random_state(seed)

    inner = (slice(16, -16), slice(16, -16))
    sharp = noise_free()
    floor = rmse(sharp(image)[inner], image[inner])  # the projector's own blur
    assert sharp.kernel(image) is image  # Ram-Lak at full cutoff, no blur: the identity
    drawn = noise_free(
        window=str(rng.choice(["shepp-logan", "cosine", "hamming", "hann"])),
        cutoff=float(rng.uniform(0.5, 1.0)),
        detector_blur_fwhm=float(rng.uniform(0.5, 3.0)),
    )
    soft = noise_free(window="hann", cutoff=0.6, detector_blur_fwhm=2.5)
    for scanner in (drawn, soft):
        scan = scanner(image)
        target = scanner.kernel(image)
        assert target.dtype == image.dtype and target.shape == image.shape
        assert abs(float(target.mean() - image.mean())) < 2.0  # the response is 1 at zero frequency
        assert rmse(scan[inner], target[inner]) < 1.3 * floor, scanner.params
    assert rmse(scan[inner], target[inner]) < 0.6 * rmse(scan[inner], image[inner])  # the soft kernel's


def test_reconstruction_kernel_of_a_detector_blur_is_the_analytic_gaussian(seed: int) -> None:
    """Ram-Lak with a Gaussian detector blur of s bins turns a Gaussian blob of width a into one of width
    sqrt(a^2 + (s * bin)^2) (float64, against the closed form)."""
    rng = np.random.default_rng(seed)
    dy, dx = float(rng.uniform(0.6, 1.4)), float(rng.uniform(0.6, 1.4))
    bin_mm, fwhm = float(rng.uniform(0.3, 0.7)) * min(dy, dx), float(rng.uniform(1.0, 4.0))
    a = float(rng.uniform(2.0, 4.0))  # mm

    def blob(width: float) -> torch.Tensor:
        y = (torch.arange(96, dtype=torch.float64) - 47.5) * dy
        x = (torch.arange(96, dtype=torch.float64) - 47.5) * dx
        r2 = y[:, None] ** 2 + x[None, :] ** 2
        return 1000.0 * (a / width) ** 2 * torch.exp(-r2 / (2 * width**2))

    s = fwhm / (2 * math.sqrt(2 * math.log(2))) * bin_mm
    out = reconstruction_kernel(blob(a), (dy, dx), bin_mm, "ram-lak", 1.0, fwhm)
    assert out.dtype == torch.float64
    assert rmse(out, blob(math.hypot(a, s))) < 1e-3 * 1000.0


def test_dict_kernel_keys_take_the_scan_kernel_without_noise(seed: int) -> None:
    image = ellipse_phantom(HEAD)[None].float()
    t = RandLowDoseCTd("image", spacing=SPACING, window=("hann", "cosine"), cutoff=(0.6, 0.9), kernel_keys="label")
    t.set_random_state(seed)
    out = t({"image": image, "label": image.clone()})
    scanner = t.transform
    expected = reconstruction_kernel(image.double(), (SPACING, SPACING), SPACING / 2, scanner.window, scanner.cutoff)
    assert torch.allclose(out["label"].double(), expected, atol=1e-2)
    assert rmse(out["label"], image) > 5.0 and rmse(out["image"], out["label"]) > 5.0  # blurred; the scan is noisy
    again = RandLowDoseCTd("image", spacing=SPACING, window=("hann", "cosine"), cutoff=(0.6, 0.9)).set_random_state(
        seed
    )
    assert torch.equal(again({"image": image})["image"], out["image"])  # the kernel key takes no noise stream
    with pytest.raises(ValueError, match="kernel_keys"):
        RandLowDoseCTd("image", kernel_keys=("image",))
    with pytest.raises(KeyError, match="label"):
        t({"image": image})
    with pytest.raises(ValueError, match="window"):
        reconstruction_kernel(image, (1.0, 1.0), 0.5, "box")


def test_kernel_noise_only_keeps_the_image_resolution_and_the_kernels_noise(seed: int) -> None:
    """``kernel_noise_only``: the scan is the same draw's ordinary scan plus the detail its kernel removed
    (``image - kernel(image)``), so the noise and streaks are those of the drawn kernel while a noise-free scan
    returns the image at its own resolution; ``kernel`` is then the identity (the training target stays the image),
    and with Ram-Lak at full cutoff and no blur the option changes nothing."""
    rng = np.random.default_rng(seed)
    image = ellipse_phantom(HEAD, spacing=2.0)
    texture = torch.from_numpy(rng.normal(0, 40, (16, 16))).repeat_interleave(8, 0).repeat_interleave(8, 1)
    image = (image + texture * (image > -500)).float()
    soft = {"window": str(rng.choice(["hann", "hamming", "cosine"])), "cutoff": float(rng.uniform(0.5, 0.8))}
    soft["detector_blur_fwhm"] = float(rng.uniform(1.0, 2.5))
    photons = float(rng.uniform(2e5, 2e6))

    def scanner(photons: float = photons, **options: object) -> RandLowDoseCT:
        return RandLowDoseCT(spacing=2.0, incident_photons=photons, n_views=360, **soft, **options)

    plain, detail = scanner().set_random_state(seed), scanner(kernel_noise_only=True).set_random_state(seed)
    ordinary, kept = plain(image), detail(image)
    assert detail.params == plain.params and detail.kernel(image) is image
    target = plain.kernel(image)
    torch.testing.assert_close(kept, ordinary + (image - target), rtol=0, atol=1e-3)  # the same noise, detail back
    assert rmse(target, image) > 5.0  # the kernel is soft: what was added back is real detail
    inner = (slice(16, -16), slice(16, -16))
    clean_plain = scanner(1e14).set_random_state(seed)
    clean_kept = scanner(1e14, kernel_noise_only=True).set_random_state(seed)
    floor = rmse(clean_plain(image)[inner], target[inner])  # the projector's own discretisation against its target
    assert rmse(clean_kept(image)[inner], image[inner]) < 1.3 * floor + 1e-3  # noise-free: the image itself
    assert rmse(clean_kept(image)[inner], image[inner]) < 0.6 * rmse(clean_plain(image)[inner], image[inner])
    sharp_plain = RandLowDoseCT(spacing=2.0, n_views=360).set_random_state(seed)
    sharp_kept = RandLowDoseCT(spacing=2.0, n_views=360, kernel_noise_only=True).set_random_state(seed)
    assert torch.equal(sharp_kept(image), sharp_plain(image))
    d = RandLowDoseCTd("image", spacing=2.0, kernel_noise_only=True, kernel_keys="label", **soft)
    d.set_random_state(seed)
    out = d({"image": image, "label": image.clone()})
    assert torch.equal(out["label"], image) and d.transform.kernel_noise_only


def test_view_aliasing_is_the_sparse_minus_the_view_complete_noise_free_scan(seed: int) -> None:
    """``view_aliasing``: the noise-free FBP with the geometry's views minus the view-complete one (an independent
    composition of ``radon`` and ``iradon`` here); streaks grow as views are removed, none at or above the
    view-complete count, and fan-beam scans have their own."""
    rng = np.random.default_rng(seed)
    image = ellipse_phantom(HEAD, spacing=2.0)
    image = image + torch.from_numpy(rng.normal(0, 30, (128, 128))) * (image > -500)
    views = int(rng.integers(24, 90))
    window, cutoff = str(rng.choice(["ram-lak", "hann"])), float(rng.uniform(0.6, 1.0))
    sparse = ParallelBeamGeometry.create((128, 128), 2.0, views)
    complete = ParallelBeamGeometry.create((128, 128), 2.0)
    assert complete_views(sparse) == complete.n_views == 208  # pi / 2 x 128, up to a multiple of 8
    mu = hu_to_mu(image)
    expected = mu_to_hu(iradon(radon(mu, sparse), sparse, window, cutoff)) - mu_to_hu(
        iradon(radon(mu, complete), complete, window, cutoff)
    )
    got = view_aliasing(image, sparse, window, cutoff)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert got.dtype == image.dtype and got.shape == image.shape
    levels = [float(view_aliasing(image, ParallelBeamGeometry.create((128, 128), 2.0, n)).std()) for n in (30, 60, 120)]
    assert levels[0] > levels[1] > levels[2] > 0.5, levels
    assert torch.equal(view_aliasing(image, complete), torch.zeros_like(image))
    fan = FanBeamGeometry.create((128, 128), 2.0, 2 * views)
    assert complete_views(fan) == 2 * complete.n_views
    assert float(view_aliasing(image, fan).std()) > 1.0


def test_streak_scale_strengthens_the_streaks_and_keeps_the_noise(seed: int) -> None:
    """``streak_scale``: the same draw's scan plus ``(factor - 1)`` times its view aliasing, noise unchanged; a range
    is drawn last (the other draws unchanged) and uniformly within its bounds; 1 changes nothing."""
    rng = np.random.default_rng(seed)
    image = ellipse_phantom(HEAD, spacing=2.0).float()
    factor, views = float(rng.uniform(1.2, 3.0)), int(rng.integers(30, 90))
    options = {"spacing": 2.0, "n_views": views, "incident_photons": float(rng.uniform(2e5, 2e6))}
    plain = RandLowDoseCT(**options).set_random_state(seed)
    strong = RandLowDoseCT(streak_scale=factor, **options).set_random_state(seed)
    scan, stronger = plain(image), strong(image)
    aliasing = view_aliasing(image, ParallelBeamGeometry.create((128, 128), 2.0, views))
    torch.testing.assert_close(stronger - scan, (factor - 1) * aliasing, rtol=0, atol=2e-3)
    assert float(aliasing.std()) > 5.0
    same = RandLowDoseCT(streak_scale=1.0, **options).set_random_state(seed)
    assert torch.equal(same(image), scan)
    ranges = {"n_views": (30, 90), "dose_fraction": (0.1, 0.5)}
    scales = []
    for k in range(20):
        drawn = RandLowDoseCT(spacing=2.0, streak_scale=(1.0, 2.5), **ranges).set_random_state(seed + k)
        fixed = RandLowDoseCT(spacing=2.0, **ranges).set_random_state(seed + k)
        drawn.randomize()
        fixed.randomize()
        params = drawn.params
        scales.append(params.pop("streak_scale"))
        assert params == {key: value for key, value in fixed.params.items() if key != "streak_scale"}
        assert drawn.seed == fixed.seed and fixed.streak_scale == 1.0
    assert 1.0 <= min(scales) < 1.4 and 2.1 < max(scales) <= 2.5
    with pytest.raises(ValueError, match="streak_scale must be >= 0"):
        RandLowDoseCT(streak_scale=-0.5)
    d = RandLowDoseCTd("image", streak_scale=(1.0, 2.0), **options)
    assert d.transform.streak_range == (1.0, 2.0)
