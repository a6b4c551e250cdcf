"""lit_blind.deblur: the public entry — argument checks, image shapes, family objects."""

import pytest
import torch

from lit_blind.api import deblur
from lit_blind.kernels import family
from lit_blind.physics import add_noise, blur
from lit_blind.priors import GaussianPrior

D = torch.float64


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"scales": 0}, "scales must be a positive integer"),
        ({"scales": 2, "family": "gaussian"}, "simplex"),
        ({"scales": 4, "kernel_size": 9}, "at least 3"),
        ({"scales": 5, "kernel_size": 39}, "smaller than its kernel"),
    ],
)
def test_deblur_rejects_bad_scales(kw, match):
    with pytest.raises(ValueError, match=match):
        deblur(torch.rand(1, 1, 40, 40), GaussianPrior(), **{"algorithm": "alternating", "K": 1, "K_x": 1, **kw})


def test_deblur_api_rgb_nonsquare_valid_boundary():
    gen = torch.Generator().manual_seed(0)
    prior = GaussianPrior(channels=3)
    x = torch.rand(1, 3, 21, 26, generator=gen, dtype=D)
    h = family("gaussian", size=5)(torch.tensor([[1.0]], dtype=D))
    y = add_noise(blur(x, h, "valid"), 0.01, gen)
    res = deblur(y, prior, algorithm="alternating", kernel_size=5, boundary="valid", K=3, K_x=2, gamma_theta="armijo")
    assert res.image.shape == (1, 3, 21, 26) and res.kernel.shape == (1, 1, 5, 5)
    assert torch.isfinite(res.image).all()


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"family": "box"}, "name must be one of"),
        ({"init": "medium"}, "init"),
        ({"init": torch.ones(1, 1, 9, 9)}, r"init must be one of \('large', 'small'\), got a Tensor$"),  # EM only
        ({"sigma_y": 0.0}, "sigma_y"),
        ({"kernel_size": 41}, "kernel size"),
        ({"algorithm": "admm"}, "algorithm"),
        ({"family": "zernike"}, "theta_ref"),
        ({"boundary": "reflect"}, "boundary"),
        ({"K": 0}, "K must"),
    ],
)
def test_deblur_bad_input(kw, match):
    y = torch.rand(1, 1, 32, 32)
    with pytest.raises(ValueError, match=match):
        deblur(y, GaussianPrior(), **{"algorithm": "alternating", "K": 1, "K_x": 1, **kw})


def test_deblur_rejects_bad_images():
    with pytest.raises(ValueError, match="channel"):
        deblur(torch.rand(1, 3, 32, 32), GaussianPrior(), algorithm="alternating", K=1)
    with pytest.raises(ValueError, match="finite"):
        deblur(torch.full((1, 1, 32, 32), float("nan")), GaussianPrior(), algorithm="alternating", K=1)
    with pytest.raises(ValueError, match="finite"):
        deblur(torch.full((1, 1, 32, 32), float("nan")), GaussianPrior())  # the default, EM
