"""Blind deblurring of real RGB photographs nothing was tuned on: the Köhler et al. 2012 shots in ``../shared/data``
(printouts 1–4 photographed under the same recorded camera trajectory 1, 800×800 RGB, no ground truth there).

Each shot goes through ``lit-blind deblur`` with its defaults (what a user runs; one folder per shot under
``--out``, skipped when its ``result.json`` exists, so an interrupted run resumes). With no sharp image the table
holds what can be checked without one:

* **agreement**: the four shots share one camera trajectory, so one blur up to its variation across the frame; the
  mean :func:`~lit_blind.metrics.kernel_error` of each estimate to the other three (after the best shift);
* **reference**: the kernel error to the kernel IRCNN ships with each shot (estimated by another blind method, *not*
  ground truth), in the orientation whose blur of our deblurred luminance is closer to the photograph's (the file
  does not say which it is); beside it, for scale, the references' own agreement (each to the other three);
* **sparsity**: :func:`~lit_blind.marginal.gradient_sparsity` of the luminance, blurry → deblurred (lower: sharper);
* **residual**: the rms of k ⋆ x̂ − y on the luminance over the noise level the engine estimated (≈ 1 when the
  estimate explains the photograph down to its noise; x̂ read back from the 8-bit ``deblurred.png``).

``--window`` passes its value to ``lit-blind deblur --window`` (e.g. ``auto``: the kernel estimated on a 372 × 372
part of each shot; README, "Large photographs").

    python benchmarks/kohler.py [--out outputs/kohler] [--shots 1 2 3 4] [--window auto] [--figure docs/kohler.png]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
import torch

from lit_blind.cli import main as lit_blind_main
from lit_blind.io import data_path, read_image, to_channels
from lit_blind.marginal import gradient_sparsity
from lit_blind.metrics import kernel_error
from lit_blind.physics import blur

DATA = data_path("../shared/data") / "kohler12"


def reference_kernel(path: Path, size: int) -> torch.Tensor:
    """IRCNN's 41×41 kernel (three equal channels, 8 bit), unit sum, padded to ``size`` when larger than it."""
    a = read_image(path, channels=1)[0, 0].double()
    a = a / a.sum()
    p = max(0, (size - a.shape[-1]) // 2)
    return torch.nn.functional.pad(a, (p,) * 4)[None, None]


def reblur(x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """h ⋆ x on x's own grid (x extended by its edge pixels): the photograph the estimate predicts."""
    return blur(torch.nn.functional.pad(x, (h.shape[-1] // 2,) * 4, mode="replicate"), h, "valid")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("outputs/kohler"))
    ap.add_argument("--shots", type=int, nargs="+", default=[1, 2, 3, 4], choices=[1, 2, 3, 4])
    ap.add_argument("--figure", type=Path, default=None, help="a figure: centre crops, blurry and deblurred; kernels")
    ap.add_argument("--window", default=None, help="lit-blind deblur's --window (default: its own)")
    args = ap.parse_args()
    if not (DATA / "blurry").is_dir():
        print(f"skipped: no Köhler shots under {DATA / 'blurry'}")
        return
    rows = {}
    for p in args.shots:
        name, out = f"Blurry{p}_1", args.out / f"Blurry{p}_1"
        if not (out / "result.json").is_file():
            window = [] if args.window is None else ["--window", args.window]
            if lit_blind_main(["deblur", str(DATA / "blurry" / f"{name}.png"), "--out", str(out), *window]) != 0:
                raise SystemExit(f"lit-blind deblur failed on {name}")
        summary = json.loads((out / "result.json").read_text())
        photo, deblurred = read_image(DATA / "blurry" / f"{name}.png"), read_image(out / "deblurred.png")
        y, x = (to_channels(im, 1).double() for im in (photo, deblurred))  # the luminances
        k = torch.from_numpy(np.load(out / "kernel.npy"))[None, None]
        ref = reference_kernel(DATA / "estimated_kernels_ircnn" / f"{name}_kernel.png", k.shape[-1])
        # the reference's orientation: the one whose blur of x̂ is closer to y (its file does not say)
        ref = min((ref, ref.flip(-1, -2)), key=lambda r: float((reblur(x, r) - y).norm()))
        sigma = summary["noise_level_estimate"]
        residual = float((reblur(x, k) - y).pow(2).mean().sqrt()) / sigma
        rows[name] = dict(
            kernel=k,
            ref=ref,
            crops=(photo, deblurred),
            reference=kernel_error(k, ref),
            sparsity=(gradient_sparsity(y), gradient_sparsity(x)),
            residual=residual,
            sigma=sigma,
            seconds=summary["seconds"],
            warnings=summary.get("warnings", []),
        )
    names = list(rows)
    header = f"{'shot':10} {'agreement':>9} {'reference':>9} {'refs agree':>10} {'sparsity':>15} {'residual':>8}"
    print(header + f" {'σ̂_y':>7} {'s':>6}")
    for n, r in rows.items():
        for key, kernel in (("agreement", "kernel"), ("refs_agree", "ref")):
            others = [kernel_error(r[kernel], rows[m][kernel]) for m in names if m != n]
            r[key] = statistics.mean(others) if others else float("nan")
        s0, s1 = r["sparsity"]
        print(
            f"{n:10} {r['agreement']:9.3f} {r['reference']:9.3f} {r['refs_agree']:10.3f} {s0:7.1f}→{s1:<7.1f} "
            f"{r['residual']:8.2f} {r['sigma']:7.4f} {r['seconds']:6.0f}"
            + (f"  {r['warnings']}" if r["warnings"] else "")
        )
    if len(rows) > 1:
        mean = {key: statistics.mean(r[key] for r in rows.values()) for key in ("agreement", "reference", "refs_agree")}
        print(f"{'mean':10} {mean['agreement']:9.3f} {mean['reference']:9.3f} {mean['refs_agree']:10.3f}")
    if args.figure is not None:
        figure(args.figure, rows)


def figure(path: Path, rows: dict) -> None:
    """Per shot: a 240×240 crop of the centre, blurry and deblurred, then our kernel and the reference (its centre)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 4, figsize=(10, 2.6 * len(rows)), squeeze=False)
    for ax, (name, r) in zip(axes, rows.items(), strict=True):
        for a, img, title in zip(ax[:2], r["crops"], ("blurry", "deblurred (default)"), strict=True):
            c0, c1 = (img.shape[-2] - 240) // 2, (img.shape[-1] - 240) // 2
            a.imshow(img[0, :, c0 : c0 + 240, c1 : c1 + 240].permute(1, 2, 0).clamp(0, 1).numpy())
            a.set_title(f"{name}: {title}", fontsize=8)
        c = (r["ref"].shape[-1] - r["kernel"].shape[-1]) // 2  # the reference shown on our kernel's support
        ref = r["ref"][..., c : r["ref"].shape[-2] - c, c : r["ref"].shape[-1] - c]
        for a, k, title in zip(ax[2:], (r["kernel"], ref), ("our kernel", "IRCNN's reference"), strict=True):
            a.imshow(k[0, 0].numpy(), cmap="gray")
            a.set_title(title + (f" (error {r['reference']:.2f})" if title == "our kernel" else ""), fontsize=8)
    for a in axes.flat:
        a.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=60)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
