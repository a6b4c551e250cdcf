r"""The landscape of a prior and of the posterior (paper §2.2, §4, Theorem 4): plain functions.

* :func:`find_critical_point` — gradient descent x ← x − η σ_ε² ∇q(x) = x − η (x − D(x, σ_ε)) (§2.2).
* :func:`hessian_spectrum` — singular values of A = σ_ε² ∇²q(x) = I − J_D(x) (Fig. 4): ``dense`` (all d
  columns by batched products, float64 ``svdvals``) or ``block`` (LOBPCG, only the low end, far fewer than d
  products); intrinsic dimension = #{σ_i < threshold}, counted exactly.
* :func:`noiseless_profile` — ℓ_opt(θ) = q(H̃_θ⁻¹ ȳ) with h̃ = h + λδ and λ from the grid search of eq. (14).
* :func:`noisy_profile` — ℓ_y(x̂(θ), θ), x̂ by gradient descent with momentum, eq. (15), best of several starts.
* :func:`check_local_minimizer` — the quantities behind conditions (10)–(12) of Theorem 4 and the smallest
  eigenvalue of the Hessian of ℓ_ȳ at (x̄, θ̄); beyond the paper, which never evaluates them numerically.

Products with A use the prior's exact ``hvp`` when it has one (analytic priors), else autograd through
``denoise`` (VJPs; JVPs as VJPs of VJPs) — wrap network calls in ``sdpa_kernel(SDPBackend.MATH)`` for
attention models (done here).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from lit_blind._checks import check_choice, check_positive
from lit_blind.kernels import KernelFamily, perturbed_kernel
from lit_blind.likelihood import PotentialResult
from lit_blind.physics import adjoint, blur, data_fidelity, pinv
from lit_blind.priors import Prior


@contextmanager
def math_attention():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        yield


@dataclass
class CriticalPointResult:
    """``x`` the end points, ``grad_norm`` ‖∇q(x)‖ (B,), ``steps`` and ``potentials`` the recorded q."""

    x: Tensor
    grad_norm: Tensor
    steps: list[int]
    potentials: list[Tensor]


def find_critical_point(
    prior: Prior,
    x0: Tensor,
    *,
    sigma_eps: float | None = None,
    eta: float = 0.02,
    steps: int = 10_000,
    record_every: int | None = None,
    potential_fn: Callable[[Tensor], Tensor] | None = None,
    callback: Callable[[dict], None] | None = None,
) -> CriticalPointResult:
    r"""Gradient descent on q with the paper's scaled step (§2.2): :math:`x \leftarrow x - \eta\,(x - D(x, \sigma_\varepsilon))`.

    ``potential_fn(x) -> (B,)`` (e.g. ``lambda x: potential(prior, x).value``) is called every
    ``record_every`` steps and at the end.
    """
    x = prior.check_input(x0).clone()
    sigma = prior.check_sigma(prior.sigma_min if sigma_eps is None else sigma_eps, "sigma_eps")
    check_positive("eta", eta)
    if int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    rec_steps, pots = [], []
    for k in range(int(steps) + 1):
        if potential_fn is not None and (k == steps or (record_every and k % record_every == 0)):
            rec_steps.append(k)
            pots.append(potential_fn(x).detach())
        if k == steps:
            break
        with torch.no_grad():
            x = x - eta * (x - prior.denoise(x, sigma))
        if callback is not None:
            callback({"step": k, "x": x})
    with torch.no_grad():
        g = (x - prior.denoise(x, sigma)) / sigma**2
    return CriticalPointResult(x=x, grad_norm=g.flatten(1).norm(dim=1), steps=rec_steps, potentials=pots)


class _Operator:
    """A = σ_ε² ∇²q(x) = I − J_D(x) for one image, on flat float64 vectors."""

    def __init__(self, prior: Prior, x: Tensor, sigma: float) -> None:
        self.prior, self.sigma, self.shape = prior, sigma, x.shape
        self.x = x.detach().to(torch.float64)
        self.symmetric = prior.has_hvp
        self.d = x[0].numel()
        self.products = 0

    def matmat(self, v: Tensor) -> Tensor:
        """A V for V of shape (n, d)."""
        self.products += v.shape[0]
        vs = v.reshape(-1, *self.shape[1:])
        if self.symmetric:
            xs = self.x.expand(v.shape[0], *self.shape[1:])
            return (self.sigma**2 * self.prior.hvp(xs, vs, self.sigma)).reshape(v.shape)
        return self._jvp(vs).reshape(v.shape)

    def dense(self, chunk: int) -> Tensor:
        """A as a (d, d) matrix, ``chunk`` products at a time (memory d·chunk, not d² activations).

        Without an ``hvp``, row i of J_D is the VJP J_Dᵀ e_i: one forward of the network with its graph, then
        ``chunk`` VJPs at a time through one vmapped backward (``is_grads_batched``) — no double backward and
        no forward per direction, unlike the column-by-column JVPs of :meth:`matmat`."""
        eye = torch.eye(self.d, dtype=torch.float64, device=self.x.device)
        if self.symmetric:
            return torch.cat([self.matmat(eye[i : i + chunk]) for i in range(0, self.d, chunk)]).T
        rows = []
        with torch.enable_grad(), math_attention():
            xg = self.x.clone().requires_grad_(True)
            den = self.prior.denoise(xg, self.sigma).to(torch.float64)
            for i in range(0, self.d, chunk):
                e = eye[i : i + chunk].reshape(-1, *self.shape)
                try:
                    (g,) = torch.autograd.grad(den, xg, e, retain_graph=True, is_grads_batched=True)
                except RuntimeError:  # an op without a batching rule: one VJP per direction
                    g = torch.stack([torch.autograd.grad(den, xg, ei[None], retain_graph=True)[0][0] for ei in e])
                rows.append(g.reshape(len(e), self.d))
        self.products += self.d
        return eye - torch.cat(rows)

    def rmatmat(self, u: Tensor) -> Tensor:
        """Aᵀ U for U of shape (n, d)."""
        if self.symmetric:
            return self.matmat(u)
        self.products += u.shape[0]
        us = u.reshape(-1, *self.shape[1:])
        return self._vjp(us, create_graph=False).reshape(u.shape)

    def _vjp(self, us: Tensor, create_graph: bool) -> Tensor:
        with torch.enable_grad(), math_attention():
            xs = self.x.expand(us.shape[0], *self.shape[1:]).clone().requires_grad_(True)
            den = self.prior.denoise(xs, self.sigma).to(torch.float64)
            (g,) = torch.autograd.grad(den, xs, us, create_graph=create_graph)
        return us - g

    def _jvp(self, vs: Tensor) -> Tensor:
        with torch.enable_grad(), math_attention():
            u = torch.zeros_like(vs, requires_grad=True)
            xs = self.x.expand(vs.shape[0], *self.shape[1:]).clone().requires_grad_(True)
            den = self.prior.denoise(xs, self.sigma).to(torch.float64)
            (g,) = torch.autograd.grad(den, xs, u, create_graph=True)  # Jᵀu, linear in u
            (jv,) = torch.autograd.grad(g, u, vs)  # ∂(Jᵀu·v)/∂u = J v
        return vs - jv


@dataclass
class SpectrumResult:
    """``singular_values`` (ascending; all d for ``dense``, the k smallest for ``block``), ``dimension``
    (#values below ``threshold``), ``exact`` (False when every computed value is below the threshold, so
    the count is a lower bound), ``products`` (operator products used)."""

    singular_values: Tensor
    dimension: int
    threshold: float
    exact: bool
    products: int


def hessian_spectrum(
    prior: Prior,
    x: Tensor,
    *,
    sigma_eps: float | None = None,
    method: str = "dense",
    k: int = 32,
    threshold: float = 1e-5,
    chunk: int = 64,
    tol: float = 1e-7,
    maxiter: int = 100,
    seed: int = 0,
    float64: bool = True,
) -> SpectrumResult:
    r"""Singular values of :math:`A = \sigma_\varepsilon^2 \nabla^2 q(x)` at one image ``x`` ``(1, C, H, W)`` (Fig. 4).

    ``dense``: A column by column, ``chunk`` products at a time (memory d·chunk), then float64
    ``torch.linalg.svdvals``. ``block``: the ``k`` smallest singular values by LOBPCG (scipy; a block
    Krylov method, so repeated singular values are all found — single-vector Lanczos/ARPACK misses copies)
    on A when it is symmetric (exact priors), on AᵀA otherwise — far fewer than d products when k ≪ d and the
    small singular values are separated from the bulk. AᵀA squares the small singular values: with a float32
    network (rounding ≈ 1e-7 relative) it cannot tell σ = 1e-5 from 0 and the iteration stalls, so the block
    mode runs a float64 copy of the network (``float64=True``, the default; about twice the cost per
    product on a CPU). ``dense`` uses the network as it is: its singular values are accurate to the
    network's rounding times ‖A‖, well below the paper's 1e-5.
    """
    check_choice("method", method, ("dense", "block"))
    x = prior.check_input(x)
    if x.shape[0] != 1:
        raise ValueError(f"x must hold one image, got shape {tuple(x.shape)}")
    sigma = prior.check_sigma(prior.sigma_min if sigma_eps is None else sigma_eps, "sigma_eps")
    if method == "block" and not 1 <= k < x[0].numel() // 3:
        raise ValueError(f"k must lie in [1, d/3) = [1, {x[0].numel() // 3}), got {k}")
    if method == "block" and float64 and any(p.dtype != torch.float64 for p in prior.parameters()):
        prior = copy.deepcopy(prior).to(torch.float64)
    op = _Operator(prior, x, sigma)
    d = op.d
    if method == "dense":
        sv = torch.linalg.svdvals(op.dense(chunk)).flip(0)
        exact = True
    else:
        from scipy.sparse.linalg import LinearOperator, lobpcg

        gram = not op.symmetric

        def apply(v: np.ndarray) -> np.ndarray:
            t = torch.from_numpy(np.ascontiguousarray(v.T, dtype=np.float64)).to(x.device)
            out = op.matmat(t)
            if gram:
                out = op.rmatmat(out)
            return out.cpu().numpy().T

        rng = np.random.default_rng(seed)
        v = rng.standard_normal((d, 1))
        for _ in range(20):  # power iterations: an upper bound c of the spectrum of G = A or AᵀA
            w = apply(v)
            top = float(np.linalg.norm(w))
            v = w / top
        c = 1.05 * top
        # the small end of G is the top of c·I − G: well separated from the bulk, so the block iteration
        # converges in few products (the smallest end itself converges slowly without a preconditioner)
        m = LinearOperator(
            (d, d),
            matvec=lambda u: c * u - apply(u[:, None])[:, 0],
            matmat=lambda u: c * u - apply(u),
            dtype=np.float64,
        )
        mu = lobpcg(m, rng.standard_normal((d, k)), largest=True, tol=tol, maxiter=maxiter)[0]
        low = np.sort(c - mu)
        sv = torch.from_numpy(np.sqrt(np.clip(low, 0, None)) if gram else np.abs(low)).sort().values
        exact = bool((sv >= threshold).any())
    return SpectrumResult(
        singular_values=sv,
        dimension=int((sv < threshold).sum()),
        threshold=threshold,
        exact=exact,
        products=op.products,
    )


def find_lambda(
    x: Tensor,
    family: KernelFamily,
    thetas: Sequence[float],
    grid: Sequence[float] = tuple(10.0**e for e in range(-8, 0)),
    tol: float = 1e-5,
) -> float:
    """Eq. (14): the smallest λ of ``grid`` such that ‖x − H̃_θ⁻¹ H̃_θ x‖ ≤ tol for every θ (h̃ = h + λδ)."""
    th = torch.tensor(list(thetas), dtype=x.dtype)[:, None]
    h = family(th).to(x.dtype)
    for lam in sorted(grid):
        ht = perturbed_kernel(h, lam)
        err = (pinv(blur(x, ht), ht) - x).flatten(1).norm(dim=1).max().item()
        if err <= tol:
            return float(lam)
    raise ValueError(f"no lambda in grid {list(grid)} reaches ‖x − H̃⁻¹H̃x‖ ≤ {tol}; extend the grid")


@dataclass
class ProfileResult:
    """ℓ(θ) on a grid, its argmin and whether a local minimum lies within one grid step of θ̄ (with its depth:
    the smaller rise to the neighbours)."""

    thetas: list[float]
    values: list[float]
    lam: float | None
    argmin: float
    local_min_near_truth: bool
    depth: float
    stderr: list[float] | None = None


def _summarize_profile(thetas, values, theta_bar, lam) -> ProfileResult:
    v = list(values)
    i_min = int(np.argmin(v))
    step = thetas[1] - thetas[0] if len(thetas) > 1 else 0.0
    local, depth = False, 0.0
    for i in range(len(v)):
        left = v[i - 1] if i > 0 else math.inf
        right = v[i + 1] if i + 1 < len(v) else math.inf
        if v[i] < left and v[i] < right and abs(thetas[i] - theta_bar) <= step + 1e-12:
            local, depth = True, min(left, right) - v[i]
    return ProfileResult(list(thetas), v, lam, thetas[i_min], local, depth)


def noiseless_profile(
    potential_fn: Callable[[Tensor], Tensor],
    x_bar: Tensor,
    family: KernelFamily,
    thetas: Sequence[float],
    theta_bar: float,
    lam: float | None = None,
) -> ProfileResult:
    r"""Noise-free ℓ_opt(θ) = q(H̃_θ⁻¹ ȳ), ȳ = h̃_θ̄ ⋆ x̄, circular blur, h̃ = h + λδ (§4.1, Fig. 9).

    ``potential_fn(x) -> (B,)`` evaluates q on a batch (the ODE engine with shared probes, or an analytic
    ``-log_prob``); λ defaults to :func:`find_lambda` on x̄ over the grid ∪ {θ̄}.
    """
    thetas = [float(t) for t in thetas]
    if lam is None:
        lam = find_lambda(x_bar, family, thetas + [float(theta_bar)])
    dtype = x_bar.dtype
    h_bar = perturbed_kernel(family(torch.tensor([[float(theta_bar)]], dtype=dtype)).to(dtype), lam)
    y_bar = blur(x_bar, h_bar)
    ht = perturbed_kernel(family(torch.tensor(thetas, dtype=dtype)[:, None]).to(dtype), lam)
    values = potential_fn(pinv(y_bar, ht)).tolist()
    return _summarize_profile(thetas, values, float(theta_bar), lam)


def noisy_profile(
    prior: Prior,
    potential_fn: Callable[[Tensor], Tensor],
    y: Tensor,
    family: KernelFamily,
    thetas: Sequence[float],
    theta_bar: float,
    *,
    sigma_y: float,
    starts: Sequence[str] = ("y", "pinv"),
    step: float = 0.5,
    momentum: float = 0.9,
    iterations: int = 200,
    sigma_eps: float | None = None,
) -> ProfileResult:
    r"""Noisy ℓ_opt(θ) ≈ ℓ_y(x̂(θ), θ) (§4.2, Fig. 10), x̂ by gradient descent with momentum, eq. (15):

    .. math:: x_{k+1} = x_k - s\,\nabla_x \ell_y(x_k, \theta) + \beta (x_k - x_{k-1}),\quad
              \nabla_x \ell_y = H_\theta^\top(H_\theta x - y) - \sigma_y^2 s(x, \sigma_\varepsilon)

    from each start (``y``, ``pinv`` = H_θ⁻¹y with h + 1e-3δ), keeping the end point of lowest ℓ_y (q by
    ``potential_fn``: a (B,) tensor, or a :class:`~lit_blind.likelihood.PotentialResult` whose standard error
    over probes, times σ_y², becomes the profile's ``stderr``). ``step`` is in units of 1/L with
    L = 1 + (σ_y/σ_ε)² (the Lipschitz bound).
    """

    sigma = prior.check_sigma(prior.sigma_min if sigma_eps is None else sigma_eps, "sigma_eps")
    for s in starts:
        check_choice("starts", s, ("y", "pinv"))
    thetas = [float(t) for t in thetas]
    th = torch.tensor(thetas, dtype=y.dtype)[:, None]
    h = family(th).to(y.dtype)
    ys = y.expand(len(thetas), *y.shape[1:])
    s_eff = step / (1 + (sigma_y / sigma) ** 2)
    best = torch.full((len(thetas),), math.inf, dtype=torch.float64)
    best_se = torch.zeros(len(thetas), dtype=torch.float64)
    for start in starts:
        x = ys.clone() if start == "y" else pinv(ys, perturbed_kernel(h, 1e-3))
        prev = x.clone()
        for _ in range(int(iterations)):
            with torch.no_grad():
                g = adjoint(blur(x, h) - ys, h) - sigma_y**2 * prior.score(x, sigma)
            x, prev = x - s_eff * g + momentum * (x - prev), x
        q = potential_fn(x)
        q, se = (q.value, q.stderr) if isinstance(q, PotentialResult) else (q, None)
        ell = data_fidelity(x, ys, h).double() + sigma_y**2 * q.double()
        if se is not None:
            best_se = torch.where(ell < best, sigma_y**2 * se.double(), best_se)
        best = torch.minimum(best, ell)
    prof = _summarize_profile(thetas, best.tolist(), float(theta_bar), None)
    prof.stderr = best_se.tolist() if se is not None else None
    return prof


def check_local_minimizer(
    prior: Prior,
    x_bar: Tensor,
    theta_bar: Tensor,
    family: KernelFamily,
    *,
    sigma_y: float = 0.01,
    sigma_eps: float | None = None,
    kernel_tol: float = 1e-6,
    tol: float = 1e-9,
    chunk: int = 64,
) -> dict:
    r"""Theorem 4 at (x̄, θ̄) for ℓ_ȳ(x, θ) = ½‖h_θ ⋆ x − ȳ‖² + σ_y² q(x), ȳ = h_θ̄ ⋆ x̄ (circular blur).

    Returns the gradient norm of q at x̄ (a critical point needs ≈ 0), the smallest eigenvalue of σ_ε²∇²q
    (second order: ≥ 0), and for ker ∇²q = span of the eigenvectors with eigenvalue ≤ ``kernel_tol``·max:
    (10) the smallest singular value of H_θ̄ on ker ∇²q, (11) the smallest singular value of J(θ̄), (12) the
    largest cosine of the principal angles between h_θ̄ ⋆ ker ∇²q and Im J(θ̄) (1 = they intersect); and
    the smallest eigenvalue of the full Hessian of ℓ_ȳ at (x̄, θ̄): ``strict_local_minimizer`` when > ``tol``.
    Dense linear algebra: for small images (d ≲ 4096); the Hessian of q is built ``chunk`` products at a time
    (one batch of d double-backward passes through a network would not fit in memory).
    """
    x_bar = prior.check_input(x_bar).to(torch.float64)
    sigma = prior.check_sigma(prior.sigma_min if sigma_eps is None else sigma_eps, "sigma_eps")
    theta_bar = family.check_theta(torch.as_tensor(theta_bar, dtype=torch.float64).reshape(1, -1))
    d = x_bar[0].numel()
    spec_op = _Operator(prior, x_bar, sigma)
    a = spec_op.dense(chunk)
    hess_q = 0.5 * (a + a.T) / sigma**2  # ∇²q, symmetrised
    evals, evecs = torch.linalg.eigh(hess_q * sigma**2)
    ker = evecs[:, evals <= kernel_tol * evals.abs().max()]
    h = family(theta_bar).to(torch.float64)
    shape = x_bar.shape

    def blur_flat(v: Tensor) -> Tensor:
        return blur(v.T.reshape(-1, *shape[1:]), h).reshape(v.shape[1], d).T

    out = {
        "grad_norm": ((x_bar - prior.denoise(x_bar, sigma)) / sigma**2).norm().item(),
        "min_eig_scaled_hessian_q": evals.min().item(),
        "kernel_dim": int(ker.shape[1]),
    }
    jac = torch.autograd.functional.jacobian(
        lambda t: blur(x_bar, family(t.reshape(1, -1)).to(torch.float64)).flatten(), theta_bar.flatten()
    )
    out["cond11_min_sv_J"] = torch.linalg.svdvals(jac).min().item()
    if ker.shape[1]:
        hk = blur_flat(ker)
        out["cond10_min_sv_H_on_ker"] = torch.linalg.svdvals(hk).min().item()
        q1, _ = torch.linalg.qr(hk)
        q2, _ = torch.linalg.qr(jac)
        out["cond12_max_cos_angle"] = torch.linalg.svdvals(q1.T @ q2).max().item()
    else:
        out["cond10_min_sv_H_on_ker"] = None
        out["cond12_max_cos_angle"] = 0.0
    # Hessian of ℓ_ȳ in (x, θ) at (x̄, θ̄): [[HᵀH + σ_y²∇²q, B], [Bᵀ, JᵀJ]] + residual terms (zero at ȳ)
    hx = blur_flat(torch.eye(d, dtype=torch.float64))
    top_left = hx.T @ hx + sigma_y**2 * hess_q
    top_right = hx.T @ jac  # ∂²ℓ/∂x∂θ = Hᵀ J at zero residual
    full = torch.cat([torch.cat([top_left, top_right], 1), torch.cat([top_right.T, jac.T @ jac], 1)], 0)
    out["min_eig_hessian_l"] = torch.linalg.eigvalsh(0.5 * (full + full.T)).min().item()
    out["strict_local_minimizer"] = bool(out["min_eig_hessian_l"] > tol and out["min_eig_scaled_hessian_q"] > -1e-9)
    return out
