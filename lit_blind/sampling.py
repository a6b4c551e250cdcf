"""Sampling from any :class:`~lit_blind.priors.Prior` with the reverse VE SDE (for sample grids).

Euler–Maruyama on the reverse-time VE SDE in σ (Song et al. 2021, "reverse diffusion" predictor),
geometric σ grid from σ_max to σ_min, then a final Tweedie denoising step D(x, σ_min):

.. math:: x_{i+1} = x_i + (\\sigma_i^2 - \\sigma_{i+1}^2)\\, s(x_i, \\sigma_i) + \\sqrt{\\sigma_i^2 - \\sigma_{i+1}^2}\\, z_i

Hand-written because diffusers' ``ScoreSdeVePipeline`` hard-codes three channels.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lit_blind.priors import Prior


@torch.no_grad()
def sample_ve(
    prior: Prior,
    shape: tuple[int, int, int, int],
    steps: int = 200,
    generator: torch.Generator | None = None,
    device=None,
) -> Tensor:
    """``shape[0]`` samples of size ``shape[1:]`` from ``prior`` by the reverse VE SDE, in [0, 1] units."""
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    sigmas = torch.exp(torch.linspace(math.log(prior.sigma_max), math.log(prior.sigma_min), steps + 1)).tolist()
    x = prior.sigma_max * torch.randn(shape, generator=generator).to(device)
    for s0, s1 in zip(sigmas[:-1], sigmas[1:], strict=True):
        var = s0**2 - s1**2
        z = torch.randn(shape, generator=generator).to(device)
        x = x + var * prior.score(x, s0) + math.sqrt(var) * z
    return prior.denoise(x, prior.sigma_min)
