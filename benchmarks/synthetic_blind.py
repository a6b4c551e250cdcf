"""Blind deblurring on data the EM engine was not tuned on: BSD68 photographs blurred by the Levin kernels
rotated by 90° (valid boundary, σ_y = 0.01 unless ``--noise``, 285×285 centre crops → 255×255 blurry images,
31×31 kernels, the large coarsest kernel unless ``--init small``).

Each image is blurred by Levin kernel ``(3·n mod 8) + 1`` (n = the BSD68 number) turned by 90°, so neither the
photographs nor the kernels are those of the Levin benchmark; ``--kernels motion`` blurs it instead by a random
camera-shake kernel of deepinv's ``MotionBlurGenerator`` seeded by n (:func:`motion_kernel`), kernels from no
benchmark at all. Rows: the default EM (covariance term on),
EM without it, and EM with the analytic ``GaussianPrior`` in place of the diffusion prior (covariance off, and
the default otherwise: ``--rows Wiener``);
columns: error ratio (:func:`lit_blind.metrics.error_ratio`) and kernel error against the true kernel. The
second row counts the covariance term over the kept edge gradients only (``covariance="kept"``), the third
weights each kernel entry by the denoiser's per-pixel (Tweedie) variance of the kept gradients
(``covariance="tweedie"``), the ``hqs`` row uses the E-step's exact covariance at the estimated noise level
(``covariance="hqs"``). ``--rows`` keeps the rows whose label contains one of the given words.

    python benchmarks/synthetic_blind.py [--images test003 test012 ...] [--rows Tweedie default] [--iters 4]
        [--edge-window 0] [--noise 0.003] [--kernels motion] [--init small] [--finest-inner 2]
        [--finest-edges 20] [--attention global] [--polish 0] [--compare-after 3] [--polish-covariance denoiser] [--repetition 0]
        [--precision 32-true] [--edge-bins 4] [--second-order 0.5] [--polish-second-order 0.5]
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch
from deepinv.physics.generator import MotionBlurGenerator
from PIL import Image

from lit_blind._limits import ATTENTIONS, POLISH_COVARIANCES, PRECISIONS, SIGMA_Y_MAX
from lit_blind.io import data_path, read_levin_kernels
from lit_blind.loading import load_prior
from lit_blind.marginal import marginal_em
from lit_blind.metrics import error_ratio, kernel_error
from lit_blind.physics import add_noise, blur
from lit_blind.priors import GaussianPrior

DATA = data_path("../shared/data")
IMAGES = ["test003", "test012", "test027", "test041", "test055", "test060", "test066", "test019"]
CONFIGS = {
    "EM default (covariance on)": ("diffusion", {}),
    "EM, covariance over the kept gradients": ("diffusion", {"covariance": "kept"}),
    "EM, per-pixel Tweedie variance of the kept gradients": ("diffusion", {"covariance": "tweedie"}),
    "EM, E-step covariance at the estimated noise level (hqs)": ("diffusion", {"covariance": "hqs"}),
    "EM without the covariance term": ("diffusion", {"covariance": "none"}),
    "EM with the GaussianPrior, no covariance": ("gaussian", {"covariance": "none"}),
    "EM default with the GaussianPrior (a Wiener denoiser)": ("gaussian", {}),
}


def motion_kernel(number: int) -> torch.Tensor:
    """A random camera-shake kernel of deepinv's ``MotionBlurGenerator`` (Schuler et al. 2015: a Gaussian-process
    trajectory, Matérn covariance, length scale 0.3) on a 31×31 support, seeded by ``number``; its spread σ = 0.5
    (deepinv's default 0.25) gives extents of 10–25 pixels on the first 16 seeds, the range of Levin's kernels
    (13–27), so that they fit the 31×31 support the EM estimates."""
    h = MotionBlurGenerator((31, 31), dtype=torch.float64, sigma=0.5).step(1, seed=number)["filter"]
    return h / h.sum()


def turned_levin_kernel(index: int, size: int = 31) -> torch.Tensor:
    """Levin's kernel ``index + 1`` turned by 90° (so that it is none of the Levin benchmark's), zero-padded to
    ``size`` × ``size``."""
    h = torch.rot90(read_levin_kernels(DATA / "levin09" / "kernels" / "Levin09.mat")[index], 1, (-2, -1)).double()
    return torch.nn.functional.pad(h, ((size - h.shape[-1]) // 2,) * 4)


def problem(
    name: str, seed: int, noise: float = 0.01, kernels: str = "levin"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """(y, the sharp part of x that y sees, the 31×31 true kernel, its number: Levin's, or the motion kernel's seed);
    white noise of σ ``noise``; ``kernels``: ``levin`` (turned by 90°) or ``motion`` (:func:`motion_kernel`)."""
    a = np.asarray(Image.open(DATA / "natural" / "BSD68" / f"{name}.png"), np.float64) / 255
    c0, c1 = (a.shape[0] - 285) // 2, (a.shape[1] - 285) // 2
    x = torch.from_numpy(a[c0 : c0 + 285, c1 : c1 + 285].copy())[None, None]
    if kernels == "motion":
        j = int(name[-2:])
        h = motion_kernel(j)
    else:
        j = (int(name[-2:]) * 3) % 8
        h = turned_levin_kernel(j)
        j += 1
    y = add_noise(blur(x, h, "valid"), noise, torch.Generator().manual_seed(seed))
    return y, x[..., 15:-15, 15:-15], h, j


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", nargs="+", default=IMAGES)
    ap.add_argument("--rows", nargs="+", default=None, help="only the rows whose label contains one of these words")
    ap.add_argument("--iters", type=int, default=None, help="EM outer iterations per level (default: the engine's)")
    ap.add_argument(
        "--edge-window", type=int, default=None, help="usefulness window of the edge selection (0: magnitude only)"
    )
    ap.add_argument("--noise", type=float, default=0.01, help="σ_y of the white noise added to the blur")
    ap.add_argument(
        "--kernels",
        default="levin",
        choices=["levin", "motion"],
        help="the blurs: Levin's kernels turned by 90° (default) or random camera shake (deepinv's MotionBlurGenerator)",
    )
    ap.add_argument(
        "--sigma-end", type=float, default=None, help="the EM's last σ_t (default: the engine's, from the noise level)"
    )
    ap.add_argument(
        "--prune-mass", type=float, default=None, help="the kernel step's pruning (default: the engine's; 0.1 before)"
    )
    ap.add_argument(
        "--refine",
        type=int,
        default=None,
        help="the finest level's refining kernel steps (default: the engine's; 0 before)",
    )
    ap.add_argument(
        "--finest-inner",
        type=int,
        default=None,
        help="E-step pairs per outer iteration at the finest level (default: the engine's; 2 before)",
    )
    ap.add_argument(
        "--finest-edges",
        type=float,
        default=None,
        help="gradients kept by the kernel step at the finest level, in units of 4k (default: the engine's; 20 before)",
    )
    ap.add_argument(
        "--attention",
        default=None,
        choices=ATTENTIONS,
        help="the denoiser's self-attention (default: the engine's, local; global before the nineteenth session)",
    )
    ap.add_argument(
        "--polish",
        type=int,
        default=None,
        help="kernel steps on the final pass's image after the finest level (default: the engine's, 3; 0 before the "
        "twentieth session, 2 before the twenty-seventh)",
    )
    ap.add_argument(
        "--polish-flanks",
        type=int,
        default=None,
        help="the polishing's kernel steps also keep the pixels within this distance of a kept gradient (default: the "
        "engine's, 1; 0 before the twenty-sixth session)",
    )
    ap.add_argument(
        "--compare-after",
        type=int,
        default=None,
        help="init both: the starts are compared after this many polishing rounds, the kept one polished on (default: "
        "the engine's, 2; with --polish 2 the engine before the twenty-seventh session)",
    )
    ap.add_argument(
        "--polish-covariance",
        default=None,
        choices=POLISH_COVARIANCES,
        help="the level of the polishing rounds' covariance term (default: the engine's, noise; denoiser before the "
        "twenty-third session)",
    )
    ap.add_argument(
        "--repetition",
        type=float,
        default=None,
        help="the polishing's kernel steps leave out gradients repeating above this correlation (default: the engine's, "
        "0.2; 0, off, before the twenty-ninth session)",
    )
    ap.add_argument(
        "--init",
        default=None,
        choices=["large", "small", "both"],
        help="the coarsest kernel of the EM (default: the engine's; both: a run from each, the sharper result kept)",
    )
    ap.add_argument(
        "--precision",
        default=None,
        choices=PRECISIONS,
        help="the prior network's arithmetic (default: the engine's; 32-true before the twenty-fifth session)",
    )
    ap.add_argument(
        "--edge-bins",
        type=int,
        default=None,
        help="bins of the gradient's direction the kernel step's edge selection counts over (default: the engine's, 1; "
        "4: Cho & Lee's)",
    )
    ap.add_argument(
        "--second-order",
        type=float,
        default=None,
        help="weight of the second differences beside the first in the kernel step (default: the engine's; 0.5: Cho & "
        "Lee's)",
    )
    ap.add_argument(
        "--polish-second-order",
        type=float,
        default=None,
        help="their weight in the polishing rounds (default: the engine's, 0)",
    )
    args = ap.parse_args()
    if not 0 < args.noise <= SIGMA_Y_MAX:
        ap.error(f"--noise must be in (0, {SIGMA_Y_MAX}], got {args.noise}")
    configs = {k: v for k, v in CONFIGS.items() if args.rows is None or any(w in k for w in args.rows)}
    if not (DATA / "natural" / "BSD68").is_dir():
        print(f"skipped: {DATA} not found")
        return
    torch.set_num_threads(1)
    priors = {"diffusion": load_prior("natural-gray-small"), "gaussian": GaussianPrior()}
    rows: dict[str, list[tuple[float, float]]] = {label: [] for label in configs}
    # the engine options given on the command line; the others keep the engine's defaults
    passed = (
        "iters edge_window sigma_end prune_mass refine finest_inner finest_edges attention polish polish_flanks compare_after polish_covariance repetition init precision edge_bins second_order polish_second_order"
    ).split()
    engine = {name: getattr(args, name) for name in passed if getattr(args, name) is not None}
    for n, name in enumerate(args.images):
        y, x, h, j = problem(name, n % 4, args.noise, args.kernels)
        for label, (prior, options) in configs.items():
            res = marginal_em(y, priors[prior], 31, **options, **engine)
            rows[label].append((error_ratio(y, x, res.kernel, h), kernel_error(res.kernel, h)))
            print(
                f"{name} {args.kernels} kernel {j}: {label}: ER {rows[label][-1][0]:.2f}, kernel error {rows[label][-1][1]:.3f}"
            )
    print("| method | images | ER ≤ 3 | mean ER | median ER | mean kernel error | median kernel error |")
    print("|---|---|---|---|---|---|---|")
    for label, r in rows.items():
        er, ke = [v[0] for v in r], [v[1] for v in r]
        print(
            f"| {label} | {len(r)} | {sum(e <= 3 for e in er)}/{len(r)} | {statistics.mean(er):.2f} | "
            f"{statistics.median(er):.2f} | {statistics.mean(ke):.3f} | {statistics.median(ke):.3f} |"
        )


if __name__ == "__main__":
    main()
