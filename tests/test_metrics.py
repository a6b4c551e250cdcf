"""Quality metrics and the noise-level estimate (lit_blind.metrics)."""

import pytest
import torch

from lit_blind.metrics import noise_level


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
