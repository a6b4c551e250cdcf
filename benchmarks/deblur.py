"""Benchmark: the image step's prox (FFT closed form vs CG) and the deblurring schedule (paper vs faster).

Part 1: prox_{γf}(z) for circular blur, 31×31 kernel, by the closed-form FFT solve against deepinv's
conjugate gradient on the same normal equations (the paper solves it by CG): seconds and max difference.

Part 2: Algorithm 1 on the same synthetic problem (skimage camera, motion blur, σ_y = 0.01, simplex
kernels from the uniform "large" initialisation) with the paper's schedule (K = 400, K_x = 100 and fixed
γ_θ = 0.001: 40,000 score evaluations) against lit_blind's faster schedule (K = 40, K_x = 10, γ_x = 0.1 and
5 Armijo θ steps per outer iteration: 400 score evaluations); kernel error as a function of score
evaluations. ``--paper-k`` shortens the paper schedule for a quick look (the printed table says so).

    python benchmarks/deblur.py [--prior natural-gray-small] [--size 64] [--paper-k 400]
"""

from __future__ import annotations

import argparse
import time

import torch

from lit_blind.deconv import alternating
from lit_blind.io import embedded_image
from lit_blind.kernels import family, uniform_kernel
from lit_blind.metrics import kernel_error, psnr
from lit_blind.physics import add_noise, adjoint, blur, prox_data


def bench_prox(size: int = 256) -> None:
    from deepinv.optim.linear import conjugate_gradient

    g = torch.Generator().manual_seed(0)
    z = torch.rand(1, 1, size, size, generator=g, dtype=torch.float64)
    y = torch.rand(1, 1, size, size, generator=g, dtype=torch.float64)
    h = family("motion", size=31, angle=30)(torch.tensor([[5.0]], dtype=torch.float64))
    gamma = 0.01
    t0 = time.perf_counter()
    for _ in range(10):
        u_fft = prox_data(z, y, h, gamma)
    t_fft = (time.perf_counter() - t0) / 10
    t0 = time.perf_counter()
    u_cg = conjugate_gradient(
        lambda v: gamma * adjoint(blur(v, h), h) + v, gamma * adjoint(y, h) + z, max_iter=200, tol=1e-10
    )
    t_cg = time.perf_counter() - t0
    print(f"prox, {size}x{size}, 31x31 kernel: FFT {t_fft * 1e3:.1f} ms, CG (tol 1e-10) {t_cg * 1e3:.1f} ms, ")
    print(f"  ratio {t_cg / t_fft:.1f}x, max |FFT - CG| = {(u_fft - u_cg).abs().max().item():.2e}")


def bench_schedule(prior_spec: str, size: int, paper_k: int) -> None:
    from lit_blind.loading import load_prior

    prior = load_prior(prior_spec)
    x = torch.nn.functional.adaptive_avg_pool2d(embedded_image("camera"), size).double()
    h = family("motion", size=15, angle=30)(torch.tensor([[4.0]], dtype=torch.float64))
    y = add_noise(blur(x, h), 0.01, torch.Generator().manual_seed(0))
    fam = family("simplex", size=15)
    theta0 = uniform_kernel(15, torch.float64).flatten(1)
    rows = []
    for name, kw in (
        ("paper (K_x=100, γx=0.01, γθ=0.001)", dict(K=paper_k, K_x=100, gamma_x=0.01, gamma_theta=0.001, R=100)),
        (
            "lit_blind (K_x=10, γx=0.1, Armijo θ)",
            dict(K=40, K_x=10, gamma_x=0.1, gamma_theta="armijo", theta_steps=5, R=100),
        ),
    ):
        curve = []

        def cb(s, curve=curve):
            curve.append((s["score_evals"], kernel_error(s["kernel"], h)))

        t0 = time.perf_counter()
        res = alternating(y, prior, fam, theta0, sigma_y=0.01, callback=cb, **kw)
        rows.append(
            (
                name,
                res.history["score_evals"][-1],
                kernel_error(res.kernel, h),
                psnr(res.image, x),
                time.perf_counter() - t0,
                curve,
            )
        )
    print(f"Algorithm 1, camera {size}x{size}, motion θ=4 (15x15), σ_y=0.01, prior {prior_spec}, uniform init")
    print(f"{'schedule':40s} {'score evals':>11s} {'kernel err':>10s} {'PSNR':>6s} {'seconds':>8s}")
    for name, evals, kerr, p, sec, _ in rows:
        print(f"{name:40s} {evals:11d} {kerr:10.3f} {p:6.2f} {sec:8.1f}")
    print(f"evaluation ratio: {rows[0][1] / rows[1][1]:.0f}x; kernel error at equal budget ({rows[1][1]} evals):")
    budget = rows[1][1]
    early = [e for n, e in rows[0][5] if n <= budget]
    print(f"  paper {early[-1] if early else float('nan'):.3f}  vs  lit_blind {rows[1][2]:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prior", default="natural-gray-small")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--paper-k", type=int, default=400)
    args = ap.parse_args()
    bench_prox()
    bench_schedule(args.prior, args.size, args.paper_k)


if __name__ == "__main__":
    main()
