r"""Blind deconvolution by alternating minimisation of the negative log-posterior (paper §4.2, §5, app. B).

.. math:: \ell_y(x, \theta) = \tfrac12\|h_\theta \star x - y\|^2 + \sigma_y^2\, q(x)

* :func:`alternating` — Algorithm 1: K outer iterations; K_x proximal-gradient image steps
  x ← prox_{γ_x f(·,θ)}(x − γ_x σ_y² ∇q(x)) with ∇q(x) = −s(x, σ_ε); one (projected) gradient step on θ
  through the kernel family; x reset to y every R iterations.
* :func:`douglas_rachford` — Algorithm 2: the image step is Douglas–Rachford with a denoiser,
  z = D(x, σ_d), x ← x + prox_{γ_x f}(2z − x) − z.

Both are plain functions (no Lightning, no files): they take the blurry image, a prior, a kernel family and
θ₀, and report through ``callback(dict)`` once per outer iteration. The prox is the closed-form FFT solve
for ``circular`` boundaries and CG for ``valid`` ones (then x is larger than y by k − 1 and starts as y
padded by edge replication; the CG solve is warm-started at its input and stops at relative residual
``cg_tol``). The θ step is a projected gradient step: ``family.project`` (clamp to
[0, θ_max] for the 1-D families, Euclidean projection for the simplex family, identity for Zernike).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_blind._checks import check_choice, check_image, check_positive
from lit_blind.kernels import KernelFamily, initial_theta
from lit_blind.kernels import family as make_family
from lit_blind.physics import BOUNDARIES, data_fidelity, prox_data_unchecked
from lit_blind.priors import Prior


@dataclass
class DeblurResult:
    """Estimated image ``(1, C, H', W')``, kernel ``(1, 1, k, k)``, θ ``(1, P)`` and the iteration history."""

    image: Tensor
    kernel: Tensor
    theta: Tensor
    history: dict = field(default_factory=dict)


def _check_common(y, prior, fam, theta0, sigma_y, boundary, K, K_x, R, batch=False) -> tuple[Tensor, Tensor]:
    y = check_image("y", y, channels=prior.channels)
    if y.shape[0] != 1 and not batch:
        raise ValueError(f"y must hold one image (batch 1), got shape {tuple(y.shape)}")
    check_positive("sigma_y", sigma_y)
    check_choice("boundary", boundary, BOUNDARIES)
    if not isinstance(fam, KernelFamily):
        raise ValueError(f"family must be a KernelFamily, got {type(fam).__name__}")
    if fam.size > min(y.shape[-2:]):
        raise ValueError(f"kernel size {fam.size} must not exceed the image size {tuple(y.shape[-2:])}")
    theta0 = torch.as_tensor(theta0, dtype=torch.float64)
    theta0 = fam.check_theta(theta0.reshape(y.shape[0] if batch else 1, -1))
    for name, v in (("K", K), ("K_x", K_x), ("R", R)):
        if int(v) != v or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return y, theta0


def x_init(y: Tensor, k: int, boundary: str) -> Tensor:
    return y.clone() if boundary == "circular" else F.pad(y, (k // 2,) * 4, mode="replicate")


class _ThetaStepper:
    """Projected gradient steps on θ for f(x, θ) = ½‖h_θ ⋆ x − y‖² (x fixed), each row of a batch of
    independent problems on its own.

    ``gamma_theta`` a number: the paper's fixed step. ``"armijo"``: backtracking on the projected step
    (sufficient decrease f(θ⁺) ≤ f(θ) + ⟨∇f, θ⁺ − θ⟩ + ‖θ⁺ − θ‖²/(2γ)), the step doubling after each
    success; each trial costs one blur, no score evaluation; ``gamma`` holds one step size per problem
    (state a resumed run restores). ``steps`` gradient steps per outer iteration, none before outer
    iteration ``start``.
    """

    def __init__(
        self, fam: KernelFamily, y: Tensor, boundary: str, gamma_theta: float | str, steps: int, start: int = 0
    ) -> None:
        if isinstance(gamma_theta, str):
            check_choice("gamma_theta", gamma_theta, ("armijo",))
            self.armijo, gamma = True, 1.0
        else:
            self.armijo, gamma = False, check_positive("gamma_theta", gamma_theta)
        if int(steps) != steps or steps < 1:
            raise ValueError(f"theta_steps must be a positive integer, got {steps!r}")
        if int(start) != start or start < 0:
            raise ValueError(f"theta_start must be a non-negative integer, got {start!r}")
        self.fam, self.y, self.boundary, self.steps, self.start = fam, y, boundary, int(steps), int(start)
        self.gamma = torch.full((y.shape[0], 1), gamma, dtype=torch.float64, device=y.device)

    def f(self, theta: Tensor, x: Tensor) -> Tensor:
        """f per problem, shape (B,)."""
        return data_fidelity(x, self.y, self.fam(theta), self.boundary)

    def __call__(self, theta: Tensor, x: Tensor, iteration: int) -> tuple[Tensor, float]:
        x = x.detach()
        for _ in range(self.steps if iteration >= self.start else 0):
            th = theta.detach().requires_grad_(True)
            f = self.f(th, x)
            (g,) = torch.autograd.grad(f.sum(), th)  # row i: the gradient of problem i alone
            new = self.fam.project(theta - self.gamma * g).detach()
            if self.armijo:
                with torch.no_grad():
                    for _ in range(60):
                        d = new - theta
                        ok = self.f(new, x) <= f + (g * d).sum(1) + d.pow(2).sum(1) / (2 * self.gamma[:, 0])
                        if bool(ok.all()):
                            break
                        self.gamma = torch.where(ok[:, None], self.gamma, self.gamma / 2)
                        new = torch.where(ok[:, None], new, self.fam.project(theta - self.gamma * g).detach())
                    self.gamma = self.gamma * 2
            theta = new
        with torch.no_grad():
            return theta, self.f(theta, x).sum().item()


class OuterLoop:
    """The one outer loop of Algorithms 1 and 2 — reset x to y every R iterations, the image step, the θ
    steps — one outer iteration per :meth:`step`. :func:`alternating` / :func:`douglas_rachford` run it to
    the end; ``BlindDeconvModule`` runs one step per Lightning training step (``x``, ``theta``, ``k`` and
    the θ stepper's ``gamma`` are its state, restored from a checkpoint). ``y`` may hold a batch of
    independent problems.
    """

    def __init__(self, image_step, y: Tensor, fam: KernelFamily, theta: Tensor, R: int, theta_step: _ThetaStepper,
                 boundary: str, evals_per_outer: int) -> None:  # fmt: skip
        self.image_step, self.y, self.fam, self.theta, self.R = image_step, y, fam, theta, int(R)
        self.theta_step, self.boundary, self.evals_per_outer = theta_step, boundary, int(evals_per_outer)
        self.x, self.k, self.evals = x_init(y, fam.size, boundary), 0, 0

    def step(self) -> dict:
        """One outer iteration; returns what the callback gets (iteration, x, theta, kernel, data_fidelity
        — the sum over the batch —, score_evals)."""
        k, y = self.k, self.y
        if k % self.R == 0:
            self.x = x_init(y, self.fam.size, self.boundary)
        h = self.fam(self.theta).detach().to(y.dtype)
        x = self.image_step(self.x, h)
        size = float(x.abs().max())  # one host sync per outer iteration, not per image step
        if not math.isfinite(size) or size > 1e6 * max(1.0, float(y.abs().max())):
            raise ValueError(
                f"image step of outer iteration {k} diverged (max |x| = {size:.3g} for y in [0, 1]): "
                "is sigma_y plausible for the image? a smaller gamma_x keeps the step stable"
            )
        self.theta, f = self.theta_step(self.theta, x, k)
        self.x, self.k, self.evals = x, k + 1, self.evals + self.evals_per_outer
        return {"iteration": k, "x": x, "theta": self.theta, "kernel": h, "data_fidelity": f, "score_evals": self.evals}


def _run(loop: OuterLoop, K: int, snapshot_every: int = 20, callback=None) -> DeblurResult:
    """:class:`OuterLoop` for K outer iterations, with the history."""
    hist: dict = {"theta": [], "data_fidelity": [], "score_evals": [], "seconds": [], "kernels": [], "images": []}
    t0 = time.perf_counter()
    for k in range(int(K)):
        info = loop.step()
        hist["theta"].append(info["theta"][0].tolist())
        hist["data_fidelity"].append(info["data_fidelity"])
        hist["score_evals"].append(info["score_evals"])
        hist["seconds"].append(time.perf_counter() - t0)
        if k % snapshot_every == 0 or k == K - 1:
            hist["kernels"].append((k, info["kernel"].cpu()))
            hist["images"].append((k, info["x"].detach().cpu()))
        if callback is not None:
            callback(info)
    return DeblurResult(image=loop.x.detach(), kernel=loop.fam(loop.theta).detach(), theta=loop.theta, history=hist)


def proximal_gradient_step(
    prior, y, sigma_y, K_x, gamma_x, sigma_eps=None, boundary="circular", cg_tol=1e-5, cg_max_iter=100
):
    """The image update of Algorithm 1 (lines 5–7) as a function (x, h) ↦ x: K_x proximal-gradient steps
    x ← prox_{γ_x f(·,θ)}(x + γ_x σ_y² s(x, σ_ε)). Works on a batch of independent problems."""
    check_positive("gamma_x", gamma_x)
    sigma_eps = prior.check_sigma(prior.sigma_min if sigma_eps is None else sigma_eps, "sigma_eps")

    def image_step(x: Tensor, h: Tensor) -> Tensor:  # inputs checked once by the caller; OuterLoop.step checks x
        for _ in range(int(K_x)):
            with torch.no_grad():
                z = x + gamma_x * sigma_y**2 * prior._score_unchecked(x, sigma_eps)
            x = prox_data_unchecked(z, y, h, gamma_x, boundary, max_iter=cg_max_iter, tol=cg_tol)
        return x

    return image_step


def douglas_rachford_step(
    prior, y, sigma_y, K_x, gamma_x, sigma_denoiser=None, boundary="circular", cg_tol=1e-5, cg_max_iter=100
):
    """The image update of Algorithm 2 (lines 5–8) as a function (x, h) ↦ x: K_x Douglas–Rachford steps
    z = D(x, σ_d), x ← x + prox_{γ_x f}(2z − x) − z."""
    check_positive("gamma_x", gamma_x)
    sigma_d = prior.check_sigma(sigma_y if sigma_denoiser is None else sigma_denoiser, "sigma_denoiser")

    def image_step(x: Tensor, h: Tensor) -> Tensor:  # inputs checked once by the caller; OuterLoop.step checks x
        for _ in range(int(K_x)):
            with torch.no_grad():
                z = prior._denoise_unchecked(x, sigma_d)
            x = x + prox_data_unchecked(2 * z - x, y, h, gamma_x, boundary, max_iter=cg_max_iter, tol=cg_tol) - z
        return x

    return image_step


def alternating(
    y: Tensor,
    prior: Prior,
    family: KernelFamily,
    theta0: Tensor,
    *,
    sigma_y: float,
    K: int | None = None,
    K_x: int | None = None,
    gamma_x: float | None = None,
    gamma_theta: float | str | None = None,
    theta_steps: int | None = None,
    theta_start: int | None = None,
    R: int | None = None,
    sigma_eps: float | None = None,
    boundary: str = "circular",
    preset: str = "paper",
    cg_tol: float = 1e-5,
    cg_max_iter: int = 100,
    snapshot_every: int = 20,
    callback: Callable[[dict], None] | None = None,
) -> DeblurResult:
    r"""Algorithm 1 of the paper (alternating minimisation with proximal-gradient image steps).

    .. math:: x \leftarrow \mathrm{prox}_{\gamma_x f(\cdot,\theta)}\big(x + \gamma_x\sigma_y^2 s(x, \sigma_\varepsilon)\big),
              \qquad \theta \leftarrow \Pi\big(\theta - \gamma_\theta \nabla_\theta f(x, \theta)\big)

    Settings left None come from ``preset`` (:data:`PRESETS`; ``"paper"``: K = 400, K_x = 100, γ_x = 0.01,
    γ_θ = 0.001, R = 100); σ_ε defaults to the prior's ``sigma_min``. Beyond the paper: ``gamma_theta="armijo"`` (backtracking θ steps, scale-free)
    and ``theta_steps`` > 1 (several cheap θ steps per outer iteration: they cost blurs, not score
    evaluations); ``theta_start`` > 0 holds θ for that many outer iterations, so that x, which starts as
    the blurry y, is deblurred under θ₀ before the first θ step (a kernel fitted to x ≈ y is the Dirac).
    """
    return _run(
        outer_loop("alternating", y, prior, family, theta0, preset_name=preset, sigma_y=sigma_y, K_x=K_x, gamma_x=gamma_x,
                   gamma_theta=gamma_theta, theta_steps=theta_steps, theta_start=theta_start, R=R, sigma_aux=sigma_eps,
                   boundary=boundary, cg_tol=cg_tol, cg_max_iter=cg_max_iter, K=K),
        K, snapshot_every, callback,
    )  # fmt: skip


def douglas_rachford(
    y: Tensor,
    prior: Prior,
    family: KernelFamily,
    theta0: Tensor,
    *,
    sigma_y: float,
    sigma_denoiser: float | None = None,
    K: int | None = None,
    K_x: int | None = None,
    gamma_x: float | None = None,
    gamma_theta: float | str | None = None,
    theta_steps: int | None = None,
    theta_start: int | None = None,
    R: int | None = None,
    boundary: str = "circular",
    preset: str = "paper",
    cg_tol: float = 1e-5,
    cg_max_iter: int = 100,
    snapshot_every: int = 20,
    callback: Callable[[dict], None] | None = None,
) -> DeblurResult:
    r"""Algorithm 2 of the paper (appendix B): Douglas–Rachford image steps with a denoiser.

    .. math:: z = D(x, \sigma_d),\qquad x \leftarrow x + \mathrm{prox}_{\gamma_x f(\cdot,\theta)}(2z - x) - z

    ``prior.denoise`` is the denoiser (a diffusion prior through Tweedie, or a plug-and-play denoiser);
    σ_d defaults to σ_y. As in the paper, x (the Douglas–Rachford governing sequence) is carried over and
    returned. ``gamma_theta``, ``theta_steps``, ``theta_start`` and ``preset`` as in :func:`alternating`.
    """
    return _run(
        outer_loop("drs", y, prior, family, theta0, preset_name=preset, sigma_y=sigma_y, K_x=K_x, gamma_x=gamma_x,
                   gamma_theta=gamma_theta, theta_steps=theta_steps, theta_start=theta_start, R=R,
                   sigma_aux=sigma_denoiser, boundary=boundary, cg_tol=cg_tol, cg_max_iter=cg_max_iter, K=K),
        K, snapshot_every, callback,
    )  # fmt: skip


def coarse_to_fine(
    algorithm: str,
    y: Tensor,
    prior: Prior,
    family: str | KernelFamily,
    kernel_size: int,
    *,
    init: str = "large",
    theta0: Tensor | None = None,
    theta_ref: Tensor | None = None,
    scales: int = 1,
    family_kw: dict | None = None,
    sigma_denoiser: float | None = None,
    callback: Callable[[dict], None] | None = None,
    sigma_y: float,
    K: int,
    **settings,
) -> DeblurResult:
    """Algorithm 1 or 2 (``algorithm``) from ``init`` (or ``theta0``) on ``scales`` scales, coarse to fine
    (simplex family; see :func:`lit_blind.api.deblur`): scale s solves the problem on y downsampled by 2^s with
    σ_y/2^s and a kernel of half-width ⌊(k//2)/2^s⌋; each kernel, upsampled, starts the next finer scale.
    ``settings``: the other :func:`outer_loop` settings (K_x, gamma_x, gamma_theta, theta_steps, theta_start,
    R, boundary)."""
    check_positive("sigma_y", sigma_y)  # before it is divided per scale
    sizes = _scale_sizes(family, kernel_size, scales, tuple(y.shape[-2:]))
    fam = family if isinstance(family, KernelFamily) else make_family(family, size=sizes[0], **(family_kw or {}))
    theta = initial_theta(fam, init, theta_ref) if theta0 is None else torch.as_tensor(theta0, dtype=torch.float64)
    y = y.to(torch.float64)
    coarse, spent = [], {"score_evals": 0, "seconds": 0.0}
    for s, size in zip(range(len(sizes) - 1, -1, -1), sizes, strict=True):
        if coarse:  # start from the coarser scale's kernel, upsampled
            fam = make_family(family, size=size, **(family_kw or {}))
            theta = fam.project(upsample_kernel(coarse[-1][1], size).flatten(1))
        y_s = y if s == 0 else downsample(y, 2**s)
        cb = None if callback is None else (lambda info, s=s: callback(info | {"scale": s}))
        sd = None if sigma_denoiser is None or algorithm != "drs" else sigma_denoiser / 2**s  # alternating: σ_ε = σ_min
        loop = outer_loop(algorithm, y_s, prior, fam, theta, sigma_y=sigma_y / 2**s, K=K, sigma_aux=sd, **settings)
        res = _run(loop, K, callback=cb)
        for name in ("score_evals", "seconds"):  # counted from the start of the coarsest scale
            res.history[name] = [v + spent[name] for v in res.history[name]]
            spent[name] = res.history[name][-1]
        coarse.append((size, res.kernel))
    if scales > 1:
        res.history["scales"] = coarse
    return res


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


#: Algorithms 1–2 as data: name → the factory of its image step ``(prior, y, σ_y, K_x, γ_x, σ_aux, boundary,
#: cg_tol, cg_max_iter) → ((x, h) ↦ x)``; σ_aux is σ_ε (alternating) or σ_d (drs). Adding an algorithm that
#: shares the outer loop = one entry here.
IMAGE_STEPS = {"alternating": proximal_gradient_step, "drs": douglas_rachford_step}

#: Named schedules of Algorithms 1–2: every default of their parameters, declared once. ``paper``: the paper's
#: (K = 400, K_x = 100, γ_x = 0.01 / 1, fixed γ_θ = 0.001); ``fast``: 100× fewer score evaluations with Armijo θ
#: steps (benchmarks/deblur.py: a lower final kernel error on the demo problem).
PRESETS = {
    "paper": dict(sigma_y=0.01, K=400, K_x=100, gamma_x={"alternating": 0.01, "drs": 1.0}, gamma_theta=0.001,
                  theta_steps=1, theta_start=0, R=100, scales=1),
    "fast": dict(sigma_y=0.01, K=40, K_x=10, gamma_x={"alternating": 0.1, "drs": 1.0}, gamma_theta="armijo",
                 theta_steps=5, theta_start=0, R=100, scales=1),
}  # fmt: skip


def preset(name: str, algorithm: str) -> dict:
    """The settings of preset ``name`` for ``algorithm`` (``alternating`` or ``drs``)."""
    check_choice("preset", name, tuple(PRESETS))
    check_choice("algorithm", algorithm, tuple(IMAGE_STEPS))
    return {k: v[algorithm] if isinstance(v, dict) else v for k, v in PRESETS[name].items()}


def outer_loop(
    algorithm: str,
    y: Tensor,
    prior: Prior,
    family: KernelFamily,
    theta0: Tensor,
    *,
    preset_name: str = "paper",
    batch: bool = False,
    sigma_aux: float | None = None,
    cg_tol: float = 1e-5,
    cg_max_iter: int = 100,
    **settings,
) -> OuterLoop:
    """The :class:`OuterLoop` of ``algorithm`` with ``settings`` (sigma_y, K_x, gamma_x, gamma_theta,
    theta_steps, theta_start, R, boundary, K); those left None come from preset ``preset_name``. All inputs
    are checked here, before any work; ``batch=True`` accepts several problems in ``y`` (one θ row each)."""
    defaults = preset(preset_name, algorithm) | {"boundary": "circular"}
    unknown = sorted(set(settings) - set(defaults))
    if unknown:
        raise ValueError(f"settings must be among {sorted(defaults)}, got {unknown}")
    s = {k: defaults[k] if settings.get(k) is None else settings[k] for k in defaults}
    y, theta = _check_common(y, prior, family, theta0, s["sigma_y"], s["boundary"], s["K"], s["K_x"], s["R"], batch)
    image_step = IMAGE_STEPS[algorithm](
        prior, y, s["sigma_y"], s["K_x"], s["gamma_x"], sigma_aux, s["boundary"], cg_tol, cg_max_iter
    )
    stepper = _ThetaStepper(family, y, s["boundary"], s["gamma_theta"], s["theta_steps"], s["theta_start"])
    return OuterLoop(image_step, y, family, theta, s["R"], stepper, s["boundary"], int(s["K_x"]))
