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
from lit_blind.kernels import KernelFamily
from lit_blind.physics import BOUNDARIES, data_fidelity, prox_data_unchecked
from lit_blind.priors import Prior


@dataclass
class DeblurResult:
    """Estimated image ``(1, C, H', W')``, kernel ``(1, 1, k, k)``, θ ``(1, P)`` and the iteration history."""

    image: Tensor
    kernel: Tensor
    theta: Tensor
    history: dict = field(default_factory=dict)


def _check_common(y, prior, fam, theta0, sigma_y, boundary, K, K_x, R) -> tuple[Tensor, Tensor]:
    y = check_image("y", y, channels=prior.channels)
    if y.shape[0] != 1:
        raise ValueError(f"y must hold one image (batch 1), got shape {tuple(y.shape)}")
    check_positive("sigma_y", sigma_y)
    check_choice("boundary", boundary, BOUNDARIES)
    if not isinstance(fam, KernelFamily):
        raise ValueError(f"family must be a KernelFamily, got {type(fam).__name__}")
    if fam.size > min(y.shape[-2:]):
        raise ValueError(f"kernel size {fam.size} must not exceed the image size {tuple(y.shape[-2:])}")
    theta0 = fam.check_theta(torch.as_tensor(theta0, dtype=torch.float64).reshape(1, -1))
    for name, v in (("K", K), ("K_x", K_x), ("R", R)):
        if int(v) != v or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return y, theta0


def x_init(y: Tensor, k: int, boundary: str) -> Tensor:
    return y.clone() if boundary == "circular" else F.pad(y, (k // 2,) * 4, mode="replicate")


class _ThetaStepper:
    """Projected gradient steps on θ for f(x, θ) = ½‖h_θ ⋆ x − y‖² (x fixed).

    ``gamma_theta`` a number: the paper's fixed step. ``"armijo"``: backtracking on the projected step
    (sufficient decrease f(θ⁺) ≤ f(θ) + ⟨∇f, θ⁺ − θ⟩ + ‖θ⁺ − θ‖²/(2γ)), the step doubling after each
    success; each trial costs one blur, no score evaluation. ``steps`` gradient steps per outer iteration,
    none before outer iteration ``start``.
    """

    def __init__(
        self, fam: KernelFamily, y: Tensor, boundary: str, gamma_theta: float | str, steps: int, start: int = 0
    ) -> None:
        if isinstance(gamma_theta, str):
            check_choice("gamma_theta", gamma_theta, ("armijo",))
            self.armijo, self.gamma = True, 1.0
        else:
            self.armijo, self.gamma = False, check_positive("gamma_theta", gamma_theta)
        if int(steps) != steps or steps < 1:
            raise ValueError(f"theta_steps must be a positive integer, got {steps!r}")
        if int(start) != start or start < 0:
            raise ValueError(f"theta_start must be a non-negative integer, got {start!r}")
        self.fam, self.y, self.boundary, self.steps, self.start = fam, y, boundary, int(steps), int(start)

    def f(self, theta: Tensor, x: Tensor) -> Tensor:
        return data_fidelity(x, self.y, self.fam(theta), self.boundary).sum()

    def __call__(self, theta: Tensor, x: Tensor, iteration: int) -> tuple[Tensor, float]:
        x = x.detach()
        for _ in range(self.steps if iteration >= self.start else 0):
            th = theta.detach().requires_grad_(True)
            f = self.f(th, x)
            (g,) = torch.autograd.grad(f, th)
            new = self.fam.project(theta - self.gamma * g).detach()
            if self.armijo:
                with torch.no_grad():
                    for _ in range(60):
                        d = new - theta
                        if self.f(new, x) <= f + (g * d).sum() + d.pow(2).sum() / (2 * self.gamma):
                            break
                        self.gamma /= 2
                        new = self.fam.project(theta - self.gamma * g).detach()
                    self.gamma *= 2
            theta = new
        with torch.no_grad():
            return theta, self.f(theta, x).item()


def _run(
    image_step: Callable[[Tensor, Tensor], Tensor],
    y: Tensor,
    fam: KernelFamily,
    theta: Tensor,
    K: int,
    R: int,
    theta_step: _ThetaStepper,
    boundary: str,
    evals_per_outer: int,
    snapshot_every: int,
    callback,
) -> DeblurResult:
    """The outer loop shared by Algorithms 1 and 2: reset, image step, θ step, history."""
    hist: dict = {"theta": [], "data_fidelity": [], "score_evals": [], "seconds": [], "kernels": [], "images": []}
    x = x_init(y, fam.size, boundary)
    t0, evals = time.perf_counter(), 0
    for k in range(int(K)):
        if k % int(R) == 0:
            x = x_init(y, fam.size, boundary)
        h = fam(theta).detach().to(y.dtype)
        x = image_step(x, h)
        evals += evals_per_outer
        size = float(x.abs().max())  # one host sync per outer iteration, not per image step
        if not math.isfinite(size) or size > 1e6 * max(1.0, float(y.abs().max())):
            raise ValueError(
                f"image step of outer iteration {k} diverged (max |x| = {size:.3g} for y in [0, 1]): "
                "is sigma_y plausible for the image? a smaller gamma_x keeps the step stable"
            )
        theta, f = theta_step(theta, x, k)
        hist["theta"].append(theta[0].tolist())
        hist["data_fidelity"].append(f)
        hist["score_evals"].append(evals)
        hist["seconds"].append(time.perf_counter() - t0)
        if k % snapshot_every == 0 or k == K - 1:
            hist["kernels"].append((k, h.cpu()))
            hist["images"].append((k, x.detach().cpu()))
        if callback is not None:
            callback({"iteration": k, "x": x, "theta": theta, "kernel": h, "data_fidelity": f, "score_evals": evals})
    return DeblurResult(image=x.detach(), kernel=fam(theta).detach(), theta=theta, history=hist)


def proximal_gradient_step(
    prior, y, sigma_y, K_x, gamma_x, sigma_eps=None, boundary="circular", cg_tol=1e-5, cg_max_iter=100
):
    """The image update of Algorithm 1 (lines 5–7) as a function (x, h) ↦ x: K_x proximal-gradient steps
    x ← prox_{γ_x f(·,θ)}(x + γ_x σ_y² s(x, σ_ε)). Works on a batch of independent problems."""
    check_positive("gamma_x", gamma_x)
    sigma_eps = prior.check_sigma(prior.sigma_min if sigma_eps is None else sigma_eps, "sigma_eps")

    def image_step(x: Tensor, h: Tensor) -> Tensor:  # inputs checked once by the caller; _run checks x per outer step
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

    def image_step(x: Tensor, h: Tensor) -> Tensor:  # inputs checked once by the caller; _run checks x per outer step
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
    K: int = 400,
    K_x: int = 100,
    gamma_x: float = 0.01,
    gamma_theta: float | str = 0.001,
    theta_steps: int = 1,
    theta_start: int = 0,
    R: int = 100,
    sigma_eps: float | None = None,
    boundary: str = "circular",
    cg_tol: float = 1e-5,
    cg_max_iter: int = 100,
    snapshot_every: int = 20,
    callback: Callable[[dict], None] | None = None,
) -> DeblurResult:
    r"""Algorithm 1 of the paper (alternating minimisation with proximal-gradient image steps).

    .. math:: x \leftarrow \mathrm{prox}_{\gamma_x f(\cdot,\theta)}\big(x + \gamma_x\sigma_y^2 s(x, \sigma_\varepsilon)\big),
              \qquad \theta \leftarrow \Pi\big(\theta - \gamma_\theta \nabla_\theta f(x, \theta)\big)

    Defaults are the paper's (K = 400, K_x = 100, γ_x = 0.01, γ_θ = 0.001, R = 100); σ_ε defaults to the
    prior's ``sigma_min``. Beyond the paper: ``gamma_theta="armijo"`` (backtracking θ steps, scale-free)
    and ``theta_steps`` > 1 (several cheap θ steps per outer iteration: they cost blurs, not score
    evaluations); ``theta_start`` > 0 holds θ for that many outer iterations, so that x, which starts as
    the blurry y, is deblurred under θ₀ before the first θ step (a kernel fitted to x ≈ y is the Dirac).
    """
    y, theta = _check_common(y, prior, family, theta0, sigma_y, boundary, K, K_x, R)
    image_step = proximal_gradient_step(prior, y, sigma_y, K_x, gamma_x, sigma_eps, boundary, cg_tol, cg_max_iter)
    stepper = _ThetaStepper(family, y, boundary, gamma_theta, theta_steps, theta_start)
    return _run(image_step, y, family, theta, K, R, stepper, boundary, int(K_x), snapshot_every, callback)


def douglas_rachford(
    y: Tensor,
    prior: Prior,
    family: KernelFamily,
    theta0: Tensor,
    *,
    sigma_y: float,
    sigma_denoiser: float | None = None,
    K: int = 400,
    K_x: int = 100,
    gamma_x: float = 1.0,
    gamma_theta: float | str = 0.001,
    theta_steps: int = 1,
    theta_start: int = 0,
    R: int = 100,
    boundary: str = "circular",
    cg_tol: float = 1e-5,
    cg_max_iter: int = 100,
    snapshot_every: int = 20,
    callback: Callable[[dict], None] | None = None,
) -> DeblurResult:
    r"""Algorithm 2 of the paper (appendix B): Douglas–Rachford image steps with a denoiser.

    .. math:: z = D(x, \sigma_d),\qquad x \leftarrow x + \mathrm{prox}_{\gamma_x f(\cdot,\theta)}(2z - x) - z

    ``prior.denoise`` is the denoiser (a diffusion prior through Tweedie, or a plug-and-play denoiser);
    σ_d defaults to σ_y. As in the paper, x (the Douglas–Rachford governing sequence) is carried over and
    returned. ``gamma_theta``, ``theta_steps`` and ``theta_start`` as in :func:`alternating`.
    """
    y, theta = _check_common(y, prior, family, theta0, sigma_y, boundary, K, K_x, R)
    image_step = douglas_rachford_step(prior, y, sigma_y, K_x, gamma_x, sigma_denoiser, boundary, cg_tol, cg_max_iter)
    stepper = _ThetaStepper(family, y, boundary, gamma_theta, theta_steps, theta_start)
    return _run(image_step, y, family, theta, K, R, stepper, boundary, int(K_x), snapshot_every, callback)
