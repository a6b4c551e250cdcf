"""Fit the GaussianPrior defaults (power-law spectrum S = c (eps + |w|^2)^-alpha) to natural images.

Mean periodogram of mean-removed 128x128 centre crops of the 400 Train400 gray images, then a
least-squares fit of log S over a small grid of eps. Prints the constants used as defaults.

    python benchmarks/fit_gaussian_prior.py [--data ../shared/data/natural/Train400]
"""

import argparse
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lit_blind.priors import frequency_grid


def main() -> None:
    ap = argparse.ArgumentParser()
    here = Path(__file__).resolve().parents[1]
    ap.add_argument("--data", default=str(here.parent / "shared/data/natural/Train400"))
    ap.add_argument("--size", type=int, default=128)
    args = ap.parse_args()
    files = sorted(Path(args.data).glob("*.png"))
    if not files:
        raise SystemExit(f"no PNG images under {args.data}")
    n, power, means = args.size, 0.0, []
    for f in files:
        a = np.asarray(Image.open(f).convert("L"), np.float64) / 255
        top, left = (a.shape[0] - n) // 2, (a.shape[1] - n) // 2
        crop = torch.from_numpy(a[top : top + n, left : left + n])
        means.append(float(crop.mean()))
        power = power + torch.fft.fft2(crop - crop.mean(), norm="ortho").abs() ** 2
    power = power / len(files)
    w2 = frequency_grid(n, n, None, torch.float64)
    mask = w2 > 0
    best = None
    for eps in [1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 0.2, 0.3, 0.5, 1.0]:
        a_mat = torch.stack([torch.ones_like(w2[mask]), -torch.log(eps + w2[mask])], 1)
        sol = torch.linalg.lstsq(a_mat, torch.log(power[mask])[:, None]).solution[:, 0]
        res = (a_mat @ sol - torch.log(power[mask])).pow(2).mean().item()
        if best is None or res < best[0]:
            best = (res, eps, math.exp(sol[0].item()), sol[1].item())
    res, eps, c, alpha = best
    print(f"images={len(files)} crop={n} mean={np.mean(means):.4f}")
    print(f"fit: scale c={c:.3e} eps={eps:.1e} alpha={alpha:.3f} (mean squared log residual {res:.3f})")


if __name__ == "__main__":
    main()
