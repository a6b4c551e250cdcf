"""Blur-kernel families θ ↦ h_θ (paper §2.3, §5.1, §5.2) and kernel helpers.

Every family is an ``nn.Module`` mapping θ of shape ``(B, P)`` to kernels ``(B, 1, k, k)`` (odd k,
origin at the centre pixel, h ≥ 0, Σh = 1), differentiable in θ and batched. Build one by name with
:func:`family`.

The four 1-D families of §2.3 (``gaussian``, ``motion``, ``defocus``, ``airy``) take θ ∈ [0, θ_max]
(θ_max = 5 by default), give **h₀ = δ exactly** and widen with θ. They differ only in their profile
function; the common part (normalisation, δ at θ = 0, range checks) lives in :class:`OneParameterFamily`.

Decisions that differ from the authors' code (``putils/convolution.py``), written by hand because no
library has these families:

* ``motion`` / ``defocus``: flat profile of half-length / radius θ with the smooth ``bump`` edge, then the
  paper's 0.5-px Gaussian smoothing. The edge width and the smoothing ramp up as ``tanh(2θ)`` so that
  h_θ → δ continuously as θ → 0 (the authors jump from δ at θ = 0 to a 3-px kernel at θ = 0.5). For
  θ ≥ 1 the kernels equal the authors' up to this factor (tanh 2 = 0.96).
* ``airy``: θ is the radius of the first dark ring in pixels, whatever the kernel size (the authors'
  radius is 31·θ/(2π²) px and scales with k). J₁ has no autograd in torch, so it is wrapped in a small
  ``autograd.Function`` whose derivative uses J₀ (and vice versa): differentiable to any order.
* ``simplex``: exact sort-based Euclidean projection (Duchi et al. 2008), with the threshold computed per
  batch element (the authors' and deepinv's example mix thresholds across the batch).
* ``zernike``: deepinv's ``DiffractionBlurGenerator`` (eq. 16), θ = Zernike coefficients in waves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_blind._checks import check_choice, check_positive, check_tensor

J1_FIRST_ZERO = 3.8317059702075125


def _check_size(size: int) -> int:
    if int(size) != size or size < 1 or size % 2 == 0:
        raise ValueError(f"size must be an odd positive integer, got {size!r}")
    return int(size)


def dirac(size: int, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """The centred Dirac δ, shape ``(1, 1, size, size)``."""
    size = _check_size(size)
    h = torch.zeros(1, 1, size, size, dtype=dtype, device=device)
    h[..., size // 2, size // 2] = 1.0
    return h


def uniform_kernel(size: int, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """The "large" initialisation of §5.2: the uniform kernel 1/k², shape ``(1, 1, k, k)``."""
    size = _check_size(size)
    return torch.full((1, 1, size, size), 1.0 / size**2, dtype=dtype, device=device)


def gaussian_kernel(size: int, std: float, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    r"""The "small" initialisation of §5.2: :math:`h \propto e^{-r^2/(2\,\mathrm{std}^2)}`, ``(1, 1, k, k)``."""
    size = _check_size(size)
    std = check_positive("std", std)
    r = torch.arange(size, dtype=dtype, device=device) - size // 2
    g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * std**2))
    return (g / g.sum())[None, None]


def perturbed_kernel(h: Tensor, lam: float | Tensor) -> Tensor:
    r"""The λ-perturbed kernel of §4.1, :math:`\tilde h = h + \lambda\delta` (not renormalised: Σh̃ = 1 + λ).

    ``lam`` is a number or a tensor of shape ``(B,)``.
    """
    h = check_tensor("h", h, ndim=4)
    k = h.shape[-1]
    if h.shape[-2] != k or k % 2 == 0:
        raise ValueError(f"h must be square with an odd size, got shape {tuple(h.shape)}")
    lam = torch.as_tensor(lam, dtype=h.dtype, device=h.device).reshape(-1, 1, 1, 1)
    if not bool(torch.isfinite(lam).all()):
        raise ValueError(f"lam must be finite, got {lam.flatten().tolist()}")
    return h + lam * dirac(k, h.dtype, h.device)


def project_simplex(v: Tensor) -> Tensor:
    r"""Euclidean projection of each row of ``v`` (shape ``(B, P)``) onto the probability simplex.

    .. math:: \Pi(v) = \max(v - \tau, 0),\quad \tau = \frac{\sum_{j\le\rho} u_j - 1}{\rho}

    with u = sort(v) descending and ρ the number of j with u_j − (Σ_{i≤j} u_i − 1)/j > 0 (Duchi et al.
    2008), computed independently for every row.
    """
    v = check_tensor("v", v, ndim=2)
    u, _ = torch.sort(v, dim=1, descending=True)
    css = torch.cumsum(u, dim=1) - 1
    j = torch.arange(1, v.shape[1] + 1, dtype=v.dtype, device=v.device)
    rho = (u - css / j > 0).sum(dim=1, keepdim=True)  # >= 1 in exact arithmetic: the largest entry qualifies
    if bool((rho == 0).any()):  # only when rounding swamps the sum (entries of wildly different magnitudes)
        raise ValueError(
            f"v must have entries of comparable magnitude to project, got max |v| {float(v.abs().max()):.3g}"
        )
    tau = torch.gather(css, 1, rho - 1) / rho.to(v.dtype)
    return torch.clamp(v - tau, min=0)


class KernelFamily(nn.Module):
    """θ ↦ h_θ: ``forward(theta (B, P)) -> (B, 1, size, size)``, differentiable in θ.

    ``theta_min`` / ``theta_max`` bound every coordinate of θ when not None; θ outside raises
    ``ValueError``. :meth:`project` maps any θ to the feasible set (used by projected-gradient steps).
    """

    n_params: int = 1
    theta_min: float | None = None
    theta_max: float | None = None

    def __init__(self, size: int = 31) -> None:
        super().__init__()
        self.size = _check_size(size)

    def forward(self, theta: Tensor) -> Tensor:
        return self._kernel(self.check_theta(theta))

    def check_theta(self, theta: Tensor) -> Tensor:
        theta = check_tensor("theta", theta, ndim=2)
        if theta.shape[1] != self.n_params:
            raise ValueError(f"theta must have shape (B, {self.n_params}), got {tuple(theta.shape)}")
        lo, hi = self.theta_min, self.theta_max
        if (lo is not None and bool((theta < lo).any())) or (hi is not None and bool((theta > hi).any())):
            raise ValueError(
                f"theta must lie in [{lo}, {hi}] for {type(self).__name__}, "
                f"got values in [{float(theta.min())}, {float(theta.max())}]"
            )
        return theta

    @property
    def name(self) -> str:
        """The name :func:`family` builds this class by (``motion``, …), else the class name: the key of result
        rows and summaries."""
        return next((n for n, cls in _FAMILIES.items() if type(self) is cls), type(self).__name__)

    def project(self, theta: Tensor) -> Tensor:
        """Projection onto the feasible set: a clamp to [theta_min, theta_max] (identity if unbounded)."""
        if self.theta_min is None and self.theta_max is None:
            return theta
        return torch.clamp(theta, min=self.theta_min, max=self.theta_max)

    def _kernel(self, theta: Tensor) -> Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"size={self.size}, n_params={self.n_params}"


def _bump(t: Tensor) -> Tensor:
    """Smooth step: 1 for t ≤ 0, exp(1 − 1/(1 − t²)) on (0, 1), 0 for t ≥ 1 (C^∞, NaN-free gradients)."""
    inside = (t > 0) & (t < 0.999)  # at t = 0.999 the value is e^-499: numerically zero
    ts = torch.where(inside, t, torch.full_like(t, 0.5))
    val = torch.exp(1 - 1 / (1 - ts**2))
    return torch.where(t <= 0, torch.ones_like(t), torch.where(inside, val, torch.zeros_like(t)))


class OneParameterFamily(KernelFamily):
    """A 1-D family of §2.3: θ ∈ [0, θ_max], h₀ = δ, h_θ ∝ ``profile(θ)`` for θ > 0."""

    n_params = 1
    theta_min = 0.0

    def __init__(self, size: int = 31, theta_max: float = 5.0) -> None:
        super().__init__(size)
        self.theta_max = check_positive("theta_max", theta_max)
        r = torch.arange(self.size, dtype=torch.float64) - self.size // 2
        self.register_buffer("grid_y", r[:, None].expand(self.size, self.size).clone(), persistent=False)
        self.register_buffer("grid_x", r[None, :].expand(self.size, self.size).clone(), persistent=False)

    def profile(self, theta: Tensor) -> Tensor:
        """Unnormalised non-negative kernel ``(B, 1, k, k)`` for θ > 0 (``theta`` of shape (B, 1, 1, 1))."""
        raise NotImplementedError

    def _kernel(self, theta: Tensor) -> Tensor:
        t = theta.reshape(-1, 1, 1, 1)
        positive = t > 1e-8  # below, every profile equals δ to machine precision (and θ² may underflow)
        t_safe = torch.where(positive, t, torch.ones_like(t))
        h = self.profile(t_safe)
        h = h / h.sum((-2, -1), keepdim=True)
        return torch.where(positive, h, dirac(self.size, h.dtype, h.device))

    def _grid(self, like: Tensor) -> tuple[Tensor, Tensor]:
        return self.grid_x.to(like.dtype), self.grid_y.to(like.dtype)


def _smooth(h: Tensor, std: Tensor) -> Tensor:
    """Separable 5-tap Gaussian smoothing of each kernel ``(B, 1, k, k)`` with its own std ``(B, 1, 1, 1)``.

    std → 0 gives the identity (the centre tap always has weight 1 before normalisation).
    """
    b = h.shape[0]
    j = torch.arange(-2, 3, dtype=h.dtype, device=h.device)
    g = torch.exp(-(j**2) / (2 * std.reshape(b, 1) ** 2))
    g = g / g.sum(1, keepdim=True)
    x = h.reshape(1, b, *h.shape[-2:])
    x = F.conv2d(x, g.reshape(b, 1, 5, 1), padding=(2, 0), groups=b)
    x = F.conv2d(x, g.reshape(b, 1, 1, 5), padding=(0, 2), groups=b)
    return x.reshape(h.shape)


class GaussianFamily(OneParameterFamily):
    r"""Isotropic Gaussian blur, θ = standard deviation in pixels: :math:`h_\theta \propto e^{-r^2/(2\theta^2)}`."""

    def profile(self, theta: Tensor) -> Tensor:
        x, y = self._grid(theta)
        return torch.exp(-(x**2 + y**2) / (2 * theta**2))


class MotionFamily(OneParameterFamily):
    r"""Linear motion blur, θ = half-length in pixels, direction ``angle`` (degrees, counter-clockwise).

    Flat along the segment |u| ≤ θ with a smooth ``bump`` edge of width tanh 2θ, one pixel wide across
    (linear interpolation in v), then Gaussian smoothing of std 0.5·tanh 2θ px.
    """

    def __init__(self, size: int = 31, theta_max: float = 5.0, angle: float = 0.0) -> None:
        super().__init__(size, theta_max)
        self.angle = float(angle)

    def profile(self, theta: Tensor) -> Tensor:
        x, y = self._grid(theta)
        phi = math.radians(self.angle)
        u = x * math.cos(phi) - y * math.sin(phi)  # rows grow downwards
        v = x * math.sin(phi) + y * math.cos(phi)
        ramp = torch.tanh(2 * theta)
        h = _bump((u.abs() - theta) / ramp) * torch.clamp(1 - v.abs(), min=0)
        return _smooth(h, 0.5 * ramp)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, angle={self.angle}"


class DefocusFamily(OneParameterFamily):
    """Defocus (uniform disc) blur, θ = disc radius in pixels, smooth edge of width tanh 2θ, then
    Gaussian smoothing of std 0.5·tanh 2θ px."""

    def profile(self, theta: Tensor) -> Tensor:
        x, y = self._grid(theta)
        ramp = torch.tanh(2 * theta)
        h = _bump((torch.sqrt(x**2 + y**2) - theta) / ramp)
        return _smooth(h, 0.5 * ramp)


class _BesselJ0(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: Tensor) -> Tensor:
        ctx.save_for_backward(z)
        return torch.special.bessel_j0(z)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (z,) = ctx.saved_tensors
        return -grad * _BesselJ1.apply(z)


class _BesselJ1(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: Tensor) -> Tensor:
        ctx.save_for_backward(z)
        return torch.special.bessel_j1(z)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (z,) = ctx.saved_tensors
        # J1'(z) = (J0(z) - J2(z)) / 2: no division by z, so it is finite at the kernel centre
        return grad * 0.5 * (_BesselJ0.apply(z) - _besselj2(z))


def _besselj2(z: Tensor) -> Tensor:
    zs = torch.where(z.abs() > 1e-6, z, torch.ones_like(z))
    return torch.where(z.abs() > 1e-6, 2 * _BesselJ1.apply(zs) / zs - _BesselJ0.apply(zs), z**2 / 8)


class AiryFamily(OneParameterFamily):
    r"""Airy disc, θ = radius of the first dark ring in pixels (independent of the kernel size).

    .. math:: h_\theta(r) \propto \Big(\frac{2 J_1(a r)}{a r}\Big)^2,\qquad a = j_{1,1}/\theta,\ j_{1,1} = 3.8317

    integrated over each pixel with ``subsamples``² sub-pixel samples (a box sensor; default 3): point
    sampling (``subsamples=1``) makes the second moment oscillate as the rings cross pixel centres, the
    pixel integral makes it increase with θ. An odd count keeps a sample at r = 0, hence h → δ as θ → 0.
    """

    def __init__(self, size: int = 31, theta_max: float = 5.0, subsamples: int = 3) -> None:
        super().__init__(size, theta_max)
        if int(subsamples) != subsamples or subsamples < 1 or subsamples % 2 == 0:
            raise ValueError(f"subsamples must be an odd positive integer, got {subsamples!r}")
        self.subsamples = int(subsamples)

    def profile(self, theta: Tensor) -> Tensor:
        n, k = self.subsamples, self.size
        c = self.grid_x[0].to(theta.dtype)
        off = (torch.arange(n, dtype=c.dtype, device=c.device) + 0.5) / n - 0.5
        cs = (c[:, None] + off[None, :]).reshape(k * n)
        r = torch.sqrt(cs[None, :] ** 2 + cs[:, None] ** 2)
        z = J1_FIRST_ZERO / theta * r
        centre = r == 0
        zs = torch.where(centre, torch.ones_like(z), z)
        amp = torch.where(centre, torch.ones_like(z), 2 * _BesselJ1.apply(zs) / zs)
        return (amp**2).reshape(-1, 1, k, n, k, n).mean((3, 5))


class ZernikeFamily(KernelFamily):
    r"""Diffraction-limited PSFs from Zernike coefficients (eq. 16), via deepinv's ``DiffractionBlurGenerator``.

    .. math:: h_\theta = \big|\mathcal F\big(\mathbb 1_{|\rho|\le 1}\, e^{-i 2\pi \sum_p \theta_p z_p}\big)\big|^2

    θ has shape ``(B, P)``, coefficients in waves on the Noll indices ``zernike_index`` (default: defocus
    4, astigmatisms 5 and 6, coma 7, primary spherical 11; the paper names four of its P = 5 terms, the
    fifth is our choice). θ = 0 gives the Airy pattern with first dark ring at ≈ 0.61/fc px.
    """

    def __init__(
        self,
        size: int = 31,
        zernike_index: Sequence[int] = (4, 5, 6, 7, 11),
        fc: float = 0.2,
        pupil_size: int = 256,
    ) -> None:
        super().__init__(size)
        self.zernike_index = tuple(int(i) for i in zernike_index)
        if not self.zernike_index or any(i < 1 for i in self.zernike_index):
            raise ValueError(f"zernike_index must be Noll indices >= 1, got {zernike_index!r}")
        self.n_params = len(self.zernike_index)
        self.fc = check_positive("fc", fc)
        if not 0 < self.fc <= 0.5:
            raise ValueError(f"fc must lie in (0, 0.5] (cycles per pixel), got {fc}")
        self.pupil_size = int(pupil_size)
        if self.pupil_size < self.size:
            raise ValueError(f"pupil_size must be >= size ({self.size}), got {pupil_size}")
        self._generators: dict = {}

    def _generator(self, like: Tensor):
        from deepinv.physics.generator import DiffractionBlurGenerator

        key = (like.dtype, str(like.device))
        if key not in self._generators:
            self._generators[key] = DiffractionBlurGenerator(
                (self.size, self.size),
                zernike_index=self.zernike_index,
                fc=self.fc,
                pupil_size=(self.pupil_size, self.pupil_size),
                device=like.device,
                dtype=like.dtype,
            )
        return self._generators[key]

    def _kernel(self, theta: Tensor) -> Tensor:
        return self._generator(theta).step(batch_size=theta.shape[0], coeff=theta)["filter"]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, zernike_index={self.zernike_index}, fc={self.fc}"


class SimplexFamily(KernelFamily):
    """Free-form kernels on the probability simplex (§5.2): h_θ = Π_simplex(θ), θ ∈ R^{k²}."""

    def __init__(self, size: int = 31) -> None:
        super().__init__(size)
        self.n_params = self.size**2

    def _kernel(self, theta: Tensor) -> Tensor:
        return project_simplex(theta).reshape(-1, 1, self.size, self.size)

    def project(self, theta: Tensor) -> Tensor:
        """Projection onto the simplex, so that h_θ = θ after a projected-gradient step."""
        return project_simplex(theta)

    @staticmethod
    def theta_of(h: Tensor) -> Tensor:
        """θ representing a kernel ``(B, 1, k, k)`` on the simplex (its flattening)."""
        return h.flatten(1)


_FAMILIES = {
    "gaussian": GaussianFamily,
    "motion": MotionFamily,
    "defocus": DefocusFamily,
    "airy": AiryFamily,
    "zernike": ZernikeFamily,
    "simplex": SimplexFamily,
}


def family(name: str, size: int = 31, **kw) -> KernelFamily:
    """Build a kernel family by name: gaussian, motion, defocus, airy, zernike or simplex.

    Example::

        fam = family("motion", size=31, angle=45)
        h = fam(torch.tensor([[2.5]]))        # (1, 1, 31, 31)
    """
    if name not in _FAMILIES:
        raise ValueError(f"name must be one of {tuple(_FAMILIES)}, got {name!r}")
    return _FAMILIES[name](size=size, **kw)


def as_family(spec: str | KernelFamily, size: int, arg: str = "family") -> KernelFamily:
    """The one way configs and APIs name a family: a name (built at ``size`` with its default options) or a
    :class:`KernelFamily` instance (YAML ``class_path`` + ``init_args``, any options), whose size must be
    ``size``. ``arg`` names the argument in errors.

    Example::

        as_family("motion", 31)                     # MotionFamily(size=31)
        as_family(MotionFamily(size=31, angle=45), 31)
    """
    if isinstance(spec, KernelFamily):
        if spec.size != size:
            raise ValueError(f"{arg}: {type(spec).__name__} has size {spec.size}, expected the kernel size {size}")
        return spec
    if isinstance(spec, str):
        return family(spec, size=size)
    raise ValueError(f"{arg} must be a family name {tuple(_FAMILIES)} or a KernelFamily, got {spec!r}")


def families_by_name(specs: Sequence[str | KernelFamily], size: int, arg: str = "families") -> dict[str, KernelFamily]:
    """{name: family} for a list of names or instances (:func:`as_family`); two entries with one name (e.g.
    two motion families at different angles) are an error, since rows are keyed by the name."""
    out: dict[str, KernelFamily] = {}
    for spec in specs:
        fam = as_family(spec, size, arg)
        if fam.name in out:
            raise ValueError(f"{arg} must have distinct names, got {fam.name!r} twice")
        out[fam.name] = fam
    return out


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
    check_choice("init", init, ("large", "small"))
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
