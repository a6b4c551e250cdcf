"""``lit-blind deblur IMAGE --prior SPEC --kernel-size K --out DIR``: blind deconvolution of one photo.

The default ``--algorithm em`` is :func:`lit_blind.marginal.marginal_em` (an RGB photo stays RGB with a gray
prior); ``--algorithm alternating|drs`` runs the paper's Algorithms 1–2, whose step options are rejected with
``em`` rather than ignored.

Writes ``deblurred.png`` (cropped to the input size), ``kernel.png`` (scaled to its maximum), ``kernel.npy``
(the kernel, true-convolution convention, sum 1), ``comparison.png`` (blurry | deblurred | kernel) and
``result.json`` (settings, final θ size, data fidelity, seconds).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

# flag, type, default, help of the options that only Algorithms 1-2 read (None on the parser: an explicit value
# with --algorithm em is an error, not silently ignored)
MAP_OPTIONS = [
    ("--sigma-y", float, 0.01, "noise level σ_y"),
    ("--iterations", int, 40, "outer iterations K"),
    ("--inner", int, 10, "image steps per outer iteration K_x"),
    ("--reset", int, 100, "reset x to y every R iterations"),
    ("--gamma-x", float, "0.1 alternating, 1.0 drs", "image step γ_x"),
    ("--gamma-theta", str, "armijo", "θ step: a number (the paper: 0.001) or 'armijo'"),
    ("--theta-steps", int, 5, "θ steps per outer iteration"),
    ("--theta-start", int, 0, "outer iterations before the first kernel step"),
    ("--scales", int, 1, "coarse-to-fine scales (simplex family), 1 = off"),
]


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="lit-blind deblur", description="Blind deconvolution of one image")
    ap.add_argument("image", help="blurry image (PNG/JPEG/NPY/MAT), gray or RGB, any size >= the kernel")
    ap.add_argument(
        "--prior", required=True, help="load_prior spec: natural-gray-small, mnist-small, gaussian or a folder"
    )
    ap.add_argument("--kernel-size", type=int, default=31)
    ap.add_argument("--out", default="outputs/deblur")
    ap.add_argument("--family", default="simplex")
    ap.add_argument("--init", default="large", choices=["large", "small"])
    ap.add_argument(
        "--algorithm",
        default="em",
        choices=["em", "alternating", "drs"],
        help="em (default): coarse-to-fine EM with the prior's denoiser (lit_blind.marginal; valid boundary, its own "
        "schedule); alternating / drs: the paper's Algorithms 1 / 2 with the options below",
    )
    ap.add_argument("--boundary", default="valid", choices=["valid", "circular"])
    map_only = ap.add_argument_group("Algorithms 1-2 only (--algorithm alternating|drs)")
    for flag, typ, default, text in MAP_OPTIONS:
        map_only.add_argument(flag, type=typ, default=None, help=f"{text} (default {default})")
    return ap


def deblur_main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)  # before the heavy imports: --help answers at once
    import torch
    from tqdm import tqdm

    from lit_blind.io import read_image, write_image
    from lit_blind.loading import load_prior

    prior = load_prior(args.prior)
    # EM keeps an RGB photo in colour with a gray prior (kernel on the luminance); Algorithms 1–2 convert
    y = read_image(args.image, channels=None if args.algorithm == "em" else prior.channels)
    t0 = time.perf_counter()
    res = _deblur_em(args, y, prior, tqdm) if args.algorithm == "em" else _deblur_map(args, y, prior, tqdm)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    x = res.image
    if args.boundary == "valid":
        c = args.kernel_size // 2
        x = x[..., c : x.shape[-2] - c, c : x.shape[-1] - c]
    write_image(out / "deblurred.png", x.float())
    k = res.kernel[0, 0].cpu().numpy()
    np.save(out / "kernel.npy", k)
    write_image(out / "kernel.png", torch.from_numpy(k / k.max())[None])
    _comparison(out / "comparison.png", y, x, k)
    summary = {
        "image": str(args.image),
        "prior": args.prior,
        "settings": {k_: v for k_, v in vars(args).items() if k_ not in ("image", "out")},
        "data_fidelity": res.history["data_fidelity"][-1] if "data_fidelity" in res.history else None,
        "score_evals": res.history["score_evals"][-1],
        "seconds": time.perf_counter() - t0,
        "warnings": res.history.get("warnings", []),
    }
    for warning in summary["warnings"]:
        print(f"lit-blind: warning: {warning}")
    (out / "result.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {out}/deblurred.png, kernel.png, kernel.npy, comparison.png ({summary['seconds']:.1f} s)")
    return 0


def _deblur_em(args, y, prior, tqdm):
    """``--algorithm em``: :func:`~lit_blind.marginal.marginal_em` (its own schedule)."""
    from lit_blind.marginal import marginal_em

    given = [flag for flag, *_ in MAP_OPTIONS if getattr(args, flag[2:].replace("-", "_")) is not None]
    if given:
        raise ValueError(f"{', '.join(given)} apply to --algorithm alternating|drs only, not to --algorithm em")
    if args.boundary != "valid":
        raise ValueError(f"--algorithm em needs --boundary valid, got {args.boundary!r}")
    if args.family != "simplex":
        raise ValueError(f"--algorithm em estimates a free-form kernel: --family must be simplex, got {args.family!r}")
    bar = tqdm(desc="deblur (em)", unit="it")

    def progress(s: dict) -> None:
        bar.total = s["total"]
        bar.set_postfix(level=s["level"], sigma=f"{s['sigma']:.3g}", refresh=False)
        bar.update(1)

    res = marginal_em(y, prior, args.kernel_size, init=args.init, callback=progress)
    bar.close()
    return res


def _deblur_map(args, y, prior, tqdm):
    """``--algorithm alternating|drs``: Algorithm 1 / 2 through :func:`~lit_blind.api.deblur`."""
    from lit_blind.api import deblur

    for flag, _, default, _ in MAP_OPTIONS:
        name = flag[2:].replace("-", "_")
        if getattr(args, name) is None and flag != "--gamma-x":
            setattr(args, name, default)
    gamma_theta = args.gamma_theta if args.gamma_theta == "armijo" else float(args.gamma_theta)
    bar = tqdm(total=args.iterations * args.scales, desc="deblur", unit="it")
    res = deblur(
        y,
        prior,
        family=args.family,
        kernel_size=args.kernel_size,
        init=args.init,
        sigma_y=args.sigma_y,
        algorithm=args.algorithm,
        boundary=args.boundary,
        K=args.iterations,
        K_x=args.inner,
        R=args.reset,
        gamma_x=args.gamma_x if args.gamma_x is not None else (0.1 if args.algorithm == "alternating" else 1.0),
        gamma_theta=gamma_theta,
        theta_steps=args.theta_steps,
        theta_start=args.theta_start,
        scales=args.scales,
        callback=lambda s: bar.update(1) or bar.set_postfix(f=f"{s['data_fidelity']:.3g}"),
    )
    bar.close()
    return res


def _comparison(path: Path, y, x, k) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def show(ax, img, title):
        a = img[0].permute(1, 2, 0).clamp(0, 1).cpu().numpy()
        ax.imshow(a[..., 0] if a.shape[-1] == 1 else a, cmap="gray", vmin=0, vmax=1)
        ax.set_title(title)
        ax.axis("off")

    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4), gridspec_kw={"width_ratios": [1, 1, 0.6]})
    show(axes[0], y, "blurry")
    show(axes[1], x, "deblurred")
    axes[2].imshow(k, cmap="gray")
    axes[2].set_title("kernel")
    axes[2].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
