"""How much the default EM's result on the Levin captures moves under a perturbation far below their noise.

Each capture y is perturbed by white Gaussian noise of std ``--eps`` (default 1e-4, ≈ 1/30 of the captures'
noise level σ̂_y ≈ 0.003; seed 1000 + the capture's index; clipped to [0, 1]), deblurred by the default
``lit_blind.deblur`` (31×31, large initialisation), and the kernel scored on the unperturbed y with the yardstick
of ``DeblurProbe`` (:func:`lit_blind.metrics.error_ratio`, :func:`lit_blind.metrics.kernel_error`). With
``--against PATH`` (a ``results.jsonl`` of the unperturbed default, large) it prints both runs per capture, the
success counts and how far the error ratios move: the spread inside which two settings of the engine cannot be
told apart by one count. Rows are appended to ``--out`` (JSON lines; captures already there are skipped), so two
processes can share a run with ``--part 0 --parts 2`` and ``--part 1 --parts 2``.

    python benchmarks/levin_spread.py [--eps 1e-4] [--part 0 --parts 2] [--out outputs/levin_spread.jsonl]
                                      [--against outputs/levin09_em_t19/results.jsonl]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from lit_blind import deblur
from lit_blind.data import LevinDataModule
from lit_blind.io import data_path
from lit_blind.loading import load_prior
from lit_blind.metrics import error_ratio, kernel_error

LEVIN = data_path("../shared/data") / "levin09"


def run(args: argparse.Namespace, out: Path) -> None:
    done = {json.loads(line)["image_id"] for line in out.read_text().splitlines()} if out.exists() else set()
    dm = LevinDataModule(root=str(LEVIN))
    dm.setup()
    prior = load_prior("natural-gray-small")
    for n, item in enumerate(dm.items):
        if n % args.parts != args.part or item["image_id"] in done:
            continue
        y, sharp, h = item["image"][None].double(), item["sharp"][None].double(), item["kernel"][None].double()
        gen = torch.Generator().manual_seed(1000 + n)
        t0 = time.perf_counter()
        res = deblur(
            (y + args.eps * torch.randn(y.shape, generator=gen, dtype=y.dtype)).clamp(0, 1), prior, kernel_size=31
        )
        h_true = F.pad(h, ((res.kernel.shape[-1] - h.shape[-1]) // 2,) * 4)
        row = {
            "image_id": item["image_id"],
            "eps": args.eps,
            "error_ratio": error_ratio(y, sharp, res.kernel, h_true),
            "kernel_error": kernel_error(res.kernel, h_true),
            "deblur_seconds": time.perf_counter() - t0,
        }
        print(json.dumps(row), flush=True)
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")


def compare(out: Path, against: Path) -> None:
    ref = {r["image_id"]: r for r in map(json.loads, against.read_text().splitlines()) if r["init"] == "large"}
    new = {r["image_id"]: r for r in map(json.loads, out.read_text().splitlines())}
    ids = sorted(set(ref) & set(new))
    print(f"{'capture':>12} {'ER':>7} {'ER perturbed':>13}")
    for i in ids:
        a, b = ref[i]["error_ratio"], new[i]["error_ratio"]
        print(f"{i:>12} {a:>7.2f} {b:>13.2f}" + ("  (crosses 3)" if (a <= 3) != (b <= 3) else ""))
    for label, rows in (("unperturbed", ref), ("perturbed", new)):
        er = [rows[i]["error_ratio"] for i in ids]
        ke = statistics.mean(rows[i]["kernel_error"] for i in ids)
        print(
            f"{label}: ER ≤ 3 {sum(e <= 3 for e in er)}/{len(ids)}, mean ER {statistics.mean(er):.2f}, kernel error {ke:.3f}"
        )
    moved = sorted(
        max(ref[i]["error_ratio"], new[i]["error_ratio"]) / min(ref[i]["error_ratio"], new[i]["error_ratio"])
        for i in ids
    )
    print(
        f"ER ratio between the runs: median {statistics.median(moved):.3f}, largest {moved[-1]:.2f}, above 1.2 on {sum(m > 1.2 for m in moved)}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--eps", type=float, default=1e-4, help="std of the white noise added to each capture")
    ap.add_argument("--part", type=int, default=0)
    ap.add_argument("--parts", type=int, default=1)
    ap.add_argument("--out", default="outputs/levin_spread.jsonl")
    ap.add_argument("--against", default=None, help="results.jsonl of the unperturbed default run (large)")
    args = ap.parse_args()
    if not 0 < args.eps < 0.1:
        ap.error(f"--eps must be in (0, 0.1), got {args.eps}")
    if not 0 <= args.part < args.parts:
        ap.error(f"--part must be in [0, --parts), got {args.part} with --parts {args.parts}")
    if not LEVIN.is_dir():
        print(f"skipped: {LEVIN} not found")
        return
    torch.set_num_threads(1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    run(args, out)
    if args.against:
        compare(out, Path(args.against))


if __name__ == "__main__":
    main()
