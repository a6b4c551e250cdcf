"""The EM on the 32 Levin captures in several roundings of the same computation, to judge a change on more than one
draw (README, "Channels-last activations, and what rounding does to the Levin numbers": the same method rounded
differently moves the mean error ratio by ≈ 0.2 and the count by one).

A draw is the denoiser's arithmetic: ``cl`` (bfloat16, channels-last activations: the default where the CPU computes
in bfloat16 natively), ``nchw`` (bfloat16 with the activations left in NCHW, the twenty-fifth to twenty-ninth sessions'
rounding) or ``fp32`` (float32: what ``precision="auto"`` runs on a CPU without native bfloat16). ``--option KEY=VALUE``
passes ``marginal_em`` options (YAML values), the candidate under test. Each capture's result is appended to
``OUT/<draw>.jsonl`` as it finishes (a rerun resumes); ``--part i/n`` runs every n-th capture from the i-th, so that
one draw splits over processes. ``--report`` prints, per draw found in OUT and per ``--baseline`` file (any jsonl with
``image_id``, ``error_ratio``, ``kernel_error``, e.g. a ``lit-blind test`` run's ``results.jsonl``): ER ≤ 3, mean and
median error ratio, mean kernel error, seconds per capture of the method alone (``deblur_seconds``); then the captures that fail in every draw and the mean
spread of a capture's error ratio between draws.

    python benchmarks/levin_draws.py --draw cl [--part 0/2] [--option finest_inner=6] [--out outputs/levin_draws]
    python benchmarks/levin_draws.py --report [--out DIR] [--baseline outputs/levin_cl/results.jsonl ...]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
import yaml
from precision import VARIANTS, levin_items, nchw_activations, timed_em  # beside this script

from lit_blind.loading import load_prior
from lit_blind.results import ResultsFile

# draw → (marginal_em's precision, activations left in NCHW): precision.py's variants under short names
DRAWS = {"cl": VARIANTS["bf16-mixed"], "nchw": VARIANTS["bf16 NCHW"], "fp32": VARIANTS["32-true"]}


def option(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` → (key, the YAML value)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--option must be KEY=VALUE, got {text!r}")
    return key, yaml.safe_load(value)


def part(text: str) -> tuple[int, int]:
    """``i/n`` with 0 ≤ i < n."""
    i, sep, n = text.partition("/")
    if not (sep and i.isdigit() and n.isdigit() and 0 <= int(i) < int(n)):
        raise argparse.ArgumentTypeError(f"--part must be i/n with 0 <= i < n, got {text!r}")
    return int(i), int(n)


def read(path: Path) -> dict[str, dict]:
    """The rows of a results file by image id (the last line of an id wins; a torn last line is ignored)."""
    return {r["image_id"]: r for r in ResultsFile(path.parent, key=("image_id",), name=path.name).rows()}


def run(out: Path, draw: str, options: dict, which: tuple[int, int]) -> None:
    items = levin_items()
    if items is None:
        return
    torch.set_num_threads(1)
    prior = load_prior("natural-gray-small").float()
    precision, nchw = DRAWS[draw]
    results = ResultsFile(out, key=("image_id",), name=f"{draw}.jsonl")  # append-only, resumable
    for r in results.rows():
        if r.get("options", {}) != options:
            raise SystemExit(
                f"{results.path} holds results with options {r.get('options')}, not {options}: use another --out"
            )
    for name in sorted(items)[which[0] :: which[1]]:
        if results.done({"image_id": name}):
            continue
        with nchw_activations(nchw):
            seconds, er, ke = timed_em(prior, items[name], precision=precision, **options)
        row = dict(image_id=name, error_ratio=er, kernel_error=ke, deblur_seconds=seconds, draw=draw, options=options)
        results.append(row)
        print(f"{draw} {name}: ER {er:.3f}, kernel error {ke:.3f}, {seconds:.1f} s", flush=True)


def report(out: Path, baselines: list[Path]) -> None:
    runs = {p.stem: read(p) for p in sorted(out.glob("*.jsonl"))} | {str(p): read(p) for p in baselines}
    print("| draw | captures | ER ≤ 3 | mean ER | median ER | mean kernel error | s per capture |")
    print("|---|---|---|---|---|---|---|")
    for name, rows in runs.items():
        er = [r["error_ratio"] for r in rows.values()]
        ke = [r["kernel_error"] for r in rows.values()]
        sec = [r.get("deblur_seconds") for r in rows.values()]  # the method alone
        s = f"{statistics.mean(sec):.1f}" if None not in sec else "—"
        print(
            f"| {name} | {len(er)} | {sum(e <= 3 for e in er)}/{len(er)} | {statistics.mean(er):.3f} | "
            f"{statistics.median(er):.3f} | {statistics.mean(ke):.3f} | {s} |"
        )
    common = sorted(set.intersection(*(set(rows) for rows in runs.values()))) if runs else []
    if len(runs) > 1 and common:
        failing = [n for n in common if all(rows[n]["error_ratio"] > 3 for rows in runs.values())]
        spread = statistics.mean(statistics.stdev([rows[n]["error_ratio"] for rows in runs.values()]) for n in common)
        print(f"on the {len(common)} captures in every draw: error ratio s.d. between draws {spread:.3f} on average;")
        print(f"failing (ER > 3) in every draw: {', '.join(failing) or 'none'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("outputs/levin_draws"))
    ap.add_argument("--draw", choices=sorted(DRAWS), help="the rounding to run")
    ap.add_argument("--option", type=option, action="append", default=[], help="a marginal_em option, KEY=VALUE")
    ap.add_argument("--part", type=part, default=(0, 1), help="i/n: every n-th capture from the i-th")
    ap.add_argument("--report", action="store_true", help="print the tables of the draws in --out")
    ap.add_argument("--baseline", type=Path, nargs="*", default=[], help="jsonl results to report beside the draws")
    args = ap.parse_args()
    if args.draw is None and not args.report:
        ap.error("--draw or --report is required")
    for p in args.baseline:
        if not p.is_file():
            ap.error(f"--baseline must name existing jsonl files, got {str(p)!r}")
    if args.draw is not None:
        run(args.out, args.draw, dict(args.option), args.part)
    if args.report:
        report(args.out, args.baseline)


if __name__ == "__main__":
    main()
