"""Benchmark: the valid-boundary data prox (CG on (γHᵀH + I)u = γHᵀy + z) with deepinv's ``conv2d_fft`` /
``conv_transpose2d_fft`` as its operator (the baseline: the engine before the twenty-eighth session) and with
``physics.prox_data_unchecked``'s own (valid blur as the interior of a circular blur on the next FFT-friendly grid,
the kernel's transfer computed once per prox), in one process on the same inputs; then ``marginal_em`` (its
defaults, both starts) on Levin captures with each operator, the baseline patched into ``lit_blind.marginal``.

Printed: milliseconds per prox at the EM's tolerance and the largest difference of the two solutions; per capture the
EM's seconds, the speed-up and the error ratio and kernel error both ways (equal up to the rounding of the FFTs, which
the EM's coarse levels can amplify).

    python benchmarks/prox_valid.py [--size 288] [--kernel 31] [--repeats 10] [--levin im1_kernel1]
"""

from __future__ import annotations

import argparse
from unittest import mock

import torch
from deepinv.optim.linear import conjugate_gradient
from deepinv.physics.functional import conv2d_fft, conv_transpose2d_fft
from precision import levin_items, timed_em  # beside this script
from validation_cost import seconds  # beside this script

from lit_blind import marginal
from lit_blind.loading import load_prior
from lit_blind.physics import blur, prox_data_unchecked


def prox_deepinv(z, y, h, gamma, boundary="valid", max_iter=500, tol=1e-7):
    """The baseline: the same CG with deepinv's valid convolution and its adjoint as the operator."""
    assert boundary == "valid"
    rhs = gamma * conv_transpose2d_fft(y, h, padding="valid") + z

    def normal(u):
        return gamma * conv_transpose2d_fft(conv2d_fft(u, h, padding="valid"), h, padding="valid") + u

    return conjugate_gradient(normal, rhs, max_iter=max_iter, tol=tol, init=z)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=288, help="the blurry image's side (a Levin capture's 255 + 33)")
    ap.add_argument("--kernel", type=int, default=31)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--levin", nargs="*", default=["im1_kernel1"], help="Levin captures for the EM (none: skip)")
    args = ap.parse_args()
    gen = torch.Generator().manual_seed(0)
    n = args.size + args.kernel - 1
    x = torch.rand(1, 1, n, n, generator=gen, dtype=torch.float64)
    h = torch.rand(1, 1, args.kernel, args.kernel, generator=gen, dtype=torch.float64) ** 8
    h = h / h.sum()
    y = blur(x, h, "valid") + 0.003 * torch.randn(1, 1, args.size, args.size, generator=gen, dtype=torch.float64)
    z = x + 0.02 * torch.randn(x.shape, generator=gen, dtype=torch.float64)
    print(f"valid prox, y {args.size}², kernel {args.kernel}², γ = 10, CG to 1e-6 (30 iterations at most), float64")
    print(f"{'operator':>10} {'ms':>8}")
    ta, ua = seconds(lambda: prox_deepinv(z, y, h, 10.0, max_iter=30, tol=1e-6), args.repeats)
    tb, ub = seconds(lambda: prox_data_unchecked(z, y, h, 10.0, "valid", max_iter=30, tol=1e-6), args.repeats)
    print(f"{'deepinv':>10} {1e3 * ta:>8.1f}\n{'ours':>10} {1e3 * tb:>8.1f}")
    print(f"speed-up {ta / tb:.2f}x, max |difference| {float((ua - ub).abs().max()):.1e}")
    items = levin_items() if args.levin else None
    if items is None:
        return
    prior = load_prior("natural-gray-small")
    print("marginal_em (defaults, both starts) on Levin captures")
    print(
        f"{'capture':>12} {'base s':>7} {'ours s':>7} {'speed-up':>8} {'ER base':>8} {'ER ours':>8} {'ke base':>8} {'ke ours':>8}"
    )
    for image_id in args.levin:
        with mock.patch.object(marginal, "prox_data_unchecked", prox_deepinv):
            ta, ea, ka = timed_em(prior, items[image_id])
        tb, eb, kb = timed_em(prior, items[image_id])
        print(f"{image_id:>12} {ta:>7.1f} {tb:>7.1f} {ta / tb:>7.2f}x {ea:>8.3f} {eb:>8.3f} {ka:>8.3f} {kb:>8.3f}")


if __name__ == "__main__":
    main()
