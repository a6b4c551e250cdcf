"""Benchmark: the authors' potential against lit_blind's, on the same prior, images and probes (issue 14).

Baseline (the paper's code, ``songdiff/likelihood.py``): scipy ``solve_ivp`` RK45 at rtol = atol = 1e-5, a
numpy↔torch round trip per evaluation, u^T J u by a VJP, one image at a time. Every method integrates the
same images with the same Rademacher probe, and each is scored against scipy RK45 at rtol = atol = 1e-8 with
that probe (the solver error, in nats), so a speed-up bought with error the baseline does not have shows.

Printed, in this order:

1. **Where the time goes** in one baseline potential: network forward, the divergence VJP, and the rest
   (scipy, numpy↔torch and float64↔float32 casts), by timing those calls during the run; and the per-image
   cost of one forward at batch 1, 2, 8 and 41 (what batching a θ grid can save).
2. **Error against NFE** of every solver setting (mean over the images): seconds per potential, NFE, mean
   and largest |q − q_ref|, speed ratio to the baseline.

3. With ``--figure PATH``: the divergence integrand u^T(I − J_D)u along the first image's trajectory, at
   every evaluation of a dopri5 solve at rtol = atol = 1e-7 (why no solver reaches the reference cheaply:
   it oscillates in log σ).

    python benchmarks/likelihood.py [--prior natural-gray-small|mnist-small|tiny|PATH] [--images 2] [--size 64]
                                    [--figure docs/potential_integrand.png] [--blur θ] [--device cuda]

On a GPU (``--device cuda``) the timings synchronise the device around every timed call.

With ``--blur θ`` every image is first blurred by the 31×31 Gaussian kernel of that θ (circular boundary, as
``BlurLikelihoodProbe`` does): the inputs of Figs. 7–8, whose potentials the fixed-step solver integrates less
well (the README).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lit_blind.io import embedded_image
from lit_blind.kernels import family
from lit_blind.likelihood import potential, rademacher
from lit_blind.physics import blur
from lit_blind.probes.base import synchronize

BASELINE = "scipy RK45 1e-5, VJP (authors)"
METHODS = {
    BASELINE: dict(solver="rk45", rtol=1e-5, atol=1e-5),
    "dopri5 1e-5, VJP (same steps, torch)": dict(solver="dopri5", rtol=1e-5, atol=1e-5),
    "dopri5 1e-4, VJP": dict(solver="dopri5", rtol=1e-4, atol=1e-4),
    "dopri5 1e-3 + q_atol 0.2, forward diff.": dict(
        solver="dopri5", rtol=1e-3, atol=1e-3, q_atol=0.2, divergence="hutchinson-fd"
    ),
    "dopri5 1e-3 + q_atol 0.5, forward diff.": dict(
        solver="dopri5", rtol=1e-3, atol=1e-3, q_atol=0.5, divergence="hutchinson-fd"
    ),
    "expint 64 steps, forward diff.": dict(solver="expint", steps=64, divergence="hutchinson-fd"),
    "expint 128 steps, forward diff.": dict(solver="expint", steps=128, divergence="hutchinson-fd"),
}


def load(name: str):
    if name == "tiny":
        from lit_blind.testing import tiny_unet_prior

        return tiny_unet_prior(size=32)
    from lit_blind.loading import load_prior

    return load_prior(name)


def per_call_ms(prior, size: int, batch: int, device: torch.device, repeats: int = 3) -> float:
    """Milliseconds per image of one network forward (no graph) at this batch size."""
    x = torch.rand(batch, prior.channels, size, size, device=device)
    s = torch.full((batch,), 0.1, device=device)
    with torch.no_grad():
        prior._score_unchecked(x, s)
        synchronize(device)
        t0 = time.perf_counter()
        for _ in range(repeats):
            prior._score_unchecked(x, s)
        synchronize(device)
    return (time.perf_counter() - t0) / repeats / batch * 1e3


def profile(prior, x: torch.Tensor, u: torch.Tensor) -> dict[str, float]:
    """Seconds of one baseline potential spent in the network forward, in the divergence VJPs and elsewhere
    (scipy, numpy↔torch, casts), by timing those calls during the run."""
    spent = {"forward": 0.0, "vjp": 0.0}
    score, grad = prior._score_unchecked, torch.autograd.grad

    def timed(fn, key):
        def wrapper(*a, **k):
            synchronize(x.device)
            t0 = time.perf_counter()
            out = fn(*a, **k)
            synchronize(x.device)
            spent[key] += time.perf_counter() - t0
            return out

        return wrapper

    prior._score_unchecked, torch.autograd.grad = timed(score, "forward"), timed(grad, "vjp")
    try:
        t0 = time.perf_counter()
        potential(prior, x, probes=u, **METHODS[BASELINE])
        synchronize(x.device)
        total = time.perf_counter() - t0
    finally:
        del prior._score_unchecked
        torch.autograd.grad = grad
    return spent | {"other": total - spent["forward"] - spent["vjp"], "total": total}


def integrand_figure(prior, x: torch.Tensor, u: torch.Tensor, path: str) -> None:
    """Plot u^T(I − J_D)u against log σ at every evaluation of a tight dopri5 solve (whole range and a zoom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lit_blind import likelihood

    seen: list[tuple[float, float]] = []
    call = likelihood._Field.__call__

    def recording(self, x, lam, idx, with_div=True):
        v, div = call(self, x, lam, idx, with_div)
        if div is not None:
            seen.append((float(lam[0]), float(div[0, 0])))
        return v, div

    likelihood._Field.__call__ = recording
    try:
        potential(prior, x, probes=u, solver="dopri5", rtol=1e-7, atol=1e-7)
    finally:
        likelihood._Field.__call__ = call
    lam, div = zip(*sorted(seen), strict=True)
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.6))
    ax[0].plot(lam, div, ".", ms=1.5)
    zoom = [(a, b) for a, b in zip(lam, div, strict=True) if -3.5 <= a <= -1.5]
    ax[1].plot(*zip(*zoom, strict=True), ".-", ms=2, lw=0.5)
    for a, title in zip(ax, ("whole range", "zoom: log σ ∈ [−3.5, −1.5]"), strict=True):
        a.set(xlabel="λ = log σ", ylabel="u^T (I − J_D) u", title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"3. integrand figure ({len(seen)} evaluations): {path}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prior", default="natural-gray-small")
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--figure", default=None, help="also plot the divergence integrand of the first image here")
    ap.add_argument(
        "--blur", type=float, default=None, help="score the images blurred by the 31×31 Gaussian of this θ instead"
    )
    ap.add_argument("--device", default="cpu", help="torch device of the prior and the images (cpu: one thread)")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    prior = load(args.prior).to(device)
    names = ["camera", "moon", "coins", "text"][: args.images]
    xs = [torch.nn.functional.adaptive_avg_pool2d(embedded_image(n), args.size).double() for n in names]
    if args.blur is not None:  # what Figs. 7–8 score: h_θ ⋆ x, circular as in BlurLikelihoodProbe (§2.3)
        h = family("gaussian", 31)(torch.tensor([[args.blur]], dtype=torch.float64))
        xs = [blur(x, h) for x in xs]
    xs = [x.to(device) for x in xs]
    probes = [rademacher((1, 1, *x.shape[1:]), torch.Generator().manual_seed(i)).to(device) for i, x in enumerate(xs)]
    rows: dict[str, list[tuple[float, int, float]]] = {m: [] for m in METHODS}
    for i, (x, u) in enumerate(zip(xs, probes, strict=True)):
        ref = float(potential(prior, x, solver="rk45", rtol=1e-8, atol=1e-8, probes=u).value[0])
        for label, kw in METHODS.items():
            t0 = time.perf_counter()
            r = potential(prior, x, probes=u, **kw)
            synchronize(device)
            rows[label].append((time.perf_counter() - t0, int(r.nfe[0]), float(r.value[0]) - ref))
            print(
                f"{names[i]}: {label}: q − q_ref {rows[label][-1][2]:+.2f} nats, NFE {rows[label][-1][1]}", flush=True
            )

    prof = profile(prior, xs[0], probes[0])
    t_base = statistics.mean(r[0] for r in rows[BASELINE])
    nfe_base = statistics.mean(r[1] for r in rows[BASELINE])
    blurred = "" if args.blur is None else f", blurred by the Gaussian θ = {args.blur}"
    where = "one thread" if device.type == "cpu" else torch.cuda.get_device_name(device)
    print(
        f"\nprior={args.prior}, {len(xs)} images {args.size}×{args.size}{blurred}, {where}, one shared probe per image"
    )
    print(
        f"1. one baseline potential ({names[0]}): {prof['total']:.2f} s; mean over the images {t_base:.2f} s, {nfe_base:.0f} NFE"
    )
    print(
        "   "
        + ", ".join(f"{k} {prof[k] / prof['total']:.0%}" for k in ("forward", "vjp", "other"))
        + " (other: scipy, numpy↔torch, float64↔float32 casts)"
    )
    batched = {b: per_call_ms(prior, args.size, b, device) for b in (1, 2, 8, 41)}
    print("   forward ms per image at batch " + ", ".join(f"{b}: {t:.1f}" for b, t in batched.items()))
    print("\n2. error against NFE (reference: scipy RK45 at rtol = atol = 1e-8, same probe)")
    print("| method | s per potential | NFE | mean abs(q − q_ref) | max abs(q − q_ref) | speed vs baseline |")
    print("|---|---|---|---|---|---|")
    for label, r in rows.items():
        t = statistics.mean(v[0] for v in r)
        err = [abs(v[2]) for v in r]
        print(
            f"| {label} | {t:.2f} | {statistics.mean(v[1] for v in r):.0f} | {statistics.mean(err):.2f} | "
            f"{max(err):.2f} | {t_base / t:.1f}× |"
        )
    if args.figure:
        integrand_figure(prior, xs[0], probes[0], args.figure)


if __name__ == "__main__":
    main()
