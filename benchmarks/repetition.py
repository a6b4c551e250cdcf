"""Benchmark: the repetition map of the EM's polishing (``marginal.edge_repetition``), whose k × k window sums are
taken by cumulative sums (``marginal.window_sums``) instead of torch's ``avg_pool2d`` (k² additions per pixel).

Both ways of summing are timed in one process on the same inputs: the window sums of 64 correlation maps (one chunk
of offsets), and the whole map on a Levin-size image (255², k = 31, the kernel of the captures) with each summation
patched in; the maps must agree to float32 rounding.

    python benchmarks/repetition.py [--size 255] [--k 31] [--repeats 3]
"""

from __future__ import annotations

import argparse
from unittest import mock

import torch
import torch.nn.functional as F
from validation_cost import seconds  # beside this script

from lit_blind import marginal
from lit_blind.io import embedded_image


def pooled_sums(a: torch.Tensor, k: int) -> torch.Tensor:
    """The baseline: torch's average pooling times the window's area (zero padding counted)."""
    return F.avg_pool2d(a, k, stride=1, padding=k // 2, count_include_pad=True) * (k * k)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=255)
    ap.add_argument("--k", type=int, default=31)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    x = F.interpolate(embedded_image("camera"), size=(args.size, args.size), mode="bilinear", antialias=True).double()
    maps = torch.rand(64, 1, args.size - 1, args.size - 1, generator=torch.Generator().manual_seed(0))
    print(f"{args.size}x{args.size}, k = {args.k}, one thread, seconds per call")
    print(f"{'work':36s} {'avg_pool2d':>11s} {'cumsum':>9s} {'ratio':>6s} {'max |diff|':>11s}")
    t0, a = seconds(lambda: pooled_sums(maps, args.k), args.repeats)
    t1, b = seconds(lambda: marginal.window_sums(maps, args.k), args.repeats)
    rel = float((a - b).abs().max() / a.abs().max())
    print(f"{'window sums, 64 maps':36s} {t0:11.3f} {t1:9.3f} {t0 / t1:5.1f}x {rel:11.1e} (relative)")
    with mock.patch.object(marginal, "window_sums", pooled_sums):
        t0, a = seconds(lambda: marginal.edge_repetition(x, args.k), 1)
    t1, b = seconds(lambda: marginal.edge_repetition(x, args.k), 1)
    print(f"{'edge_repetition, camera':36s} {t0:11.3f} {t1:9.3f} {t0 / t1:5.1f}x {float((a - b).abs().max()):11.1e}")


if __name__ == "__main__":
    main()
