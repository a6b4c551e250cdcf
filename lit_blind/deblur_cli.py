"""``lit-blind deblur IMAGE --prior SPEC --kernel-size K --out DIR``: blind deconvolution of one photo.

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
        default="alternating",
        choices=["alternating", "drs", "em"],
        help="em: coarse-to-fine EM (lit_blind.marginal; valid boundary, its own schedule: the step options below "
        "do not apply)",
    )
    ap.add_argument("--boundary", default="valid", choices=["valid", "circular"])
    ap.add_argument("--sigma-y", type=float, default=0.01)
    ap.add_argument("--iterations", type=int, default=40, help="outer iterations K")
    ap.add_argument("--inner", type=int, default=10, help="image steps per outer iteration K_x")
    ap.add_argument("--reset", type=int, default=100, help="reset x to y every R iterations")
    ap.add_argument("--gamma-x", type=float, default=None, help="image step (default 0.1 alternating, 1.0 drs)")
    ap.add_argument("--gamma-theta", default="armijo", help="a number (the paper: 0.001) or 'armijo'")
    ap.add_argument("--theta-steps", type=int, default=5)
    ap.add_argument("--theta-start", type=int, default=0, help="outer iterations before the first kernel step")
    ap.add_argument("--scales", type=int, default=1, help="coarse-to-fine scales (simplex family), 1 = off")
    return ap


def deblur_main(argv: list[str]) -> int:
    import torch
    from tqdm import tqdm

    from lit_blind.io import read_image, write_image
    from lit_blind.loading import load_prior

    args = _parser().parse_args(argv)
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
    }
    (out / "result.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {out}/deblurred.png, kernel.png, kernel.npy, comparison.png ({summary['seconds']:.1f} s)")
    return 0


def _deblur_em(args, y, prior, tqdm):
    """``--algorithm em``: :func:`~lit_blind.marginal.marginal_em` (its own schedule)."""
    from lit_blind.marginal import marginal_em, pyramid

    if args.boundary != "valid":
        raise ValueError(f"--algorithm em needs --boundary valid, got {args.boundary!r}")
    if args.family != "simplex":
        raise ValueError(f"--algorithm em estimates a free-form kernel: --family must be simplex, got {args.family!r}")
    bar = tqdm(total=4 * len(pyramid(args.kernel_size)), desc="deblur (em)", unit="it")
    res = marginal_em(
        y,
        prior,
        args.kernel_size,
        init=args.init,
        callback=lambda s: bar.update(1) or bar.set_postfix(level=s["level"], sigma=f"{s['sigma']:.3g}"),
    )
    bar.close()
    return res


def _deblur_map(args, y, prior, tqdm):
    """``--algorithm alternating|drs``: Algorithm 1 / 2 through :func:`~lit_blind.api.deblur`."""
    from lit_blind.api import deblur

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
