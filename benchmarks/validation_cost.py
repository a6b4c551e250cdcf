"""Benchmark: what input validation costs inside the hot loops (issue 13).

The inner loops now call ``Prior._score_unchecked`` / ``_denoise_unchecked`` and
``physics.prox_data_unchecked`` (inputs validated once at the entry of the algorithm or of ``potential``;
one finiteness check per step remains), instead of the public ``score`` / ``denoise`` / ``prox_data`` that
check finiteness, shapes and the σ range on every call (several host synchronisations). Both are timed
here in one process on the same inputs: one Algorithm-1 image step (score + valid-boundary prox, CG) and
one probability-flow field evaluation (score), for the analytic Gaussian prior (validation is a large share
of a cheap model) and the shipped natural-gray-small network; the outputs must be identical.

    python benchmarks/validation_cost.py [--size 64] [--repeats 50]
"""

from __future__ import annotations

import argparse
import time

import torch

from lit_blind.io import embedded_image
from lit_blind.kernels import family
from lit_blind.loading import load_prior
from lit_blind.physics import blur, prox_data, prox_data_unchecked
from lit_blind.priors import GaussianPrior


def seconds(fn, repeats: int) -> tuple[float, torch.Tensor]:
    out = fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    return (time.perf_counter() - t0) / repeats, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=50)
    args = ap.parse_args()
    x = torch.nn.functional.adaptive_avg_pool2d(embedded_image("camera"), args.size).double()
    h = family("motion", size=15, angle=30)(torch.tensor([[4.0]], dtype=torch.float64))
    y = blur(x, h, "valid")
    x0 = torch.nn.functional.pad(y, (7,) * 4, mode="replicate")
    sigma, gamma = 0.01, 0.1
    print(f"{args.size}x{args.size}, one thread={torch.get_num_threads() == 1}, {args.repeats} repeats, ms per call")
    print(f"{'prior':20s} {'step':28s} {'checked':>9s} {'unchecked':>10s} {'ratio':>6s} {'max |diff|':>11s}")
    for name, prior in (("gaussian", GaussianPrior()), ("natural-gray-small", load_prior("natural-gray-small"))):
        p = prior.to(torch.float64)
        with torch.no_grad():
            pairs = {
                "ODE field: score": (
                    lambda p=p: p.score(x, sigma),
                    lambda p=p: p._score_unchecked(x, sigma),
                ),
                "Alg. 1 image step (K_x=1)": (
                    lambda p=p: prox_data(x0 + gamma * 1e-4 * p.score_padded(x0, sigma), y, h, gamma, "valid"),
                    lambda p=p: prox_data_unchecked(
                        x0 + gamma * 1e-4 * p._score_unchecked(x0, sigma), y, h, gamma, "valid"
                    ),
                ),
            }
            for step, (checked, unchecked) in pairs.items():
                t_c, a = seconds(checked, args.repeats)
                t_u, b = seconds(unchecked, args.repeats)
                diff = float((a - b).abs().max())
                print(f"{name:20s} {step:28s} {1e3 * t_c:9.3f} {1e3 * t_u:10.3f} {t_c / t_u:6.2f} {diff:11.1e}")


if __name__ == "__main__":
    main()
