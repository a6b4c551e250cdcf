"""lit_blind: diffusion priors in blind deconvolution (Nguyen, Pauwels, Weiss), on PyTorch Lightning.

Example::

    import torch, lit_blind
    prior = lit_blind.GaussianPrior()                      # exact analytic prior
    x = torch.rand(1, 1, 64, 64)
    h = lit_blind.family("gaussian")(torch.tensor([[2.0]]))
    y = lit_blind.blur(x, h)
    print(-prior.log_prob(y, 0.01) <= -prior.log_prob(x, 0.01))   # Theorem 1: blurry is more likely
"""

import importlib

# the public names, imported on first use (PEP 562) so that ``lit-blind --help`` does not pay for torch
_EXPORTS = {
    "GaussianMixturePrior": "lit_blind.priors",
    "GaussianPrior": "lit_blind.priors",
    "Prior": "lit_blind.priors",
    "add_noise": "lit_blind.physics",
    "blur": "lit_blind.physics",
    "deblur": "lit_blind.api",
    "family": "lit_blind.kernels",
    "load_prior": "lit_blind.loading",
    "pinv": "lit_blind.physics",
    "potential": "lit_blind.likelihood",
    "prox_data": "lit_blind.physics",
}

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


def __getattr__(name: str):
    if name == "io":
        return importlib.import_module("lit_blind.io")
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lit_blind' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
