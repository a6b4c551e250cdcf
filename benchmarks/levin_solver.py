"""Benchmark: the non-blind solver behind the Levin 2009 error ratio, on the 32 Levin images.

For each solver: mean PSNR of the deconvolution with the true kernels, and how the no-blur answer (the Dirac
kernel, i.e. no deblurring) scores — the fraction of images where it reaches ER ≤ 3 and its mean ER. A
solver under which the Dirac "succeeds" cannot tell a blind method from doing nothing. Rows: lit_blind's
:func:`~lit_blind.metrics.sparse_deconvolution` (Levin et al. 2007 hyper-Laplacian IRLS) at several weights,
and the quadratic :func:`~lit_blind.metrics.nonblind_deconvolution`.

    python benchmarks/levin_solver.py [--images 1 2 3 4] [--weights 1e-4 3e-4 1e-3]
"""

from __future__ import annotations

import argparse
import time

import torch

from lit_blind.io import data_path
from lit_blind.kernels import dirac
from lit_blind.metrics import best_shift, nonblind_deconvolution, sparse_deconvolution

SHARED = data_path("../shared/data") / "levin09"


def ssd(est: torch.Tensor, sharp: torch.Tensor) -> float:
    a, b = best_shift(est, sharp, 5)
    return (a - b).pow(2).sum().item()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, nargs="+", default=[1, 2, 3, 4])
    ap.add_argument("--weights", type=float, nargs="+", default=[1e-4, 3e-4, 1e-3])
    args = ap.parse_args()
    if not SHARED.is_dir():
        print(f"skipped: {SHARED} not found")
        return
    from lit_blind.data import LevinDataModule

    dm = LevinDataModule(root=str(SHARED), images=args.images)
    dm.setup()
    solvers = {f"sparse w={w:g}": (lambda y, h, w=w: sparse_deconvolution(y, h, weight=w)) for w in args.weights}
    solvers["quadratic λ=2e-3"] = lambda y, h: nonblind_deconvolution(y, h, 2e-3)
    print(f"{len(dm.items)} images; ER of the Dirac kernel = SSD(x̂(δ)) / SSD(x̂(h̄))")
    print(f"{'solver':>18s} {'PSNR(h̄)':>9s} {'Dirac ER≤3':>11s} {'Dirac mean ER':>14s} {'s/solve':>8s}")
    for name, solve in solvers.items():
        psnrs, ers, t0 = [], [], time.perf_counter()
        for it in dm.items:
            y, sharp, h = it["image"][None].double(), it["sharp"][None].double(), it["kernel"][None].double()
            ref = ssd(solve(y, h), sharp)
            psnrs.append(10 * torch.log10(torch.tensor(sharp[..., 5:-5, 5:-5].numel() / ref)).item())
            ers.append(ssd(solve(y, dirac(h.shape[-1], torch.float64)), sharp) / ref)
        dt = (time.perf_counter() - t0) / (2 * len(dm.items))
        ok = sum(e <= 3 for e in ers)
        print(
            f"{name:>18s} {sum(psnrs) / len(psnrs):9.2f} {ok:>5d}/{len(ers):<5d} {sum(ers) / len(ers):14.2f} {dt:8.2f}"
        )


if __name__ == "__main__":
    main()
