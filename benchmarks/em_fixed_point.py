"""Is the true kernel a fixed point of the EM engine? Levin 2009 captures, the finest level started at the truth.

For each capture, :func:`lit_blind.marginal.marginal_em` runs its finest level only (one pyramid level,
``min_kernel`` = the kernel size) from ``init`` = the true kernel, with the σ schedule that level has in the
default coarse-to-fine run (the last ``iters`` values of the geometric ``sigma_start`` → ``sigma_end`` sequence;
``sigma_end`` the engine's default for the capture's noise level unless ``--sigma-end`` is given) and every other
setting at its default (``--prune-mass``: the kernel step's pruning, in the engine and the oracle alike;
``--refine``: the engine's refining kernel steps at the end; ``--finest-inner``: its E-step pairs at the finest
level; ``--finest-edges``: the gradients its kernel step keeps there; ``--polish``: its kernel steps on the final
pass's image). Printed per image: the error ratio and
kernel error after the first and after the last outer iteration (the last polishing round's kernel, the one the
engine returns, when ``--polish`` > 0), and the kernel step on the true sharp image
(the oracle of ``benchmarks/levin_compare.py``, edge selection on). If the iteration leaves the truth, the
coarse-to-fine path is not what limits the default there: its fixed point does. Rows are appended to ``--out``
(JSON lines) and images already there are skipped, so two processes can share a run:

    python benchmarks/em_fixed_point.py --images im1_kernel1 im3_kernel6 [--covariance none] [--sigma-end 0.015]
        [--prune-mass 0.1] [--refine 0] [--finest-inner 2] [--finest-edges 20] [--polish 0]
"""

from __future__ import annotations

import argparse
import inspect
import json
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F
from levin_compare import oracle  # beside this script

from lit_blind._limits import ATTENTIONS
from lit_blind.data import LevinDataModule
from lit_blind.io import data_path
from lit_blind.loading import load_prior
from lit_blind.marginal import COVARIANCES, annealing_end, marginal_em, pyramid, sigma_schedule
from lit_blind.metrics import error_ratio, kernel_error, noise_level

# the values of settings that older rows do not carry
LEGACY = {"prune_mass": 0.1, "refine": 0, "finest_inner": 2, "finest_edges": 20.0, "attention": "global", "polish": 0}
DEFAULTS = {k: p.default for k, p in inspect.signature(marginal_em).parameters.items()}
# the engine's options this benchmark passes through, each with the engine's default: flag → argparse keywords
ENGINE_OPTIONS = {
    "--prune-mass": dict(type=float, help="the kernel step's pruning (0.1 before the twelfth session)"),
    "--refine": dict(type=int, help="the refining kernel steps at the end (0 before the thirteenth)"),
    "--finest-inner": dict(
        type=int, help="E-step pairs per outer iteration at the finest level (2 before the fifteenth session)"
    ),
    "--finest-edges": dict(
        type=float,
        help="gradients the kernel step keeps at the finest level, in units of 4k (20 before the seventeenth session)",
    ),
    "--attention": dict(
        choices=ATTENTIONS, help="the denoiser's self-attention (global before the nineteenth session)"
    ),
    "--polish": dict(
        type=int, help="kernel steps on the final pass's image after the finest level (0 before the twentieth session)"
    ),
}


def finest_schedule(kernel_size: int, sigma_end: float) -> tuple[float, float]:
    """(σ_start, σ_end) of the finest level in the default coarse-to-fine run that ends at ``sigma_end``."""
    levels = len(pyramid(kernel_size, DEFAULTS["min_kernel"]))
    finest = sigma_schedule(levels, DEFAULTS["iters"], DEFAULTS["sigma_start"], sigma_end)[-1]
    return float(finest[0]), float(finest[-1])


def same_run(row: dict, run: dict) -> bool:
    """Whether a stored row has the settings ``run``; rows written before the twelfth session carry no
    ``prune_mass`` and had 0.1, rows before the thirteenth no ``refine`` and had 0, rows before the fifteenth no
    ``finest_inner`` and had 2, rows before the seventeenth no ``finest_edges`` and had 20, rows before the nineteenth
    no ``attention`` and had ``global``, rows before the twentieth no ``polish`` and had 0."""
    return all(row.get(key, LEGACY.get(key)) == v for key, v in run.items())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", nargs="*", help="image ids such as im1_kernel1 (default: all 32)")
    ap.add_argument("--covariance", default=DEFAULTS["covariance"], choices=COVARIANCES)
    ap.add_argument("--prior", default="natural-gray-small")
    ap.add_argument(
        "--sigma-end", type=float, default=None, help="σ_t at the end of the whole run (default: the engine's)"
    )
    engine_actions = [ap.add_argument(flag, **options) for flag, options in ENGINE_OPTIONS.items()]
    for action in engine_actions:
        action.default = DEFAULTS[action.dest]
    ap.add_argument("--out", default="outputs/em_fixed_point.jsonl")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    # what a row of this run carries besides its image (sigma_end None: the engine's default for each capture; the
    # engine options as the engine's by default; rows without them had LEGACY's values)
    engine = {action.dest: getattr(args, action.dest) for action in engine_actions}
    run = {"covariance": args.covariance, "prior": args.prior, "sigma_end": args.sigma_end} | engine
    done = {r["image_id"] for r in rows if same_run(r, run)}
    dm = LevinDataModule(root=str(data_path("../shared/data") / "levin09"))
    dm.setup()
    prior, k = load_prior(args.prior), 31
    for item in dm.items:
        name = item["image_id"]
        if name in done or (args.images and name not in args.images):
            continue
        y, sharp, h = item["image"][None].double(), item["sharp"][None].double(), item["kernel"][None].double()
        h_true = F.pad(h, ((k - h.shape[-1]) // 2,) * 4)
        first = []  # the kernel after the first outer iteration
        last = args.sigma_end
        if last is None:  # the engine's default for this capture
            last = annealing_end(prior, noise_level(y), DEFAULTS["sigma_start"])
        s0, s1 = finest_schedule(k, last)

        def keep_first(state: dict, first: list = first) -> None:
            if not first:
                first.append(state["kernel"])

        res = marginal_em(
            y,
            prior,
            k,
            init=h_true,
            min_kernel=k,
            sigma_start=s0,
            sigma_end=s1,
            covariance=args.covariance,
            callback=keep_first,
            **engine,
        )
        fit = oracle(prune_mass=args.prune_mass)(y, sharp, name)
        row = {"image_id": name} | run
        for label, est in (("first", first[0]), ("last", res.kernel), ("oracle", fit)):
            row[label] = {"error_ratio": error_ratio(y, sharp, est, h), "kernel_error": kernel_error(est, h)}
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(name, {key: round(row[key]["error_ratio"], 2) for key in ("first", "last", "oracle")}, flush=True)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    rows = [r for r in rows if same_run(r, run)]
    rows = [r for r in rows if not args.images or r["image_id"] in args.images]
    end = "the engine's default" if args.sigma_end is None else args.sigma_end
    print(f"\n{len(rows)} captures, covariance {args.covariance}, prior {args.prior}, sigma_end {end}")
    print("| started at the true kernel | ER ≤ 3 | mean ER | median ER | kernel error |\n|---|---|---|---|---|")
    rounds = f" and {args.polish} polishing rounds" if args.polish else ""  # the returned kernel is the last round's
    for key, label in (
        ("first", "after 1 iteration"),
        ("last", f"after {DEFAULTS['iters']}{rounds}"),
        ("oracle", "oracle"),
    ):
        er = [r[key]["error_ratio"] for r in rows]
        ke = statistics.mean(r[key]["kernel_error"] for r in rows)
        print(
            f"| {label} | {sum(e <= 3 for e in er)}/{len(er)} | {statistics.mean(er):.2f} | {statistics.median(er):.2f} | {ke:.3f} |"
        )


if __name__ == "__main__":
    main()
