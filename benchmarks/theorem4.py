"""Theorem 4 on a shipped prior: is (x̄, θ̄) a strict local minimizer of ℓ_ȳ at the critical points found by
``configs/experiments/critical_points.yaml``? Prints the quantities of conditions (10)–(12) per point and family.

    python benchmarks/theorem4.py [--points outputs/critical_points/critical_points] [--ids mnist_test_00000 noise_000]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from lit_blind.kernels import family
from lit_blind.landscape import check_local_minimizer
from lit_blind.loading import load_prior


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prior", default="mnist-small")
    ap.add_argument("--points", default="outputs/critical_points/critical_points")
    ap.add_argument("--ids", nargs="+", default=["mnist_test_00000", "noise_000"])
    ap.add_argument("--kernel-size", type=int, default=9)
    args = ap.parse_args()
    prior = load_prior(args.prior)
    cases = [("gaussian", 1.0), ("motion", 2.0)]
    print(
        f"{'point':>18s} {'family':>8s} {'|∇q|':>8s} {'min eig σ²∇²q':>14s} {'dim ker':>7s} {'(11) min sv J':>14s}"
        f" {'(12) max cos':>12s} {'min eig ∇²ℓ':>12s} strict"
    )
    for image_id in args.ids:
        file = Path(args.points) / f"{image_id}.pt"
        if not file.is_file():
            raise SystemExit(f"no critical point {file}: run configs/experiments/critical_points.yaml first")
        x = torch.load(file, weights_only=True)["critical_point"].to(torch.float64)
        for name, theta in cases:
            fam = family(name, size=args.kernel_size)
            out = check_local_minimizer(prior, x, torch.tensor([[theta]]), fam)
            print(
                f"{image_id:>18s} {name:>8s} {out['grad_norm']:8.3f} {out['min_eig_scaled_hessian_q']:14.3e}"
                f" {out['kernel_dim']:7d} {out['cond11_min_sv_J']:14.3e} {out['cond12_max_cos_angle']:12.3e}"
                f" {out['min_eig_hessian_l']:12.3e} {out['strict_local_minimizer']}",
                flush=True,
            )


if __name__ == "__main__":
    main()
