"""The EM's kernel estimated on a window of a large photograph against on the whole of it (``marginal_em``'s
``window``; the module docstring of ``lit_blind.marginal``, "Large photographs"), on the five 512×512 photographs of
Set12 (08–12) blurred synthetically, so that the true kernel is known: each by Levin's kernel ``(3·n mod 8) + 1``
turned by 90° and by the random camera shake of ``synthetic_blind.motion_kernel`` seeded by n (n the Set12 number),
valid boundary (482×482 blurry images), σ_y = 0.01, 31×31 kernels; ``--kernels levin15``: by Levin's 15- and
13-pixel kernels (3 for the even numbers, 5 for the odd ones) turned, estimated on a 15×15 support (498×498 blurry
images; ``auto`` is then a 180-pixel square), the window's rule at another kernel scale; ``--kernels mixed``: Levin's
kernel for odd n, the random camera shake for even n (one blur per photograph). ``--photos DIR`` takes every PNG in DIR
instead (their 8-bit luma, n the number in the file name), e.g. the 24 Kodak photographs of cszn/FFDNet's
``testsets/Kodak24`` (500×500 crops; fetch them, they are not in ``../shared/data``). Neither the photographs nor the
kernels were used to tune the engine.

Per window (``full``: the whole image, the baseline; ``auto``; a number: the side in pixels), in one process on the same
inputs: error ratio ≤ 3, mean and median error ratio (:func:`lit_blind.metrics.error_ratio`, on the whole image),
mean kernel error, seconds per image of ``marginal_em`` and its ratio to ``full``'s, and the mean difference of the
error ratio to ``full``'s, on how many images it is higher, and its median. Each result is appended to
``OUT/results.jsonl`` as it finishes (a rerun resumes); ``--part i/n`` runs every n-th case from the i-th, so that the
cases split over processes.

    python benchmarks/window.py [--windows full auto 372 248] [--kernels levin motion levin15 mixed] [--part 0/2]
        [--photos DIR] [--out outputs/window]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from levin_draws import part  # beside this script
from PIL import Image
from synthetic_blind import motion_kernel, turned_levin_kernel

from lit_blind.io import data_path
from lit_blind.loading import load_prior
from lit_blind.marginal import marginal_em
from lit_blind.metrics import error_ratio, kernel_error
from lit_blind.physics import add_noise, blur
from lit_blind.results import ResultsFile

DATA = data_path("../shared/data")
IMAGES = ["08", "09", "10", "11", "12"]
KERNELS = ["levin", "motion"]
# the kernel support each family is estimated on: ``levin15`` is Levin's 15- and 13-pixel kernels (3 and 5) on a 15×15
# support, the window's rule (12 kernel sizes) at another scale
SIZES = {"levin": 31, "motion": 31, "levin15": 15, "mixed": 31}


def photo_number(path: Path) -> int | None:
    """n, the number in a photograph's file name (its digits), or None without one."""
    digits = "".join(c for c in path.stem if c.isdigit())
    return int(digits) if digits else None


def problem(path: Path, kernels: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, the sharp image x whose valid blur y is, the true kernel on its ``SIZES`` support) for the photograph at
    ``path`` (its luminance), n the number in its name."""
    with Image.open(path) as im:  # an 8-bit photograph's luma (a gray one unchanged: Set12), in float64
        x = torch.from_numpy(np.asarray(im.convert("L"), np.float64) / 255)[None, None]
    n, k = photo_number(path), SIZES[kernels]
    if kernels == "mixed":
        kernels = "motion" if n % 2 == 0 else "levin"
    if kernels == "motion":
        h = motion_kernel(n)
    else:
        h = turned_levin_kernel((3 * n) % 8 if kernels == "levin" else (2 if n % 2 == 0 else 4), k)
    y = add_noise(blur(x, h, "valid"), 0.01, torch.Generator().manual_seed(n))
    return y, x[..., k // 2 : -(k // 2), k // 2 : -(k // 2)], h


def run(out: Path, photos: list[Path], windows: list[str], kernels: list[str], which: tuple[int, int]) -> None:
    torch.set_num_threads(1)
    prior = load_prior("natural-gray-small").float()
    results = ResultsFile(out, key=("image", "kernels", "window"))  # append-only, resumable
    cases = [(path, k) for path in photos for k in kernels][which[0] :: which[1]]
    for path, kernels in cases:
        name = path.stem
        y, x, h = problem(path, kernels)
        for window in windows:
            row = dict(image=name, kernels=kernels, window=window)
            if results.done(row):
                continue
            t = time.perf_counter()
            res = marginal_em(y, prior, SIZES[kernels], window=window if window in ("full", "auto") else int(window))
            seconds = time.perf_counter() - t
            er, ke = error_ratio(y, x, res.kernel, h), kernel_error(res.kernel, h)
            results.append(row | dict(error_ratio=er, kernel_error=ke, seconds=seconds, at=res.history["window"]))
            print(f"{name} {kernels} {window}: ER {er:.3f}, kernel error {ke:.3f}, {seconds:.1f} s", flush=True)


def report(out: Path, windows: list[str]) -> None:
    rows = ResultsFile(out, key=("image", "kernels", "window")).rows()
    by = {w: {(r["image"], r["kernels"]): r for r in rows if r["window"] == w} for w in windows}
    base = by.get("full", {})
    print(
        "| window | images | ER ≤ 3 | mean ER | median ER | mean kernel error | s per image | time vs full | ER − full's "
        "| ER above full's | median ER change |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for w, got in by.items():
        if not got:
            continue
        er = [r["error_ratio"] for r in got.values()]
        ke = [r["kernel_error"] for r in got.values()]
        sec = [r["seconds"] for r in got.values()]
        both = [c for c in got if c in base]
        vs = "— | — | — | —"
        if both:
            ratio = statistics.mean(base[c]["seconds"] for c in both) / statistics.mean(got[c]["seconds"] for c in both)
            diff = [got[c]["error_ratio"] - base[c]["error_ratio"] for c in both]
            above = sum(d > 0 for d in diff)
            vs = f"{ratio:.2f}x faster | {statistics.mean(diff):+.3f} | {above}/{len(diff)} | {statistics.median(diff):+.3f}"
        print(
            f"| {w} | {len(er)} | {sum(e <= 3 for e in er)}/{len(er)} | {statistics.mean(er):.3f} | "
            f"{statistics.median(er):.3f} | {statistics.mean(ke):.3f} | {statistics.mean(sec):.1f} | {vs} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("outputs/window"))
    ap.add_argument("--windows", nargs="+", default=["full", "372", "248"], help="full, auto or a side in pixels")
    ap.add_argument(
        "--kernels", nargs="+", default=KERNELS, choices=sorted(SIZES), help="the blurs (default: %(default)s)"
    )
    ap.add_argument("--part", type=part, default=(0, 1), help="i/n: every n-th case from the i-th")
    ap.add_argument("--photos", type=Path, default=None, help="a folder of PNG photographs (default: Set12 08–12)")
    ap.add_argument("--report", action="store_true", help="only print the table of the results in --out")
    args = ap.parse_args()
    for w in args.windows:
        if w not in ("full", "auto") and not (w.isdigit() and int(w) >= 31):
            ap.error(f"--windows must be 'full', 'auto' or sides of at least 31 pixels, got {w!r}")
    if args.photos is None:
        photos = [DATA / "natural" / "Set12" / f"{n}.png" for n in IMAGES]
    else:
        photos = sorted(args.photos.glob("*.png"))
        if not photos or any(photo_number(p) is None for p in photos):
            ap.error(f"--photos must be a folder of PNG files with a number in each name, got {str(args.photos)!r}")
    if not args.report and not photos[0].is_file():
        print(f"skipped: no Set12 under {DATA / 'natural'}")
        return
    if not args.report:
        run(args.out, photos, args.windows, args.kernels, args.part)
    report(args.out, args.windows)


if __name__ == "__main__":
    main()
