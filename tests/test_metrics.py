"""Paper-protocol metrics against scikit-image's independent implementation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_rwkv.metrics import CT_EVAL_WINDOW, slice_metrics


def test_against_scikit_image(seed: int) -> None:
    skm = pytest.importorskip("skimage.metrics")
    label = torch.randn(3, 48, 40) * 300
    pred = label + torch.randn(3, 48, 40) * 40
    ours = slice_metrics(pred, label, CT_EVAL_WINDOW)
    for i in range(3):
        p = pred[i].clamp(*CT_EVAL_WINDOW).double().numpy()
        t = label[i].clamp(*CT_EVAL_WINDOW).double().numpy()
        rng = t.max() - t.min()
        assert ours["psnr"][i].item() == pytest.approx(skm.peak_signal_noise_ratio(t, p, data_range=rng), abs=1e-9)
        ref_ssim = skm.structural_similarity(
            t, p, data_range=rng, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
        )
        assert ours["ssim"][i].item() == pytest.approx(ref_ssim, abs=2e-3)
        assert ours["rmse"][i].item() == pytest.approx(float(np.sqrt(((p - t) ** 2).mean())), rel=1e-12)


def test_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        slice_metrics(torch.zeros(1, 4, 4), torch.zeros(1, 4, 5))


def test_flat_region_rmse_against_a_direct_loop(seed: int) -> None:
    from monai_rwkv.metrics import flat_region_rmse  # noqa: PLC0415

    g = torch.Generator().manual_seed(seed)
    label = torch.cumsum(torch.rand(2, 12, 14, generator=g) * 20 - 10, dim=1) * 3 + 40  # ramps and edges
    label[1, :4] = -1000.0  # air: outside the window
    pred = label + torch.randn(2, 12, 14, generator=g) * 15
    window, limit = (-160.0, 240.0), 12.0
    got = flat_region_rmse(pred, label, window, limit)
    lab, prd = label.double().numpy(), pred.double().numpy()
    for n in range(2):
        errors = []
        for y in range(12):
            for x in range(14):

                def at(dy: int, dx: int, n: int = n, y: int = y, x: int = x) -> float:  # replicated edges
                    return lab[n, min(max(y + dy, 0), 11), min(max(x + dx, 0), 13)]

                gy = sum(w * (at(1, dx) - at(-1, dx)) for dx, w in ((-1, 1), (0, 2), (1, 1))) / 8
                gx = sum(w * (at(dy, 1) - at(dy, -1)) for dy, w in ((-1, 1), (0, 2), (1, 1))) / 8
                if window[0] < lab[n, y, x] < window[1] and np.hypot(gy, gx) < limit:
                    errors.append((prd[n, y, x] - lab[n, y, x]) ** 2)
        assert errors, "the test image must have flat pixels"
        assert got[n].item() == pytest.approx(float(np.sqrt(np.mean(errors))), rel=1e-12)
    assert torch.isnan(flat_region_rmse(pred, label, (5000.0, 6000.0), limit)).all()  # no pixel in the window
    with pytest.raises(ValueError, match="max_gradient"):
        flat_region_rmse(pred, label, window, 0.0)


def test_edge_band_rmse_against_a_direct_loop(seed: int) -> None:
    from monai_rwkv.metrics import edge_band_rmse  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    label = rng.uniform(-100, 200, size=(3, 15, 13))
    label[rng.uniform(size=label.shape) < 0.08] = rng.uniform(400, 2000)  # scattered dense pixels
    label[0, :, :2] = 1500.0  # a dense wall at the border
    label[2] = rng.uniform(-100, 200, size=(15, 13))  # no dense pixel at all
    label[1, 0, 0] = -1000.0  # air next to nothing
    pred = label + rng.normal(0, 25, size=label.shape)
    window = (-160.0, 240.0)
    width = float(rng.choice([1.0, 1.5, 2.0, 2.9]))
    threshold = 300.0
    got = edge_band_rmse(torch.from_numpy(pred).float(), torch.from_numpy(label).float(), window, threshold, width)
    lab = torch.from_numpy(label).float().double().numpy()  # the float32 values the function sees
    prd = torch.from_numpy(pred).float().double().numpy()
    for n in range(3):
        dense = [(y, x) for y in range(15) for x in range(13) if lab[n, y, x] >= threshold]
        errors = [
            (prd[n, y, x] - lab[n, y, x]) ** 2
            for y in range(15)
            for x in range(13)
            if window[0] < lab[n, y, x] < window[1]
            and lab[n, y, x] < threshold
            and any(np.hypot(y - dy, x - dx) <= width for dy, dx in dense)
        ]
        if n == 2:
            assert not errors and np.isnan(got[n].item())
            continue
        assert errors, "the test image must have band pixels"
        assert got[n].item() == pytest.approx(float(np.sqrt(np.mean(errors))), rel=1e-12)
    with pytest.raises(ValueError, match="width"):
        edge_band_rmse(torch.zeros(1, 4, 4), torch.zeros(1, 4, 4), window, threshold, 0.0)
    with pytest.raises(ValueError, match="shapes differ"):
        edge_band_rmse(torch.zeros(1, 4, 4), torch.zeros(1, 4, 5), window, threshold, 1.0)
