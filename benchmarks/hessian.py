"""Benchmark: Hessian spectra of σ_ε²∇²q = I − J_D the paper's way against lit_blind's batched and block modes.

Baseline (the authors' ``eigenvalues.ipynb``): one ``torch.autograd.functional.jvp`` (double backward) per
basis direction, d calls, then float64 ``svdvals``. lit_blind ``dense``: the d rows J_Dᵀe_i from one forward
of the network, ``chunk`` VJPs at a time through one vmapped backward (no double backward, no forward per
direction). lit_blind ``block``: LOBPCG on the low end (k values). Same prior, same points.
Printed: seconds, products, the max difference of the spectra (dense vs baseline) and the intrinsic
dimension (#σ < threshold) of each.

    python benchmarks/hessian.py [--prior mnist-small] [--points 2] [--threshold 1e-5] [--k 64] [--device cuda]

On a GPU (``--device cuda``) the timings synchronise the device before reading the clock.
"""

from __future__ import annotations

import argparse
import time

import torch

from lit_blind.io import data_path
from lit_blind.landscape import find_critical_point, hessian_spectrum, math_attention
from lit_blind.probes.base import synchronize

SHARED = data_path("../shared/data")


def elapsed(t0: float, device: torch.device) -> float:
    """Wall-clock seconds since t0, after the device's queued work (a no-op wait on CPU)."""
    synchronize(device)
    return time.perf_counter() - t0


def points(prior, n: int, device: torch.device) -> list[torch.Tensor]:
    from lit_blind.io import read_idx_images

    if (SHARED / "mnist").is_dir() and prior.channels == 1:
        x = read_idx_images(SHARED / "mnist" / "t10k-images-idx3-ubyte.gz")[:n]
        xs = torch.nn.functional.pad((x.double() / 255 > 0.5).double()[:, None], (2, 2, 2, 2))
    else:
        xs = torch.rand(n, prior.channels, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return [find_critical_point(prior, xi[None].to(device), steps=500).x for xi in xs]


def paper_way(prior, x, sigma) -> tuple[torch.Tensor, float]:
    d = x[0].numel()
    f = lambda z: z - prior.denoise(z, sigma).double()  # noqa: E731  (σ² ∇q)
    cols = []
    t0 = time.perf_counter()
    with math_attention():
        for i in range(d):
            e = torch.zeros(d, dtype=torch.float64, device=x.device)
            e[i] = 1
            cols.append(torch.autograd.functional.jvp(f, x, e.reshape(x.shape))[1].flatten())
    sv = torch.linalg.svdvals(torch.stack(cols, 1)).flip(0)
    return sv, elapsed(t0, x.device)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prior", default="mnist-small")
    ap.add_argument("--points", type=int, default=2)
    ap.add_argument("--threshold", type=float, default=1e-5)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--device", default="cpu", help="torch device of the prior and the points")
    args = ap.parse_args()
    from lit_blind.loading import load_prior

    device = torch.device(args.device)
    prior = load_prior(args.prior).to(device)
    sigma = prior.sigma_min
    where = "CPU" if device.type == "cpu" else torch.cuda.get_device_name(device)
    print(f"prior {args.prior}, σ_ε = {sigma}, threshold {args.threshold}, {where}")
    print(f"{'point':>5s} {'method':>8s} {'seconds':>8s} {'products':>9s} {'dim':>5s} {'max |Δσ| vs paper':>18s}")
    for i, x in enumerate(points(prior, args.points, device)):
        sv_ref, t_ref = paper_way(prior, x, sigma)
        d = x[0].numel()
        print(f"{i:5d} {'paper':>8s} {t_ref:8.1f} {d:9d} {int((sv_ref < args.threshold).sum()):5d} {0.0:18.2e}")
        for method in ("dense", "block"):
            t0 = time.perf_counter()
            res = hessian_spectrum(prior, x, method=method, k=args.k, threshold=args.threshold)
            dt = elapsed(t0, device)
            n = len(res.singular_values)
            diff = (res.singular_values.to(device) - sv_ref[:n]).abs().max().item()
            dim = f"{res.dimension}" + ("" if res.exact else "+")
            print(
                f"{i:5d} {method:>8s} {dt:8.1f} {res.products:9d} {dim:>5s} {diff:18.2e}   speed-up {t_ref / dt:.1f}x"
            )


if __name__ == "__main__":
    main()
