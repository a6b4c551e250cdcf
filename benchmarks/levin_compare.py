"""Levin 2009: every method on one cumulative error-ratio plot, with the two reference rows computed here.

References scored with :func:`lit_blind.metrics.error_ratio` (the same yardstick as ``DeblurProbe``): the
no-blur Dirac kernel, the kernels of the ℓ0-gradient peer (Anger, Facciolo & Delbracio, IPOL 2019,
``../shared/data/levin09/peer_l0_kernels/``, correlation orientation: flipped to true convolution here, as the
Levin loader does), and two oracle fits: the EM engine's kernel step (:func:`lit_blind.marginal.kernel_step`,
no covariance term) given the true sharp image (replicate-padded by 15 px to the valid domain) instead of an
estimate, once with every gradient, once with the engine's edge selection, once with that selection counted in
four bins of the gradient's direction (Cho & Lee's, ``edge_bins=4``) and once with the selection fitting the first
differences alone (``second_order=0``, the engine before the thirty-fifth session) — the best kernel the blur model
can fit to each capture, and what the edge selection alone costs. Methods: the ``results.jsonl`` of Levin runs
(``lit-blind test --config configs/benchmarks/levin09*.yaml``), given as ``LABEL=PATH[:INIT]``.

    python benchmarks/levin_compare.py --out docs/levin_error_ratios_all.png \\
        "EM=outputs/levin09_em_nocov/results.jsonl:large" "Algorithm 1=old/results.jsonl:large"
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lit_blind.data import LevinDataModule
from lit_blind.io import data_path
from lit_blind.kernels import dirac
from lit_blind.marginal import EDGE_BINS, PRUNE_MASS, SECOND_ORDER, kernel_step
from lit_blind.metrics import error_ratio, kernel_error

SHARED = data_path("../shared/data") / "levin09"


def oracle(**options):
    """The engine's kernel step on the true sharp image (no covariance term), with the given options of
    :func:`~lit_blind.marginal.kernel_step` (edge selection, pruning)."""
    return lambda y, sharp, name: kernel_step(F.pad(sharp, (15,) * 4, mode="replicate"), y, 31, 0.0, **options)


REFERENCES = {
    "Dirac (no deblurring)": lambda y, sharp, name: dirac(31, torch.float64),
    "ℓ0 peer (IPOL 2019)": lambda y, sharp, name: torch.from_numpy(
        np.load(SHARED / "peer_l0_kernels" / f"{name}.npy")[::-1, ::-1].copy()
    )[None, None],
    "oracle: kernel step on the true image, all gradients": oracle(edges=0),
    "oracle: kernel step on the true image, edge selection": oracle(),
    "oracle: kernel step on the true image, edge selection in four direction bins": oracle(edge_bins=4),
    "oracle: kernel step on the true image, edge selection, first differences alone": oracle(second_order=0),
}


def reference_rows(labels: list[str]) -> dict[str, dict[str, dict]]:
    """{label: {image_id: row}} for the given :data:`REFERENCES`, rows with ``error_ratio``, ``kernel_error`` and
    ``no_blur_distance``."""
    dm = LevinDataModule(root=str(SHARED))
    dm.setup()
    out: dict[str, dict[str, dict]] = {label: {} for label in labels}
    for item in dm.items:
        y, sharp, h = item["image"][None].double(), item["sharp"][None].double(), item["kernel"][None].double()
        for label in labels:
            est = REFERENCES[label](y, sharp, item["image_id"])
            row = {"error_ratio": error_ratio(y, sharp, est, h), "kernel_error": kernel_error(est, h)}
            out[label][item["image_id"]] = row | {"no_blur_distance": kernel_error(est, dirac(31, torch.float64))}
        print(item["image_id"], {k: round(v[item["image_id"]]["error_ratio"], 2) for k, v in out.items()}, flush=True)
    return out


def method_rows(spec: str) -> tuple[str, dict[str, dict]]:
    label, path = spec.split("=", 1)
    path, _, init = path.partition(":")
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "error_ratio" in r and (not init or r["init"] == init)]
    return label, {r["image_id"]: r for r in rows}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("methods", nargs="*", help="LABEL=results.jsonl[:INIT]")
    ap.add_argument("--out", default="outputs/levin_compare.png")
    ap.add_argument("--no-references", action="store_true", help="skip the reference rows (≈ 15 CPU minutes)")
    ap.add_argument("--references", default="outputs/levin_references.json", help="cache of the reference rows")
    args = ap.parse_args()
    if not SHARED.is_dir():
        print(f"skipped: {SHARED} not found")
        return
    table = dict(method_rows(m) for m in args.methods)
    if not args.no_references:
        cache = Path(args.references)
        known = json.loads(cache.read_text()) if cache.is_file() else {}
        # the kernel step's constants the oracles use
        engine = {"prune_mass": PRUNE_MASS, "edge_bins": EDGE_BINS, "second_order": SECOND_ORDER}
        if any(known.get(k) != v for k, v in engine.items()):  # fitted with another pruning or selection: again
            known = {k: v for k, v in known.items() if not k.startswith("oracle")} | engine
        missing = [label for label in REFERENCES if label not in known]
        if missing:
            known |= reference_rows(missing)
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(known))
        table |= {label: known[label] for label in REFERENCES}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    grid = np.linspace(1, 10, 200)
    formats = {
        "kernel_error": ".3f",
        "no_blur_distance": ".3f",
        "psnr": ".2f",
        "score_evals": ".0f",
        "deblur_seconds": ".0f",  # the method alone
        "seconds": ".0f",  # with the error ratio's two non-blind solves
    }
    print(
        "| method | images | ER ≤ 3 | mean ER | median ER | kernel error | distance to the Dirac | PSNR | score evals | method s/image | s/image |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for label, rows in table.items():
        er = np.array([r["error_ratio"] for r in rows.values()])
        ax.plot(grid, [(er <= g).mean() for g in grid], label=label)
        cells = [
            format(statistics.mean(r[c] for r in rows.values()), f) if all(c in r for r in rows.values()) else "—"
            for c, f in formats.items()
        ]
        print(
            f"| {label} | {len(er)} | {(er <= 3).sum()}/{len(er)} | {er.mean():.2f} | {np.median(er):.2f} | "
            + " | ".join(cells)
            + " |"
        )
    ax.axvline(3, color="gray", lw=0.5)
    ax.set(xlabel="error ratio", ylabel="fraction of the 32 images with ER ≤ x", ylim=(0, 1))
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
