"""One-call entry points: :func:`deblur` (blind deconvolution of one image)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from lit_blind._checks import check_choice, check_image
from lit_blind.deconv import DeblurResult, alternating, douglas_rachford
from lit_blind.kernels import KernelFamily, OneParameterFamily, SimplexFamily, gaussian_kernel, uniform_kernel
from lit_blind.kernels import family as make_family
from lit_blind.priors import Prior

INITS = ("large", "small")
ALGORITHMS = ("alternating", "drs")


def initial_theta(
    fam: KernelFamily,
    init: str,
    theta_ref: Tensor | None = None,
    eps_large: float = 0.15,
    eps_small: float = -0.1,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """θ₀ of §5: ``large`` / ``small``.

    * simplex: the uniform kernel / a Gaussian of std 1.5 px;
    * with a reference θ̄ (parametric families, synthetic experiments): θ̄ + ε·sign(θ̄), ε = 0.15 / −0.1;
    * 1-D families without θ̄: θ_max / 0.1·θ_max (the largest kernel / a small one);
    * Zernike without θ̄: ``ValueError`` (the paper's initialisation is relative to θ̄).
    """
    check_choice("init", init, INITS)
    if isinstance(fam, SimplexFamily):
        h = uniform_kernel(fam.size, dtype) if init == "large" else gaussian_kernel(fam.size, 1.5, dtype)
        return h.flatten(1)
    if theta_ref is not None:
        ref = torch.as_tensor(theta_ref, dtype=dtype).reshape(1, -1)
        eps = eps_large if init == "large" else eps_small
        return fam.project(ref + eps * torch.sign(ref))
    if isinstance(fam, OneParameterFamily):
        return torch.tensor([[fam.theta_max if init == "large" else 0.1 * fam.theta_max]], dtype=dtype)
    raise ValueError(f"theta_ref (θ̄) or theta0 must be given to initialise the {type(fam).__name__}, got neither")


def deblur(
    y: Tensor,
    prior: Prior | str,
    *,
    family: str = "simplex",
    kernel_size: int = 31,
    init: str = "large",
    theta0: Tensor | None = None,
    theta_ref: Tensor | None = None,
    sigma_y: float = 0.01,
    algorithm: str = "alternating",
    boundary: str = "circular",
    K: int = 400,
    K_x: int = 100,
    gamma_x: float | None = None,
    gamma_theta: float | str = 0.001,
    theta_steps: int = 1,
    R: int = 100,
    sigma_denoiser: float | None = None,
    callback: Callable[[dict], None] | None = None,
    family_kw: dict | None = None,
) -> DeblurResult:
    r"""Estimate a sharp image and its blur kernel from one blurry image ``y`` ``(1, C, H, W)`` in [0, 1].

    Minimises :math:`\tfrac12\|h_\theta\star x - y\|^2 + \sigma_y^2 q(x)` by Algorithm 1
    (``algorithm="alternating"``, γ_x = 0.01 by default) or Algorithm 2 (``"drs"``, γ_x = 1 by default) from
    the ``large`` (the paper's remedy for the no-blur trap) or ``small`` initialisation, or an explicit θ₀.
    ``prior`` is a :class:`Prior` or a :func:`~lit_blind.loading.load_prior` spec.

    Example::

        res = deblur(y, "natural-gray-small", kernel_size=15, K=40, K_x=20, gamma_theta="armijo")
        res.image, res.kernel
    """
    if isinstance(prior, str):
        from lit_blind.loading import load_prior

        prior = load_prior(prior)
    if not isinstance(prior, Prior):
        raise ValueError(f"prior must be a Prior or a load_prior spec, got {type(prior).__name__}")
    y = check_image("y", y, channels=prior.channels)
    check_choice("algorithm", algorithm, ALGORITHMS)
    fam = make_family(family, size=kernel_size, **(family_kw or {}))
    theta = initial_theta(fam, init, theta_ref) if theta0 is None else torch.as_tensor(theta0, dtype=torch.float64)
    y = y.to(torch.float64)
    common = dict(sigma_y=sigma_y, K=K, K_x=K_x, gamma_theta=gamma_theta, theta_steps=theta_steps, R=R)
    common |= dict(boundary=boundary, callback=callback)
    if algorithm == "alternating":
        return alternating(y, prior, fam, theta, gamma_x=0.01 if gamma_x is None else gamma_x, **common)
    return douglas_rachford(
        y, prior, fam, theta, gamma_x=1.0 if gamma_x is None else gamma_x, sigma_denoiser=sigma_denoiser, **common
    )
