"""Numbers for a shipped prior's model card: denoising PSNR at σ = 0.1 on held-out images (Tweedie
D(y, σ) = y + σ² s(y, σ)), FFDNet-gray at the same σ for natural images, and a sample grid.

    python benchmarks/prior_card.py --prior natural-gray-small --images bsd68 --out checkpoints/natural-gray-small
    python benchmarks/prior_card.py --prior mnist-small --images mnist --out checkpoints/mnist-small
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from lit_blind.io import data_path
from lit_blind.loading import load_prior
from lit_blind.metrics import psnr
from lit_blind.sampling import sample_ve

SHARED = data_path("../shared/data")


def held_out(kind: str, n: int) -> list[torch.Tensor]:
    if kind == "mnist":
        from lit_blind.io import read_idx_images

        x = read_idx_images(SHARED / "mnist" / "t10k-images-idx3-ubyte.gz")[:n]
        x = torch.nn.functional.pad((x.float() / 255 > 0.5).float()[:, None], (2, 2, 2, 2))
        return [xi[None] for xi in x]
    from lit_blind.io import read_image

    files = sorted((SHARED / "natural" / "BSD68").glob("*.png"))[:n]
    out = []
    for f in files:
        x = read_image(f, channels=1)
        h, w = (x.shape[-2] // 4) * 4, (x.shape[-1] // 4) * 4  # the UNet needs multiples of 4
        out.append(x[..., :h, :w])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prior", required=True)
    ap.add_argument("--images", choices=["bsd68", "mnist"], required=True)
    ap.add_argument("--n", type=int, default=68)
    ap.add_argument("--sigma", type=float, default=0.1)
    ap.add_argument("--out", default=None, help="folder for samples.png")
    args = ap.parse_args()
    prior = load_prior(args.prior)
    g = torch.Generator().manual_seed(0)
    ffdnet = load_prior(SHARED / "weights" / "ffdnet_gray.pth") if args.images == "bsd68" else None
    ours, ref = [], []
    with torch.no_grad():
        for x in held_out(args.images, args.n):
            y = x + args.sigma * torch.randn(x.shape, generator=g)
            ours.append(psnr(prior.denoise(y, args.sigma), x, max_shift=0))
            if ffdnet is not None:
                ref.append(psnr(ffdnet.denoise(y, args.sigma), x, max_shift=0))
    print(
        f"prior {args.prior}: denoising PSNR at sigma={args.sigma} on {len(ours)} held-out {args.images} images: {sum(ours) / len(ours):.2f} dB"
    )
    if ref:
        print(f"FFDNet-gray at the same sigma and noise: {sum(ref) / len(ref):.2f} dB")
    if args.out:
        import torchvision

        c = prior.channels
        x = sample_ve(prior, (16, c, 32, 32), steps=500, generator=torch.Generator().manual_seed(0))
        torchvision.utils.save_image(torchvision.utils.make_grid(x.clamp(0, 1), nrow=4), Path(args.out) / "samples.png")
        print(f"samples: {Path(args.out) / 'samples.png'} (reverse VE SDE, 500 steps, seed 0)")


if __name__ == "__main__":
    main()
