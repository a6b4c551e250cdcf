"""lit_blind: diffusion priors in blind deconvolution (Nguyen, Pauwels, Weiss), on PyTorch Lightning.

Example::

    import torch, lit_blind
    prior = lit_blind.GaussianPrior()                      # exact analytic prior
    x = torch.rand(1, 1, 64, 64)
    h = lit_blind.family("gaussian")(torch.tensor([[2.0]]))
    y = lit_blind.blur(x, h)
    print(-prior.log_prob(y, 0.01) <= -prior.log_prob(x, 0.01))   # Theorem 1: blurry is more likely
"""

from lit_blind.kernels import family, gaussian_kernel, perturbed_kernel, uniform_kernel
from lit_blind.physics import add_noise, blur, pinv, prox_data
from lit_blind.priors import GaussianMixturePrior, GaussianPrior, Prior

__all__ = [
    "GaussianMixturePrior",
    "GaussianPrior",
    "Prior",
    "add_noise",
    "blur",
    "family",
    "gaussian_kernel",
    "perturbed_kernel",
    "pinv",
    "prox_data",
    "uniform_kernel",
]
