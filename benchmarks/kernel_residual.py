"""Does an estimated kernel explain the photograph as well as the true kernel? Levin 2009 captures.

For each capture and each kernel — the true one, the estimates that a ``lit-blind test`` run kept in its
``estimates/`` folder (``--estimates``, files ``<image_id>_<init>_kernel.npy``) and, with ``--peer``, the ℓ0 peer's
kernels of ``../shared/data/levin09/peer_l0_kernels`` — the image is reconstructed under that kernel by the EM
engine's E-step run long (:func:`lit_blind.marginal.e_step`: ``--pairs`` HQS pairs from the blurry image at the
engine's last σ_t, ρ as in :func:`~lit_blind.marginal.marginal_em`), and the data residual ½‖h ⋆ z − y‖² of that
image is printed over the noise floor ½ N σ̂_y² (σ̂_y = :func:`lit_blind.metrics.noise_level`, N the pixels of y).
A ratio near 1 explains the photograph down to its noise; an estimate whose ratio is above the true kernel's fits
the photograph worse than the truth does under the same prior — the estimate is not at the data's best fit, so
its error is the method's bias (the covariance term, the path), not an ambiguity of the data. Rows are appended to
``--out`` (JSON lines; captures and kernels already there are skipped, so two processes can share a run):

    lit-blind test --config configs/benchmarks/levin09.yaml --config configs/benchmarks/levin09_em.yaml
        --model.init_args.output_dir outputs/levin09_em_refine --model.init_args.probe.init_args.inits "[large]"
    python benchmarks/kernel_residual.py --estimates outputs/levin09_em_refine/estimates --peer [--images im1_kernel1]
"""

from __future__ import annotations

import argparse
import inspect
import json
import statistics
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from levin_compare import REFERENCES  # beside this script

from lit_blind.data import LevinDataModule
from lit_blind.io import data_path
from lit_blind.loading import load_prior
from lit_blind.marginal import annealing_end, e_step, marginal_em
from lit_blind.metrics import error_ratio, noise_level
from lit_blind.physics import data_fidelity

DEFAULTS = {k: p.default for k, p in inspect.signature(marginal_em).parameters.items()}
K = 31  # the kernel support of the Levin benchmark configs


def centred(h: torch.Tensor) -> torch.Tensor:
    """A (1, 1, k, k) kernel zero-padded to K × K, centre kept."""
    return F.pad(h, ((K - h.shape[-1]) // 2,) * 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--estimates", type=Path, help="a DeblurProbe output's estimates/ folder")
    ap.add_argument("--init", default="large", help="which of its estimates (the probe's init)")
    ap.add_argument("--peer", action="store_true", help="also the ℓ0 peer's kernels (shared data)")
    ap.add_argument("--pairs", type=int, default=16, help="HQS pairs of the long E-step")
    ap.add_argument("--images", nargs="*", help="image ids such as im1_kernel1 (default: all 32)")
    ap.add_argument("--prior", default="natural-gray-small")
    ap.add_argument("--out", type=Path, default=Path("outputs/kernel_residual.jsonl"))
    args = ap.parse_args()
    if args.pairs < 1:
        ap.error(f"--pairs must be a positive integer, got {args.pairs}")
    if args.estimates is not None and not args.estimates.is_dir():
        ap.error(f"--estimates must be a folder of <image_id>_<init>_kernel.npy files, got {args.estimates}")
    root = data_path("../shared/data") / "levin09"
    if not root.is_dir():
        print(f"skipped: {root} not found")
        return
    torch.set_num_threads(1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in args.out.read_text().splitlines()] if args.out.exists() else []
    run = {"prior": args.prior, "pairs": args.pairs}

    def same_run(row: dict) -> bool:
        return all(row[key] == v for key, v in run.items())

    done = {(r["image_id"], r["kernel"]) for r in rows if same_run(r)}
    dm = LevinDataModule(root=str(root))
    dm.setup()
    prior = load_prior(args.prior)
    for item in dm.items:
        name = item["image_id"]
        if args.images and name not in args.images:
            continue
        y, sharp, h = item["image"][None].double(), item["sharp"][None].double(), item["kernel"][None].double()
        kernels = {"true": centred(h)}
        if args.estimates is not None:
            kernels[f"estimate ({args.estimates.parent.name}, {args.init})"] = torch.from_numpy(
                np.load(args.estimates / f"{name}_{args.init}_kernel.npy")
            )[None, None].double()
        if args.peer:
            kernels["ℓ0 peer"] = REFERENCES["ℓ0 peer (IPOL 2019)"](y, sharp, name).double()
        sigma_y = noise_level(y)
        sigma = annealing_end(prior, sigma_y, DEFAULTS["sigma_start"])
        floor = 0.5 * y.numel() * sigma_y**2
        for label, est in kernels.items():
            if (name, label) in done:
                continue
            x0 = F.pad(y, (K // 2,) * 4, mode="replicate")
            z, xp = e_step(x0, y, est, prior, sigma, DEFAULTS["rho"], args.pairs)
            row = {"image_id": name, "kernel": label} | run
            row |= {
                "residual_ratio": float(data_fidelity(z, y, est, "valid").sum()) / floor,
                "prox_residual_ratio": float(data_fidelity(xp, y, est, "valid").sum()) / floor,
                "error_ratio": error_ratio(y, sharp, est, h),
            }
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(name, label, {k: round(row[k], 3) for k in ("residual_ratio", "error_ratio")}, flush=True)
    rows = [json.loads(line) for line in args.out.read_text().splitlines()]
    rows = [r for r in rows if same_run(r)]
    rows = [r for r in rows if not args.images or r["image_id"] in args.images]
    true = {r["image_id"]: r["residual_ratio"] for r in rows if r["kernel"] == "true"}
    print(f"\nprior {args.prior}, {args.pairs} HQS pairs; residual ½‖h ⋆ z − y‖² over the noise floor ½Nσ̂_y²")
    print("| kernel | captures | mean residual ratio | median | above the true kernel's | ER ≤ 3 | mean ER |")
    print("|---|---|---|---|---|---|---|")
    for label in dict.fromkeys(r["kernel"] for r in rows):
        r = [row for row in rows if row["kernel"] == label]
        ratio = [row["residual_ratio"] for row in r]
        above = sum(row["residual_ratio"] > true[row["image_id"]] for row in r if row["image_id"] in true)
        er = [row["error_ratio"] for row in r]
        print(
            f"| {label} | {len(r)} | {statistics.mean(ratio):.3f} | {statistics.median(ratio):.3f} | "
            f"{above}/{len(r)} | {sum(e <= 3 for e in er)}/{len(r)} | {statistics.mean(er):.2f} |"
        )


if __name__ == "__main__":
    main()
