"""Quality metrics for blind deconvolution, all invariant to the integer shift a blind method cannot fix.

* :func:`kernel_error` — ‖h − h̄‖/‖h̄‖ after the best integer shift (kernels zero-padded to a common size).
* :func:`psnr` / :func:`ssim` — deepinv's PSNR / SSIM after the best integer shift (borders of ``max_shift``
  pixels excluded so that no shift wraps around).
* :func:`error_ratio` — Levin et al. 2009: SSD of the non-blind deconvolution with the estimated kernel over
  SSD with the true kernel, the **same** non-blind solver for both: :func:`nonblind_deconvolution`, a
  closed-form FFT solve of min ‖h ⋆ x − y‖² + λ‖∇x‖² on the edge-padded image (hand-written: a
  quadratic solver keeps the ratio about the kernel, not about a solver's tuning).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_blind._checks import check_image, check_positive
from lit_blind.physics import _transfer


def _pad_to(h: Tensor, size: int) -> Tensor:
    p = (size - h.shape[-1]) // 2
    return F.pad(h, (p, p, p, p))


def kernel_error(h: Tensor, h_true: Tensor) -> float:
    """Normalised L2 kernel error after the best integer shift: min_s ‖shift_s(h) − h̄‖ / ‖h̄‖."""
    h, h_true = check_image("h", h), check_image("h_true", h_true)
    size = max(h.shape[-1], h_true.shape[-1])
    a, b = _pad_to(h.double(), 2 * size + 1), _pad_to(h_true.double(), 2 * size + 1)
    best = float("inf")
    r = size // 2
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            best = min(best, (torch.roll(a, (dy, dx), (-2, -1)) - b).norm().item())
    return best / b.norm().item()


def _best_shift(x: Tensor, ref: Tensor, max_shift: int) -> tuple[Tensor, Tensor]:
    """x shifted by the integer shift that minimises the MSE to ref, both cropped by max_shift."""
    m = max_shift
    crop = (slice(None), slice(None), slice(m, x.shape[-2] - m), slice(m, x.shape[-1] - m))
    best, best_x = float("inf"), None
    for dy in range(-m, m + 1):
        for dx in range(-m, m + 1):
            xs = torch.roll(x, (dy, dx), (-2, -1))[crop]
            err = (xs - ref[crop]).pow(2).mean().item()
            if err < best:
                best, best_x = err, xs
    return best_x, ref[crop]


def psnr(x: Tensor, ref: Tensor, max_shift: int = 5) -> float:
    """PSNR (dB, peak 1) after the best integer shift of at most ``max_shift`` pixels."""
    from deepinv.loss.metric import PSNR

    xs, rs = _best_shift(check_image("x", x), check_image("ref", ref), max_shift)
    return PSNR(max_pixel=1.0)(xs.float(), rs.float()).mean().item()


def ssim(x: Tensor, ref: Tensor, max_shift: int = 5) -> float:
    """SSIM after the best integer shift of at most ``max_shift`` pixels."""
    from deepinv.loss.metric import SSIM

    xs, rs = _best_shift(check_image("x", x), check_image("ref", ref), max_shift)
    return SSIM()(xs.float(), rs.float()).mean().item()


def nonblind_deconvolution(y: Tensor, h: Tensor, lam: float = 2e-3) -> Tensor:
    r"""min_x ‖h ⋆ x − y‖² + λ‖∇x‖², solved in closed form by FFT on y edge-padded by k (then cropped).

    .. math:: \hat x = \mathcal F^{-1}\Big[\frac{\bar{\hat h}\,\hat y}{|\hat h|^2 + \lambda(|\hat d_1|^2 + |\hat d_2|^2)}\Big]
    """
    y, h = check_image("y", y), check_image("h", h)
    lam = check_positive("lam", lam)
    k = h.shape[-1]
    yp = F.pad(y, (k, k, k, k), mode="replicate")
    shape = tuple(yp.shape[-2:])
    d1 = torch.zeros(1, 1, 3, 3, dtype=y.dtype, device=y.device)
    d1[0, 0, 1, 1], d1[0, 0, 1, 2] = -1, 1
    d2 = d1.transpose(-1, -2)
    hf = _transfer(h.to(y.dtype), shape)
    reg = _transfer(d1, shape).abs() ** 2 + _transfer(d2, shape).abs() ** 2
    xf = hf.conj() * torch.fft.rfft2(yp) / (hf.abs() ** 2 + lam * reg)
    return torch.fft.irfft2(xf, s=shape)[..., k:-k, k:-k]


def error_ratio(y: Tensor, x_true: Tensor, h: Tensor, h_true: Tensor, lam: float = 2e-3, max_shift: int = 5) -> float:
    """Levin et al. 2009 error ratio SSD(x̂(h), x) / SSD(x̂(h̄), x), x̂ = :func:`nonblind_deconvolution`,
    each SSD after the best integer shift (≤ 1 is as good as the true kernel; ≤ 3 counts as a success)."""
    est = nonblind_deconvolution(y, h, lam)
    ref = nonblind_deconvolution(y, h_true, lam)
    a, xa = _best_shift(est, x_true, max_shift)
    b, xb = _best_shift(ref, x_true, max_shift)
    return ((a - xa).pow(2).sum() / (b - xb).pow(2).sum()).item()
