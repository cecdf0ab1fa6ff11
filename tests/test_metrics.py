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
