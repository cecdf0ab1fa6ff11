"""The tomography transforms (monai_rwkv/transforms/tomography.py) against radon / iradon, on random inputs.

Every random test takes the fresh ``seed`` fixture of tests/conftest.py; sizes, spacings and values are drawn from it
(odd and non-square slices included). Comparisons with the functions are in float64.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_rwkv.transforms import (
    FILTER_WINDOWS,
    FilteredBackProject,
    FilteredBackProjectd,
    ParallelBeamGeometry,
    Project,
    Projectd,
    iradon,
    radon,
)


def random_geometry(gen: torch.Generator, n_views: int | None = 24) -> ParallelBeamGeometry:
    """A small geometry of random size (11-24 x 11-24 pixels) and random anisotropic spacing."""
    h, w = (int(v) for v in torch.randint(11, 25, (2,), generator=gen))
    spacing = tuple(float(v) for v in 0.5 + torch.rand(2, generator=gen, dtype=torch.float64))
    return ParallelBeamGeometry.create((h, w), spacing, n_views=n_views)


def random_image(gen: torch.Generator, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.rand(shape, generator=gen, dtype=torch.float64) * 3 - 0.5


@pytest.mark.parametrize("depth", [None, 3])
def test_project_equals_radon_of_each_slice(depth: int | None, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    geom = random_geometry(gen)
    shape = (2, *geom.image_shape) + ((depth,) if depth else ())
    img = random_image(gen, shape)
    sino = Project(geom)(img)
    assert sino.dtype == torch.float64
    if depth is None:
        assert torch.equal(sino, radon(img, geom))
    else:
        assert sino.shape == (2, geom.n_views, geom.n_det, depth)
        for k in range(depth):
            torch.testing.assert_close(sino[..., k], radon(img[..., k], geom), rtol=1e-12, atol=1e-12)
    # the same geometry from its arguments, the image size taken from the input
    by_args = Project(spacing=geom.spacing, n_views=geom.n_views, det_spacing=geom.det_spacing)(img)
    assert torch.equal(by_args, sino)


@pytest.mark.parametrize("depth", [None, 2])
def test_fbp_equals_iradon_of_each_slice(depth: int | None, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    geom = random_geometry(gen)
    window = FILTER_WINDOWS[int(torch.randint(len(FILTER_WINDOWS), (1,), generator=gen))]
    cutoff = 0.3 + 0.7 * float(torch.rand(1, generator=gen))
    shape = (3, geom.n_views, geom.n_det) + ((depth,) if depth else ())
    sino = random_image(gen, shape)
    image = FilteredBackProject(geom, window=window, cutoff=cutoff)(sino)
    assert image.shape == (3, *geom.image_shape) + ((depth,) if depth else ()) and image.dtype == torch.float64
    if depth is None:
        assert torch.equal(image, iradon(sino, geom, window, cutoff))
    else:
        for k in range(depth):
            expected = iradon(sino[..., k], geom, window, cutoff)
            torch.testing.assert_close(image[..., k], expected, rtol=1e-12, atol=1e-12)
    # without a geometry: the image size and spacing given, n_views and n_det read from the sinogram
    by_args = FilteredBackProject(image_shape=geom.image_shape, spacing=geom.spacing, window=window, cutoff=cutoff)
    assert torch.equal(by_args(sino), image)


def test_fbp_of_the_projection_recovers_a_smooth_image(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    h, w = (int(v) for v in torch.randint(20, 29, (2,), generator=gen))
    spacing = tuple(float(v) for v in 0.5 + torch.rand(2, generator=gen, dtype=torch.float64))
    geom = ParallelBeamGeometry.create((h, w), spacing)
    y, x = geom.pixel_coordinates()
    img = torch.zeros(geom.image_shape, dtype=torch.float64)
    half = torch.tensor([float(y[-1]), float(x[-1])], dtype=torch.float64)
    for _ in range(4):  # random Gaussian blobs 2.5-3.5 pixels wide, centred in the middle half of the image
        cy, cx = ((torch.rand(2, generator=gen, dtype=torch.float64) - 0.5) * half).tolist()
        width = 2.5 + float(torch.rand(1, generator=gen))
        sy, sx = width * spacing[0], width * spacing[1]
        blob = torch.exp(-(((y[:, None] - cy) / sy) ** 2) / 2 - ((x - cx) / sx) ** 2 / 2)
        img += (0.5 + float(torch.rand(1, generator=gen))) * blob
    rec = FilteredBackProject(geom)(Project(geom)(img[None]))[0]
    # relative RMSE measured 0.4-1.4 % over 200 seeds (the blur of the projector/back-projector pair)
    assert float((rec - img).pow(2).mean().sqrt() / img.pow(2).mean().sqrt()) < 0.03


def test_spatial_axes_pick_the_rows_and_columns_of_each_slice(seed: int) -> None:
    """``spatial_axes=(1, 0)`` reads a (C, i, j, k) volume as slices of rows j and columns i."""
    gen = torch.Generator().manual_seed(seed)
    geom = random_geometry(gen)
    h, w = geom.image_shape
    volume = random_image(gen, (1, w, h, 2))  # (C, i = columns, j = rows, k)
    sino = Project(geom, spatial_axes=(1, 0))(volume)
    assert sino.shape == (1, geom.n_det, geom.n_views, 2)  # views replace the rows (j), bins the columns (i)
    torch.testing.assert_close(sino, Project(geom)(volume.transpose(1, 2)).transpose(1, 2), rtol=0, atol=0)
    back = FilteredBackProject(geom, spatial_axes=(1, 0))(sino)
    assert back.shape == volume.shape
    torch.testing.assert_close(back, FilteredBackProject(geom)(sino.transpose(1, 2)).transpose(1, 2), rtol=0, atol=0)


def test_dictionary_versions_equal_the_array_transforms(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    geom = random_geometry(gen)
    a, b = random_image(gen, (1, *geom.image_shape)), random_image(gen, (2, *geom.image_shape, 2))
    data = {"a": a, "b": b, "name": "x"}
    out = Projectd(["a", "b"], geom)(data)
    assert torch.equal(out["a"], Project(geom)(a)) and torch.equal(out["b"], Project(geom)(b))
    assert out["name"] == "x" and data["a"] is a  # a copy of the dictionary is returned
    back = FilteredBackProjectd(["a", "b"], image_shape=geom.image_shape, spacing=geom.spacing, window="hann")(out)
    fbp = FilteredBackProject(geom, window="hann")
    assert torch.equal(back["a"], fbp(out["a"])) and torch.equal(back["b"], fbp(out["b"]))
    with pytest.raises(KeyError):
        Projectd("missing", geom)(data)
    assert Projectd(["a", "missing"], geom, allow_missing_keys=True)(data).keys() == data.keys()


def test_kinds_and_dtypes_follow_the_input(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    geom = random_geometry(gen)
    img = random_image(gen, (1, *geom.image_shape))
    project, fbp = Project(geom), FilteredBackProject(geom)
    sino64 = project(img)
    sino_np = project(img.numpy().astype(np.float32))
    assert isinstance(sino_np, np.ndarray) and sino_np.dtype == np.float32
    np.testing.assert_allclose(sino_np, sino64.numpy(), rtol=1e-4, atol=1e-4 * float(sino64.abs().max()))
    assert project((img * 100).round().to(torch.int16)).dtype == torch.float32  # integers: float32
    meta = MetaTensor(img.float(), affine=torch.diag(torch.tensor([2.0, 3.0, 1.0, 1.0])), meta={"tag": "pet"})
    sino_meta = project(meta)
    assert isinstance(sino_meta, MetaTensor) and sino_meta.meta["tag"] == "pet"
    back = fbp(sino_meta)
    assert isinstance(back, MetaTensor) and back.shape == meta.shape and torch.equal(back.affine, meta.affine)
    np.testing.assert_allclose(fbp(sino_np), fbp(sino64).numpy(), rtol=1e-4, atol=1e-4 * float(fbp(sino64).abs().max()))


def test_errors_say_what_is_wrong_and_what_to_do() -> None:
    geom = ParallelBeamGeometry.create((12, 10), n_views=16)
    project, fbp = Project(geom), FilteredBackProject(geom)
    with pytest.raises(ValueError, match=r"channel-first image \(C, H, W\).*add a channel axis"):
        project(torch.zeros(12, 10))
    with pytest.raises(ValueError, match="each item of a batch"):
        project(torch.zeros(2, 1, 12, 10, 3))
    with pytest.raises(ValueError, match=r"slices are \(10, 12\) pixels.*geometry is for \(12, 10\)"):
        project(torch.zeros(1, 10, 12))
    with pytest.raises(ValueError, match=r"channel-first sinogram \(C, n_views, n_det\)"):
        fbp(torch.zeros(16, geom.n_det))
    with pytest.raises(ValueError, match=rf"15 views x {geom.n_det} bins.*expects 16 x {geom.n_det}"):
        fbp(torch.zeros(1, 15, geom.n_det))
    with pytest.raises(ValueError, match="expects 20 x"):
        FilteredBackProject(image_shape=(12, 10), n_views=20)(torch.zeros(1, 16, geom.n_det))
    with pytest.raises(ValueError, match="spatial axis 2"):
        Project(spatial_axes=(0, 2))(torch.zeros(1, 12, 10))
    with pytest.raises(ValueError, match="two different spatial axes"):
        Project(spatial_axes=(1, 1))
    with pytest.raises(ValueError, match="not both"):
        Project(geom, spacing=2.0)
    with pytest.raises(ValueError, match="needs the size of the image"):
        FilteredBackProject()
    with pytest.raises(ValueError, match="unknown filter window"):
        FilteredBackProjectd("a", geom, window="bogus")
    with pytest.raises(ValueError, match="cutoff must be in"):
        FilteredBackProject(geom, cutoff=0.0)
    with pytest.raises(ValueError, match="spacing must be positive"):
        Project(spacing=-1.0)
    with pytest.raises(TypeError, match="ParallelBeamGeometry"):
        Project((12, 10))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    geom = random_geometry(gen)
    img = random_image(gen, (1, *geom.image_shape, 2))
    cpu = FilteredBackProject(geom)(Project(geom)(img))
    gpu = FilteredBackProject(geom)(Project(geom)(img.cuda()))
    assert gpu.is_cuda
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-9, atol=1e-9)
