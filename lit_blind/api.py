"""One-call entry points: :func:`deblur` (blind deconvolution of one image)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from lit_blind._checks import check_choice, check_image, check_positive
from lit_blind.deconv import DeblurResult, alternating, douglas_rachford
from lit_blind.deconv import preset as preset_settings
from lit_blind.kernels import KernelFamily, OneParameterFamily, SimplexFamily, gaussian_kernel, uniform_kernel
from lit_blind.kernels import family as make_family
from lit_blind.loading import load_prior
from lit_blind.marginal import marginal_em
from lit_blind.priors import Prior

INITS = ("large", "small")
ALGORITHMS = ("em", "alternating", "drs")


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
    algorithm: str = "em",
    family: str | KernelFamily = "simplex",
    kernel_size: int = 31,
    init: str = "large",
    boundary: str | None = None,
    theta0: Tensor | None = None,
    theta_ref: Tensor | None = None,
    sigma_y: float | None = None,
    K: int | None = None,
    K_x: int | None = None,
    gamma_x: float | None = None,
    gamma_theta: float | str | None = None,
    theta_steps: int | None = None,
    theta_start: int | None = None,
    R: int | None = None,
    sigma_denoiser: float | None = None,
    family_kw: dict | None = None,
    scales: int | None = None,
    preset: str | None = None,
    em_options: dict | None = None,
    callback: Callable[[dict], None] | None = None,
) -> DeblurResult:
    r"""Estimate a sharp image and its blur kernel from one blurry image ``y`` ``(1, C, H, W)`` in [0, 1].

    ``algorithm="em"`` (the default, for real photographs): :func:`~lit_blind.marginal.marginal_em`,
    coarse-to-fine EM with the prior's denoiser, valid boundary, options in ``em_options``; an RGB ``y`` with a
    gray prior stays RGB. The parameters from ``theta0`` to ``preset`` belong to the paper's algorithms and
    are an error with ``"em"``; left None they take the values of ``preset`` (:data:`lit_blind.deconv.PRESETS`:
    ``"paper"``, the default, or ``"fast"``), where every default of Algorithms 1–2 is declared once.

    Otherwise minimises :math:`\tfrac12\|h_\theta\star x - y\|^2 + \sigma_y^2 q(x)` by Algorithm 1
    (``algorithm="alternating"``) or Algorithm 2 (``"drs"``) from
    the ``large`` (the paper's remedy for the no-blur trap) or ``small`` initialisation, or an explicit θ₀
    (for the coarsest kernel when ``scales`` > 1). ``family`` is a name of :func:`~lit_blind.kernels.family`
    (sized by ``kernel_size``, options in ``family_kw``) or a :class:`~lit_blind.kernels.KernelFamily` instance.
    ``prior`` is a :class:`Prior` or a :func:`~lit_blind.loading.load_prior` spec.

    ``scales`` > 1 (simplex family only; beyond the paper): coarse to fine, as in classical blind
    deconvolution (Fergus et al. 2006, Levin et al. 2011). Scale s = scales − 1, …, 0 solves the problem on
    y downsampled by 2^s (bilinear with antialiasing), σ_y/2^s (averaging 4^s pixels divides white noise by
    2^s) and a kernel of half-width ⌊(k//2)/2^s⌋, each with the full schedule; the init applies at the
    coarsest scale and each kernel, upsampled (bilinear, renormalised), starts the next finer scale. The
    result holds the finest scale's history (``score_evals`` and ``seconds`` counted from the start of the
    coarsest scale), with ``history["scales"]`` = [(kernel size, kernel)] of every scale, coarse first; the
    callback's dicts carry ``"scale"``.

    Example::

        res = deblur(y, "natural-gray-small")                       # EM, 31×31 kernel
        res = deblur(y, "natural-gray-small", algorithm="alternating", kernel_size=15, K=40, K_x=20,
                     gamma_theta="armijo")                          # the paper's Algorithm 1
        res.image, res.kernel
    """
    if isinstance(prior, str):
        prior = load_prior(prior)
    if not isinstance(prior, Prior):
        raise ValueError(f"prior must be a Prior or a load_prior spec, got {type(prior).__name__}")
    check_choice("algorithm", algorithm, ALGORITHMS)
    paper = dict(theta0=theta0, theta_ref=theta_ref, sigma_y=sigma_y, K=K, K_x=K_x, gamma_x=gamma_x)
    paper |= dict(gamma_theta=gamma_theta, theta_steps=theta_steps, theta_start=theta_start, R=R)
    paper |= dict(sigma_denoiser=sigma_denoiser, family_kw=family_kw, scales=scales, preset=preset)
    if algorithm == "em":
        given = [name for name, v in paper.items() if v is not None]
        if given:
            raise ValueError(f"{', '.join(given)} apply to algorithm 'alternating' / 'drs' only, not to 'em'")
        return _deblur_em(y, prior, family, kernel_size, init, boundary or "valid", callback, em_options)
    if em_options:
        raise ValueError(f"em_options apply to algorithm='em' only, got algorithm={algorithm!r}")
    y = check_image("y", y, channels=prior.channels)
    boundary = boundary or "circular"
    defaults = preset_settings(preset or "paper", algorithm)
    filled = {name: default if paper[name] is None else paper[name] for name, default in defaults.items()}
    sigma_y, K, K_x, gamma_x, gamma_theta, theta_steps, theta_start, R, scales = (
        filled[k]
        for k in ("sigma_y", "K", "K_x", "gamma_x", "gamma_theta", "theta_steps", "theta_start", "R", "scales")
    )
    check_positive("sigma_y", sigma_y)  # before it is divided per scale
    if isinstance(family, KernelFamily):  # an instance (e.g. injected by a config): its own size, one scale
        if family_kw or scales != 1 or kernel_size not in (31, family.size):
            raise ValueError(
                f"family given as a {type(family).__name__} sets the kernel size ({family.size}) and its options: "
                f"kernel_size, family_kw and scales > 1 need a family name, got {kernel_size}, {family_kw}, {scales}"
            )
        kernel_size = family.size
    sizes = _scale_sizes(family, kernel_size, scales, tuple(y.shape[-2:]))
    fam = family if isinstance(family, KernelFamily) else make_family(family, size=sizes[0], **(family_kw or {}))
    theta = initial_theta(fam, init, theta_ref) if theta0 is None else torch.as_tensor(theta0, dtype=torch.float64)
    y = y.to(torch.float64)
    common = dict(K=K, K_x=K_x, gamma_x=gamma_x, gamma_theta=gamma_theta, theta_steps=theta_steps)
    common |= dict(theta_start=theta_start, R=R, boundary=boundary)
    coarse, spent = [], {"score_evals": 0, "seconds": 0.0}
    for s, size in zip(range(len(sizes) - 1, -1, -1), sizes, strict=True):
        if coarse:  # start from the coarser scale's kernel, upsampled
            fam = make_family(family, size=size, **(family_kw or {}))
            theta = fam.project(upsample_kernel(coarse[-1][1], size).flatten(1))
        y_s = y if s == 0 else downsample(y, 2**s)
        cb = None if callback is None else (lambda info, s=s: callback(info | {"scale": s}))
        common |= dict(sigma_y=sigma_y / 2**s, callback=cb)
        if algorithm == "alternating":
            res = alternating(y_s, prior, fam, theta, **common)
        else:
            sd = None if sigma_denoiser is None else sigma_denoiser / 2**s
            res = douglas_rachford(y_s, prior, fam, theta, sigma_denoiser=sd, **common)
        for name in ("score_evals", "seconds"):  # counted from the start of the coarsest scale
            res.history[name] = [v + spent[name] for v in res.history[name]]
            spent[name] = res.history[name][-1]
        coarse.append((size, res.kernel))
    if scales > 1:
        res.history["scales"] = coarse
    return res


def _deblur_em(y, prior, family, kernel_size, init, boundary, callback, options) -> DeblurResult:
    """``algorithm="em"``: :func:`~lit_blind.marginal.marginal_em` (free-form kernel, valid boundary, its own
    coarse-to-fine pyramid and initialisation)."""
    if family != "simplex":
        raise ValueError(f"algorithm='em' estimates a free-form kernel: family must be 'simplex', got {family!r}")
    if boundary != "valid":
        raise ValueError(f"algorithm='em' works on real photographs: boundary must be 'valid', got {boundary!r}")
    return marginal_em(y, prior, kernel_size, init=init, callback=callback, **(options or {}))


def _scale_sizes(family: str, kernel_size: int, scales: int, shape: tuple[int, int]) -> list[int]:
    """Kernel sizes from the coarsest scale to the finest (= ``kernel_size``)."""
    if int(scales) != scales or scales < 1:
        raise ValueError(f"scales must be a positive integer, got {scales!r}")
    if scales == 1:
        return [int(kernel_size)]
    if family != "simplex":
        raise ValueError(f"scales > 1 needs the simplex family (a free-form kernel), got family={family!r}")
    half = int(kernel_size) // 2
    if half >> (scales - 1) < 1:
        raise ValueError(
            f"scales must leave the coarsest kernel at least 3×3: kernel_size={kernel_size}, scales={scales}"
        )
    coarsest = min(shape) // 2 ** (scales - 1)
    if coarsest < 2 * (half >> (scales - 1)) + 1:
        raise ValueError(f"scales={scales} leaves the image {shape} at {coarsest} px, smaller than its kernel")
    return [2 * (half >> s) + 1 for s in range(scales - 1, -1, -1)]


def downsample(y: Tensor, factor: int) -> Tensor:
    """``y`` shrunk by ``factor`` (bilinear with antialiasing, sides rounded)."""
    size = [max(1, round(n / factor)) for n in y.shape[-2:]]
    return torch.nn.functional.interpolate(y, size=size, mode="bilinear", antialias=True, align_corners=False)


def upsample_kernel(h: Tensor, size: int) -> Tensor:
    """A kernel ``(1, 1, k, k)`` resampled to ``size`` × ``size`` (bilinear, centre kept), ≥ 0, summing to 1."""
    up = torch.nn.functional.interpolate(h, size=(size, size), mode="bilinear", align_corners=True).clamp_min(0)
    return up / up.sum()
