"""lit_blind: diffusion priors in blind deconvolution (Nguyen, Pauwels, Weiss), on PyTorch Lightning.

Example::

    import torch, lit_blind
    prior = lit_blind.GaussianPrior()                      # exact analytic prior
    x = torch.rand(1, 1, 64, 64)
    h = lit_blind.family("gaussian")(torch.tensor([[2.0]]))
    y = lit_blind.blur(x, h)
    print(-prior.log_prob(y, 0.01) <= -prior.log_prob(x, 0.01))   # Theorem 1: blurry is more likely
"""

from lit_blind import io
from lit_blind.api import deblur
from lit_blind.kernels import family
from lit_blind.likelihood import potential
from lit_blind.loading import load_prior
from lit_blind.physics import add_noise, blur, pinv, prox_data
from lit_blind.priors import GaussianMixturePrior, GaussianPrior, Prior

__all__ = [
    "GaussianMixturePrior",
    "GaussianPrior",
    "Prior",
    "add_noise",
    "blur",
    "deblur",
    "family",
    "io",
    "load_prior",
    "pinv",
    "potential",
    "prox_data",
]
