"""Benchmark: the shipped prior's denoiser with its self-attention over the whole image (diffusers' default) and
within windows of its training size (``Prior.local_attention``, what ``marginal_em`` uses), on the same inputs.

natural-gray-small was trained on 32 × 32 patches, so its middle block's attention saw 8 × 8 tokens; on a
photograph it attends over every token of the image, at a cost quadratic in the area. Printed: the forward time
at the sizes of the EM's pyramid (one image, the minimum of ``--repeats`` runs, the two ways alternated) and the
denoising PSNR on BSD68 photographs at the EM's σ range (Tweedie D(x + σn, σ), the same noise both ways), with the
speed ratio and the PSNR difference.

    python benchmarks/local_attention.py [--images 8] [--sizes 64 128 288] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import time

import torch

from lit_blind.io import data_path, read_image
from lit_blind.loading import load_prior

DATA = data_path("../shared/data")
SIGMAS = (0.01, 0.02, 0.05)


def forward_seconds(prior, size: int, local: bool, repeats: int) -> float:
    x = torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(size))
    best = math.inf
    with prior.local_attention() if local else contextlib.nullcontext(), torch.no_grad():
        for _ in range(repeats):
            t = time.perf_counter()
            prior._denoise_unchecked(x, 0.02)
            best = min(best, time.perf_counter() - t)
    return best


def denoising_psnr(prior, images: list[torch.Tensor], sigma: float, local: bool) -> float:
    gen, out = torch.Generator().manual_seed(1), []
    with prior.local_attention() if local else contextlib.nullcontext(), torch.no_grad():
        for im in images:
            d = prior._denoise_unchecked(im + sigma * torch.randn(im.shape, generator=gen), sigma)
            out.append(-10 * math.log10(float((d - im).pow(2).mean())))
    return sum(out) / len(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=8, help="BSD68 photographs for the PSNR (0: timing only)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 288])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    prior = load_prior("natural-gray-small").float()
    print(f"natural-gray-small, {torch.get_num_threads()} thread(s)")
    print(f"{'size':>6} {'global ms':>10} {'local ms':>9} {'speed-up':>8}")
    for size in args.sizes:
        t = {False: math.inf, True: math.inf}
        for local in (False, True, True, False):  # alternated: neither way always runs first
            t[local] = min(t[local], forward_seconds(prior, size, local, args.repeats))
        print(f"{size:>6} {1e3 * t[False]:>10.0f} {1e3 * t[True]:>9.0f} {t[False] / t[True]:>7.2f}x")
    files = sorted((DATA / "natural" / "BSD68").glob("*.png"))[: args.images]
    if args.images and not files:
        print(f"PSNR skipped: no BSD68 photographs under {DATA / 'natural' / 'BSD68'}")
        return
    images = [read_image(f, channels=1).float() for f in files]
    print(f"denoising PSNR (dB), mean over {len(images)} BSD68 photographs at full size")
    print(f"{'sigma':>6} {'global':>8} {'local':>8} {'diff':>7}")
    for sigma in SIGMAS:
        g, loc = denoising_psnr(prior, images, sigma, False), denoising_psnr(prior, images, sigma, True)
        print(f"{sigma:>6} {g:>8.3f} {loc:>8.3f} {loc - g:>+7.3f}")


if __name__ == "__main__":
    main()
