"""Sampling from any :class:`~lit_blind.priors.Prior` with the reverse VE SDE (for sample grids).

The predictor of diffusers' ``ScoreSdeVeScheduler`` (Song et al. 2021, "reverse diffusion": Euler–Maruyama on
the reverse-time VE SDE over a geometric σ grid from σ_max to σ_min, then one step to σ = 0 whose mean is the
Tweedie denoiser D(x, σ_min)), driven by the prior's score:

.. math:: x_{i+1} = x_i + (\\sigma_i^2 - \\sigma_{i+1}^2)\\, s(x_i, \\sigma_i) + \\sqrt{\\sigma_i^2 - \\sigma_{i+1}^2}\\, z_i

The scheduler is used rather than ``ScoreSdeVePipeline``, which hard-codes three channels and a UNet; no
corrector steps (the Langevin corrector of the pipeline doubles the cost).
"""

from __future__ import annotations

import torch
from diffusers import ScoreSdeVeScheduler
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
    """``shape[0]`` samples of size ``shape[1:]`` from ``prior`` by the reverse VE SDE, in [0, 1] units:
    ``steps`` predictor steps over the geometric σ grid, the last one to σ = 0 returning its mean."""
    if int(steps) != steps or steps < 2:
        raise ValueError(f"steps must be an integer >= 2, got {steps!r}")
    scheduler = ScoreSdeVeScheduler(
        num_train_timesteps=int(steps), sigma_min=prior.sigma_min, sigma_max=prior.sigma_max, correct_steps=0
    )
    scheduler.set_timesteps(int(steps))
    scheduler.set_sigmas(int(steps))
    x = prior.sigma_max * torch.randn(shape, generator=generator).to(device)
    mean = x
    for t in scheduler.timesteps:
        sigma = float(scheduler.discrete_sigmas[(t * (len(scheduler.timesteps) - 1)).long()])  # the σ step_pred uses
        out = scheduler.step_pred(prior.score(x, sigma), t, x, generator=generator)
        x, mean = out.prev_sample, out.prev_sample_mean
    return mean
