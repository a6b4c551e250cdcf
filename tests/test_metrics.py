"""Quality metrics and the noise-level estimate (lit_blind.metrics)."""

import pytest
import torch

from lit_blind.io import embedded_image
from lit_blind.kernels import dirac, family
from lit_blind.metrics import error_ratio, kernel_error, noise_level, nonblind_deconvolution, psnr, sparse_deconvolution
from lit_blind.physics import blur

D = torch.float64


@pytest.mark.parametrize("sigma", [0.01, 0.05, 0.2])
def test_noise_level_recovers_white_noise_on_a_smooth_image(gen, sigma):
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 96), torch.linspace(0, 1, 80), indexing="ij")
    x = (0.5 + 0.3 * torch.sin(3 * xx) * torch.cos(2 * yy))[None, None].expand(1, 3, 96, 80)
    y = x + sigma * torch.randn(x.shape, generator=gen)
    assert noise_level(y) == pytest.approx(sigma, rel=0.1)
    assert noise_level(x) < 1e-3


def test_noise_level_rejects_what_it_cannot_measure():
    with pytest.raises(ValueError, match="at least 2×2"):
        noise_level(torch.zeros(1, 1, 1, 5))
    with pytest.raises(ValueError, match="finite"):
        noise_level(torch.full((1, 1, 4, 4), float("nan")))


def test_metrics_are_shift_invariant_and_error_ratio_is_one_for_true_kernel():
    h = family("motion", size=9, angle=20)(torch.tensor([[3.0]], dtype=D))
    shifted = torch.roll(torch.nn.functional.pad(h, (2, 2, 2, 2)), (1, -2), (-2, -1))
    assert kernel_error(shifted, h) < 1e-12 and kernel_error(h, h) == 0
    assert kernel_error(family("motion", size=9, angle=70)(torch.tensor([[3.0]], dtype=D)), h) > 0.3
    x = torch.nn.functional.adaptive_avg_pool2d(embedded_image("camera"), 64).double()
    assert psnr(torch.roll(x, (2, 1), (-2, -1)), x) >= 80  # deepinv caps a perfect match at 80 dB
    assert psnr(torch.roll(x, (2, 1), (-2, -1)), x, max_shift=1) < 30
    y = blur(x, h, "circular")
    assert abs(error_ratio(y, x, h, h) - 1) < 1e-12
    assert error_ratio(y, x, family("gaussian", size=9)(torch.tensor([[0.01]], dtype=D)), h) > 1.5
    assert nonblind_deconvolution(y, h).shape == y.shape


def test_sparse_deconvolution_inverts_a_valid_blur_and_rejects_no_deblurring():
    """Noise-free valid blur: the hyper-Laplacian solver recovers the centre of x, and the Dirac (no
    deblurring) scores an error ratio above the success threshold 3."""
    x = torch.nn.functional.adaptive_avg_pool2d(embedded_image("camera"), 96).double()
    h = family("motion", size=9, angle=20)(torch.tensor([[3.0]], dtype=D))
    y = blur(x, h, "valid")
    est = sparse_deconvolution(y, h, weight=1e-5)
    assert est.shape == y.shape
    assert psnr(est, x[..., 4:-4, 4:-4]) > 35
    sharp = x[..., 4:-4, 4:-4]
    assert error_ratio(y, sharp, dirac(9, D), h) > 3
    assert abs(error_ratio(y, sharp, h, h) - 1) < 1e-12
    with pytest.raises(ValueError, match="weight"):
        sparse_deconvolution(y, h, weight=0.0)
