"""One-call entry points: :func:`deblur` (blind deconvolution of one image)."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from lit_blind._checks import check_choice, check_image
from lit_blind.deconv import DeblurResult, coarse_to_fine
from lit_blind.deconv import preset as preset_settings
from lit_blind.kernels import KernelFamily
from lit_blind.loading import load_prior
from lit_blind.marginal import marginal_em
from lit_blind.priors import Prior

ALGORITHMS = ("em", "alternating", "drs")


# the initialisation of Algorithms 1–2 when deblur's init is None: the paper's remedy for the no-blur trap (§5)
PAPER_INIT = "large"


def deblur(
    y: Tensor,
    prior: Prior | str,
    *,
    algorithm: str = "em",
    family: str | KernelFamily = "simplex",
    kernel_size: int = 31,
    init: str | Tensor | None = None,
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
    gray prior stays RGB; ``init`` there is ``both`` (the default: the EM from the large and from the small
    initialisation, the result with the sharper image kept; :func:`~lit_blind.marginal.marginal_em`), ``large``,
    ``small`` or a ``(1, 1, kernel_size, kernel_size)`` kernel (a warm start);
    ``sigma_y``, the noise level of ``y``, is estimated from ``y`` when None and ends the EM's annealing. The
    other parameters from ``theta0`` to ``preset`` belong to the paper's algorithms and are an error with
    ``"em"``; left None they take the values of ``preset`` (:data:`lit_blind.deconv.PRESETS`: ``"paper"``, the
    default, or ``"fast"``), where every default of Algorithms 1–2 (σ_y among them) is declared once.

    Otherwise minimises :math:`\tfrac12\|h_\theta\star x - y\|^2 + \sigma_y^2 q(x)` by Algorithm 1
    (``algorithm="alternating"``) or Algorithm 2 (``"drs"``) from
    the ``large`` (the default; the paper's remedy for the no-blur trap) or ``small`` initialisation, or an explicit θ₀
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
    paper = dict(theta0=theta0, theta_ref=theta_ref, sigma_y=sigma_y, K=K, K_x=K_x, gamma_x=gamma_x)
    paper |= dict(gamma_theta=gamma_theta, theta_steps=theta_steps, theta_start=theta_start, R=R)
    paper |= dict(sigma_denoiser=sigma_denoiser, family_kw=family_kw, scales=scales, preset=preset)
    check_algorithm_settings(algorithm, paper, em_options)
    if algorithm == "em":
        em_options = (em_options or {}) | ({} if sigma_y is None else {"sigma_y": sigma_y})
        start = {} if init is None else {"init": init}  # None: the engine's own default
        return _deblur_em(y, prior, family, kernel_size, boundary or "valid", callback, em_options | start)
    y = check_image("y", y, channels=prior.channels)
    settings = {
        k: v if paper[k] is None else paper[k] for k, v in preset_settings(preset or "paper", algorithm).items()
    }
    scales = settings.pop("scales")
    if isinstance(family, KernelFamily):  # an instance (e.g. injected by a config): its own size, one scale
        if family_kw or scales != 1 or kernel_size not in (31, family.size):
            raise ValueError(
                f"family given as a {type(family).__name__} sets the kernel size ({family.size}) and its options: "
                f"kernel_size, family_kw and scales > 1 need a family name, got {kernel_size}, {family_kw}, {scales}"
            )
        kernel_size = family.size
    return coarse_to_fine(
        algorithm, y, prior, family, kernel_size, init=PAPER_INIT if init is None else init, theta0=theta0, theta_ref=theta_ref, scales=scales,
        family_kw=family_kw, sigma_denoiser=sigma_denoiser, callback=callback, boundary=boundary or "circular",
        **settings,
    )  # fmt: skip


def check_algorithm_settings(algorithm: str, paper: dict, em_options: dict | None) -> None:
    """Raise ``ValueError`` when settings of Algorithms 1–2 (``paper``: name → value, None = not given) come
    with ``algorithm="em"``, or ``em_options`` with another algorithm — instead of ignoring them."""
    check_choice("algorithm", algorithm, ALGORITHMS)
    given = [name for name, v in paper.items() if v is not None and name != "sigma_y"]  # σ_y: every algorithm's
    if algorithm == "em" and given:
        raise ValueError(f"{', '.join(given)} apply to algorithm 'alternating' / 'drs' only, not to 'em'")
    if algorithm == "em" and paper.get("sigma_y") is not None and "sigma_y" in (em_options or {}):
        raise ValueError("sigma_y given twice: as sigma_y and in em_options; give it once")
    if algorithm != "em" and em_options:
        raise ValueError(f"em_options apply to algorithm='em' only, got algorithm={algorithm!r}")


def _deblur_em(y, prior, family, kernel_size, boundary, callback, options) -> DeblurResult:
    """``algorithm="em"``: :func:`~lit_blind.marginal.marginal_em` (free-form kernel, valid boundary, its own
    coarse-to-fine pyramid and initialisation)."""
    if family != "simplex":
        raise ValueError(f"algorithm='em' estimates a free-form kernel: family must be 'simplex', got {family!r}")
    if boundary != "valid":
        raise ValueError(f"algorithm='em' works on real photographs: boundary must be 'valid', got {boundary!r}")
    return marginal_em(y, prior, kernel_size, callback=callback, **options)
