"""Blur physics with the kernel passed per call (DESIGN.md §1): y = h ⋆ x + b.

True convolution (deepinv's ``conv2d`` convention), odd square kernels ``(B, 1|C, k, k)`` with the origin
at the centre pixel, batched over (image, kernel) pairs: an image batch of 1 broadcasts against a batch of
kernels and vice versa. Boundaries: ``"circular"`` (paper §4.1; output has the image size) and
``"valid"`` (real photographs; output is (H − k + 1, W − k + 1)). The FFT routines of
``deepinv.physics.functional`` do the work; only the closed-form inverse and prox are written here, because
deepinv's ``BlurFFT`` stores the filter it is called with and hard-codes its pseudo-inverse threshold, and the
valid prox's CG operator (twenty-eighth session), which transforms the kernel once per prox on an FFT-friendly grid
where deepinv's ``conv2d_fft`` / ``conv_transpose2d_fft`` transform it at every call on the sizes as they come:
3.6–4.0× faster per prox at a Levin capture's size (two runs), equal within 2e-14 (``benchmarks/prox_valid.py``).
"""

from __future__ import annotations

import torch
from deepinv.optim.linear import conjugate_gradient
from deepinv.physics.functional import conv2d_fft, conv_transpose2d_fft, filter_fft
from scipy.fft import next_fast_len
from torch import Tensor

from lit_blind._checks import check_choice, check_image, check_positive, check_tensor

BOUNDARIES = ("circular", "valid")


def _check_kernel(h: object, channels: int) -> Tensor:
    h = check_tensor("h", h, ndim=4)
    k = h.shape[-1]
    if h.shape[-2] != k or k % 2 == 0:
        raise ValueError(f"h must be square with an odd size, got shape {tuple(h.shape)}")
    if h.shape[1] not in (1, channels):
        raise ValueError(f"h must have 1 or {channels} channel(s), got shape {tuple(h.shape)}")
    return h


def _batch(name_a: str, a: Tensor, name_b: str, b: Tensor) -> int:
    if a.shape[0] != b.shape[0] and 1 not in (a.shape[0], b.shape[0]):
        raise ValueError(
            f"{name_a} and {name_b} must have equal batch sizes or one of them 1, "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    return max(a.shape[0], b.shape[0])


def _expand(x: Tensor, batch: int) -> Tensor:
    return x.expand(batch, *x.shape[1:]) if x.shape[0] != batch else x


def _prepare(x: object, h: object, boundary: str, name: str = "x") -> tuple[Tensor, Tensor, int]:
    check_choice("boundary", boundary, BOUNDARIES)
    x = check_image(name, x)
    h = _check_kernel(h, x.shape[1])
    k = h.shape[-1]
    if k > x.shape[-2] or k > x.shape[-1]:
        raise ValueError(f"h ({k}x{k}) must not be larger than {name} {tuple(x.shape[-2:])}")
    return x, h, _batch(name, x, "h", h)


def blur(x: Tensor, h: Tensor, boundary: str = "circular") -> Tensor:
    r"""Blur :math:`H x = h \star x` (true convolution).

    Example::

        y = blur(torch.rand(1, 1, 33, 29), gaussian_kernel(9, 1.5))
    """
    x, h, b = _prepare(x, h, boundary)
    return conv2d_fft(_expand(x, b), _expand(h, b), padding=boundary)


def adjoint(y: Tensor, h: Tensor, boundary: str = "circular") -> Tensor:
    r"""Adjoint :math:`H^\top y`; for ``valid`` the output is (H + k − 1, W + k − 1)."""
    check_choice("boundary", boundary, BOUNDARIES)
    y = check_image("y", y)
    h = _check_kernel(h, y.shape[1])
    if boundary == "circular" and (h.shape[-1] > y.shape[-2] or h.shape[-1] > y.shape[-1]):
        raise ValueError(f"h ({h.shape[-1]}x{h.shape[-1]}) must not be larger than y {tuple(y.shape[-2:])}")
    b = _batch("y", y, "h", h)
    return conv_transpose2d_fft(_expand(y, b), _expand(h, b), padding=boundary)


def image_gradient(x: Tensor) -> tuple[Tensor, Tensor]:
    """Forward differences of ``(…, H, W)`` without padding: horizontal ``(…, H, W − 1)``, vertical ``(…, H − 1, W)``."""
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


def image_gradient_adjoint(gx: Tensor, gy: Tensor) -> Tensor:
    """The adjoint of :func:`image_gradient`: ``(…, H, W)`` from the two difference images."""
    pad = torch.nn.functional.pad
    return pad(gx, (1, 0)) - pad(gx, (0, 1)) + pad(gy, (0, 0, 1, 0)) - pad(gy, (0, 0, 0, 1))


def data_fidelity(x: Tensor, y: Tensor, h: Tensor, boundary: str = "circular") -> Tensor:
    r"""The paper's data term per image, :math:`f(x, \theta) = \tfrac12\|h_\theta \star x - y\|^2`, shape (B,)."""
    r = blur(x, h, boundary) - y
    return 0.5 * r.flatten(1).pow(2).sum(1)


def _transfer(h: Tensor, shape: tuple[int, int]) -> Tensor:
    """Centred rFFT of the zero-padded kernel (the eigenvalues of circular blur)."""
    return filter_fft(h, img_size=shape, real_fft=True, dims=(-2, -1))


def pinv(y: Tensor, h: Tensor, eps: float = 1e-5) -> Tensor:
    r"""Pseudo-inverse of circular blur: :math:`\hat x = \hat y/\hat h` where :math:`|\hat h| > \varepsilon`, else 0.

    The same truncated SVD as deepinv's ``BlurFFT.A_dagger``, with the threshold ``eps`` exposed.
    """
    y, h, b = _prepare(y, h, "circular", "y")
    eps = check_positive("eps", eps, allow_zero=True)
    shape = tuple(y.shape[-2:])
    hf = _transfer(_expand(h, b), shape)
    keep = hf.abs() > eps
    hf_safe = torch.where(keep, hf, torch.ones_like(hf))
    xf = torch.where(keep, torch.fft.rfft2(y) / hf_safe, torch.zeros_like(hf))
    return torch.fft.irfft2(xf, s=shape)


def prox_data(
    z: Tensor,
    y: Tensor,
    h: Tensor,
    gamma: float | Tensor,
    boundary: str = "circular",
    max_iter: int = 500,
    tol: float = 1e-7,
) -> Tensor:
    r"""Proximal operator of the data term, :math:`\operatorname{argmin}_u \tfrac\gamma2\|h\star u - y\|^2 + \tfrac12\|u - z\|^2`.

    Circular: closed form :math:`\hat u = (\gamma \bar{\hat h}\hat y + \hat z)/(\gamma|\hat h|^2 + 1)`.
    Valid: conjugate gradient on :math:`(\gamma H^\top H + I)u = \gamma H^\top y + z` (deepinv's
    ``conjugate_gradient``, per-sample stopping at relative residual ``tol``), started at z.
    ``gamma`` is a positive number or a tensor of shape ``(B,)``.
    """
    z, h, b = _prepare(z, h, boundary, "z")
    y = check_image("y", y, channels=z.shape[1])
    b = max(b, _batch("y", y, "z", z))
    expected = (
        z.shape[-2:] if boundary == "circular" else (z.shape[-2] - h.shape[-1] + 1, z.shape[-1] - h.shape[-1] + 1)
    )
    if tuple(y.shape[-2:]) != tuple(expected):
        raise ValueError(f"y must have spatial size {tuple(expected)} for {boundary} blur, got {tuple(y.shape)}")
    g = torch.as_tensor(gamma, dtype=z.dtype, device=z.device).reshape(-1, 1, 1, 1)
    if g.shape[0] not in (1, b) or not bool(torch.isfinite(g).all()) or bool((g <= 0).any()):
        raise ValueError(f"gamma must be a positive number or a tensor of shape ({b},), got {gamma!r}")
    return prox_data_unchecked(z, y, h, g, boundary, max_iter, tol)


def prox_data_unchecked(
    z: Tensor, y: Tensor, h: Tensor, gamma: float | Tensor, boundary: str, max_iter: int = 500, tol: float = 1e-7
) -> Tensor:
    """:func:`prox_data` without validating its inputs (no host synchronisation): for the inner loops of the
    blind algorithms, whose inputs were checked once at their entry. ``gamma``: a number or ``(B|1, 1, 1, 1)``."""
    b = max(z.shape[0], y.shape[0], h.shape[0])
    g = gamma
    z, y, h = _expand(z, b), _expand(y, b), _expand(h, b)
    if boundary == "circular":
        shape = tuple(z.shape[-2:])
        hf = _transfer(h, shape)
        uf = (g * hf.conj() * torch.fft.rfft2(y) + torch.fft.rfft2(z)) / (g * hf.abs() ** 2 + 1)
        return torch.fft.irfft2(uf, s=shape)
    # valid blur is the interior of a circular blur on any grid at least z's size, which no wrap-around reaches: on
    # the next FFT-friendly size, with the transfer computed once, 4 FFTs per CG iteration instead of the 6 of
    # deepinv's conv2d_fft + conv_transpose2d_fft, which transform the kernel at every call on sizes as they come
    # (exact either way; benchmarks/prox_valid.py)
    n, c = tuple(z.shape[-2:]), h.shape[-1] // 2
    grid = tuple(next_fast_len(m, real=True) for m in n)
    hf = _transfer(h, grid)

    def blur_valid(u: Tensor) -> Tensor:
        return torch.fft.irfft2(hf * torch.fft.rfft2(u, s=grid), s=grid)[..., c : n[0] - c, c : n[1] - c]

    def adjoint_valid(r: Tensor) -> Tensor:
        r = torch.fft.rfft2(torch.nn.functional.pad(r, (c,) * 4), s=grid)
        return torch.fft.irfft2(hf.conj() * r, s=grid)[..., : n[0], : n[1]]

    rhs = g * adjoint_valid(y) + z

    def normal(u: Tensor) -> Tensor:
        return g * adjoint_valid(blur_valid(u)) + u

    return conjugate_gradient(normal, rhs, max_iter=max_iter, tol=tol, init=z)


def add_noise(x: Tensor, sigma_y: float, generator: torch.Generator | None = None) -> Tensor:
    r""":math:`y = x + \sigma_y n`, :math:`n \sim \mathcal N(0, I)` drawn from ``generator``."""
    x = check_tensor("x", x)
    sigma_y = check_positive("sigma_y", sigma_y, allow_zero=True)
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return x + sigma_y * noise
