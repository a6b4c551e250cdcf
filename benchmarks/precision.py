"""Benchmark: the shipped prior's denoiser in float32 and in bfloat16 (``Prior.precision``: autocast with
channels-last weights and activations, what ``marginal_em(precision="auto")`` runs where the device computes in
bfloat16 natively), and in bfloat16 with the activations left in NCHW (the twenty-fifth to twenty-ninth sessions'
``bf16-mixed``, the baseline of the channels-last activations: :func:`lit_blind.priors.channels_last_output` patched
out), on the same inputs, and the EM on one Levin capture each way.

Printed: the forward time at the sizes of the EM's pyramid (one image, inside ``Prior.local_attention`` as the EM
runs it, the minimum of ``--repeats`` runs, the variants alternated), the denoising PSNR on BSD68 photographs at the
EM's σ range (Tweedie D(x + σn, σ), the same noise every way) and the root-mean-square difference of the bfloat16
denoised images from float32's, with the speed ratios and the PSNR difference; then ``marginal_em`` (its defaults,
both starts) on ``--levin`` captures each way: seconds, error ratio and kernel error. On a CPU without native bfloat16
(no AMX, no AVX512-BF16) bfloat16 is emulated and the ratio falls below 1: the ``auto`` default keeps float32 there.

    python benchmarks/precision.py [--images 8] [--sizes 64 128 288] [--repeats 3] [--levin im1_kernel1]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import time
from collections.abc import Iterator
from unittest import mock

import torch

from lit_blind import priors
from lit_blind.data import LevinDataModule
from lit_blind.io import data_path, read_image
from lit_blind.loading import load_prior
from lit_blind.marginal import marginal_em
from lit_blind.metrics import error_ratio, kernel_error
from lit_blind.priors import native_bf16

DATA = data_path("../shared/data")
SIGMAS = (0.01, 0.02, 0.05)
# name → (Prior.precision's argument, activations left in NCHW)
VARIANTS = {"32-true": ("32-true", False), "bf16 NCHW": ("bf16-mixed", True), "bf16-mixed": ("bf16-mixed", False)}


def nchw_activations(nchw: bool) -> contextlib.AbstractContextManager:
    """With ``nchw``, a context within which ``Prior.precision`` leaves the activations' layout alone, as before the
    thirtieth session (its hook patched out); otherwise one that changes nothing."""
    if not nchw:
        return contextlib.nullcontext()
    return mock.patch.object(priors, "channels_last_output", lambda module, inputs, output: None)


@contextlib.contextmanager
def computing(prior, variant: str) -> Iterator[None]:
    """The prior's denoiser as ``variant`` (a key of VARIANTS) computes it, inside its local attention, without
    gradients."""
    precision, nchw = VARIANTS[variant]
    with nchw_activations(nchw), prior.local_attention(), prior.precision(precision), torch.no_grad():
        yield


def forward_seconds(prior, size: int, variant: str, repeats: int) -> float:
    x = torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(size))
    best = math.inf
    with computing(prior, variant):
        for _ in range(repeats):
            t = time.perf_counter()
            prior._denoise_unchecked(x, 0.02)
            best = min(best, time.perf_counter() - t)
    return best


def denoised(prior, images: list[torch.Tensor], sigma: float, variant: str) -> list[torch.Tensor]:
    gen, out = torch.Generator().manual_seed(1), []
    with computing(prior, variant):
        for im in images:
            out.append(prior._denoise_unchecked(im + sigma * torch.randn(im.shape, generator=gen), sigma).float())
    return out


def psnr(ds: list[torch.Tensor], images: list[torch.Tensor]) -> float:
    return sum(-10 * math.log10(float((d - im).pow(2).mean())) for d, im in zip(ds, images, strict=True)) / len(ds)


def levin_items() -> dict[str, dict] | None:
    """The Levin captures by image id; None, with a line saying so, where the data is absent."""
    if not (DATA / "levin09").is_dir():
        print(f"EM skipped: no Levin data under {DATA / 'levin09'}")
        return None
    dm = LevinDataModule(root=str(DATA / "levin09"))
    dm.setup()
    return {item["image_id"]: item for item in dm.items}


def timed_em(prior, item: dict, **options) -> tuple[float, float, float]:
    """``marginal_em`` with its defaults but ``options`` on one Levin capture: (seconds, error ratio, kernel error)."""
    y, x, h = item["image"][None].double(), item["sharp"][None].double(), item["kernel"][None].double()
    t = time.perf_counter()
    res = marginal_em(y, prior, 31, **options)
    return time.perf_counter() - t, error_ratio(y, x, res.kernel, h), kernel_error(res.kernel, h)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=8, help="BSD68 photographs for the PSNR (0: timing only)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 288])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--levin", nargs="*", default=["im1_kernel1"], help="Levin captures for the EM (none: skip)")
    args = ap.parse_args()
    prior = load_prior("natural-gray-small").float()
    native = "native" if native_bf16("cpu") else "emulated (precision='auto' keeps float32 on this CPU)"
    print(f"natural-gray-small, {torch.get_num_threads()} thread(s), bfloat16 on this CPU: {native}")
    names = list(VARIANTS)
    print(f"{'size':>6} {'fp32 ms':>8} {'bf16 NCHW ms':>12} {'bf16 ms':>8} {'vs fp32':>8} {'vs NCHW':>8}")
    for size in args.sizes:
        t = dict.fromkeys(names, math.inf)
        for variant in (*names, *names[::-1]):  # alternated: none always runs first
            t[variant] = min(t[variant], forward_seconds(prior, size, variant, args.repeats))
        a, n, b = (1e3 * t[v] for v in names)
        print(f"{size:>6} {a:>8.0f} {n:>12.0f} {b:>8.0f} {a / b:>7.2f}x {n / b:>7.2f}x")
    files = sorted((DATA / "natural" / "BSD68").glob("*.png"))[: args.images]
    if args.images and not files:
        print(f"PSNR skipped: no BSD68 photographs under {DATA / 'natural' / 'BSD68'}")
    elif files:
        images = [read_image(f, channels=1).float() for f in files]
        print(f"denoising PSNR (dB), mean over {len(images)} BSD68 photographs at full size")
        rms = ("rms(NCHW - fp32)", "rms(bf16 - fp32)")
        print(f"{'sigma':>6} {'fp32':>8} {'bf16 NCHW':>9} {'bf16':>8} {'diff':>7} {rms[0]:>17} {rms[1]:>17}")
        for sigma in SIGMAS:
            a, n, b = (denoised(prior, images, sigma, v) for v in names)
            rn, rb = (
                math.sqrt(sum(float((y - x).pow(2).mean()) for x, y in zip(a, c, strict=True)) / len(a)) for c in (n, b)
            )
            pa, pn, pb = psnr(a, images), psnr(n, images), psnr(b, images)
            print(f"{sigma:>6} {pa:>8.3f} {pn:>9.3f} {pb:>8.3f} {pb - pa:>+7.3f} {rn:>17.2e} {rb:>17.2e}")
    items = levin_items() if args.levin else None
    if items is None:
        return
    print("marginal_em (defaults, both starts) on Levin captures: seconds, error ratio, kernel error")
    print(
        f"{'capture':>12} " + " ".join(f"{v + ' ' + q:>14}" for q in ("s", "ER", "ke") for v in names) + "  NCHW/bf16 s"
    )
    for image_id in args.levin:
        runs = []
        for v in names:
            with nchw_activations(VARIANTS[v][1]):
                runs.append(timed_em(prior, items[image_id], precision=VARIANTS[v][0]))
        cells = " ".join(f"{r[q]:>14.3f}" for q in range(3) for r in runs)
        print(f"{image_id:>12} {cells} {runs[1][0] / runs[2][0]:>11.2f}x")


if __name__ == "__main__":
    main()
