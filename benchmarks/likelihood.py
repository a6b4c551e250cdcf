"""Benchmark: the authors' likelihood loop against lit_blind's, on the same prior, images and θ grid.

Baseline (the paper's code, ``songdiff/likelihood.py``): scipy ``solve_ivp`` RK45 at rtol = atol = 1e-5 with a
numpy↔torch round trip per evaluation, one image and one θ at a time, a fresh Rademacher probe per call.
lit_blind: the whole θ grid of one image (4 families × 11 θ, θ = 0 once) in one batch, torch Dormand–Prince
with per-sample step control (``dopri5``, same tolerances) or the fixed-grid ``expint``, one probe shared by
the grid (common random numbers).

Printed: seconds per (image, θ) for each method and their ratio; max |Δq| against the baseline when both use
the same probe (solver difference); and the noise (std over repetitions) of the differences
q(h_θ ⋆ x) − q(x) with a fresh probe per call (the baseline's estimator) and with shared probes (ours).

    python benchmarks/likelihood.py [--prior tiny|mnist-small|PATH] [--images 2] [--repeats 4]
"""

from __future__ import annotations

import argparse
import time

import torch

from lit_blind.io import data_path, embedded_image
from lit_blind.likelihood import potential, rademacher
from lit_blind.probes import BlurLikelihoodProbe

SHARED = data_path("../shared/data")


def tiny_prior():
    """A small random VE UNet (smooth σ embedding), 32×32 gray: stands in when no trained prior is given."""
    from lit_blind.testing import tiny_unet_prior

    return tiny_unet_prior(size=32)


def images(prior_name: str, n: int) -> list[torch.Tensor]:
    if prior_name == "mnist-small" and (SHARED / "mnist").is_dir():
        from lit_blind.io import read_idx_images

        x = read_idx_images(SHARED / "mnist" / "t10k-images-idx3-ubyte.gz")[:n]
        x = torch.nn.functional.pad((x.float() / 255 > 0.5).float()[:, None], (2, 2, 2, 2))
        return [xi[None].double() for xi in x]
    names = ["camera", "moon", "coins", "text"][:n]
    return [torch.nn.functional.adaptive_avg_pool2d(embedded_image(m), 32).double() for m in names]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prior", default="tiny")
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=4)
    args = ap.parse_args()
    if args.prior == "tiny":
        prior = tiny_prior()
    else:
        from lit_blind.loading import load_prior

        prior = load_prior(args.prior)
    torch.set_grad_enabled(True)
    probe = BlurLikelihoodProbe(kernel_size=31)
    xs = images(args.prior, args.images)
    rows = []
    t_base = t_ours = t_exp = 0.0
    n_units = 0
    dq_dop, dq_exp = [], []
    for i, x in enumerate(xs):
        units, batch = probe.blurred(x)
        u = rademacher((1, 1, *x.shape[1:]), torch.Generator().manual_seed(i))
        t0 = time.perf_counter()
        base = torch.cat([potential(prior, batch[j : j + 1], solver="rk45", probes=u).value for j in range(len(units))])
        t_base += time.perf_counter() - t0
        t0 = time.perf_counter()
        ours = potential(prior, batch, solver="dopri5", probes=u)
        t_ours += time.perf_counter() - t0
        t0 = time.perf_counter()
        fast = potential(prior, batch, solver="expint", steps=32, probes=u)
        t_exp += time.perf_counter() - t0
        n_units += len(units)
        dq_dop.append((ours.value - base).abs().max().item())
        dq_exp.append((fast.value - base).abs().max().item())
        rows.append((i, len(units), ours.nfe.double().mean().item()))
    # noise of the differences q(h ⋆ x) − q(x): fresh probe per call vs one shared probe
    x = xs[0]
    units, batch = probe.blurred(x)
    fresh, shared = [], []
    for r in range(args.repeats):
        g = torch.Generator().manual_seed(1000 + r)
        v = potential(prior, batch, solver="dopri5", probes=rademacher((1, len(units), *x.shape[1:]), g)).value
        fresh.append(v[1:] - v[0])
        v = potential(prior, batch, solver="dopri5", probes=rademacher((1, 1, *x.shape[1:]), g)).value
        shared.append(v[1:] - v[0])
    sd_fresh = torch.stack(fresh).std(0).mean().item()
    sd_shared = torch.stack(shared).std(0).mean().item()
    per = lambda t: t / n_units  # noqa: E731
    print(f"prior={args.prior} images={len(xs)} inputs per image={rows[0][1]} (4 families x 11 θ, θ=0 once)")
    print(f"threads={torch.get_num_threads()}  mean NFE (dopri5) per input={sum(r[2] for r in rows) / len(rows):.0f}")
    print(f"{'method':34s} {'s per (image,θ)':>16s} {'speed-up':>9s} {'max |Δq| vs baseline':>21s}")
    print(f"{'baseline: scipy RK45, one at a time':34s} {per(t_base):16.3f} {1.0:9.1f} {0.0:21.3f}")
    print(f"{'lit_blind dopri5, batched grid':34s} {per(t_ours):16.3f} {t_base / t_ours:9.1f} {max(dq_dop):21.3f}")
    print(f"{'lit_blind expint(32), batched grid':34s} {per(t_exp):16.3f} {t_base / t_exp:9.1f} {max(dq_exp):21.3f}")
    print(
        f"noise (std over {args.repeats} repeats) of q(h⋆x)−q(x), mean over θ: fresh probe per call {sd_fresh:.2f} nats, "
        f"shared probe (CRN) {sd_shared:.2f} nats"
    )


if __name__ == "__main__":
    main()
