"""Command line: ``lit-blind demo`` (the main job on embedded data), ``lit-blind deblur IMAGE`` (a user's
photo) and, for experiments,
``lit-blind fit|validate|test|predict`` through LightningCLI (see configs/)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")
COMMANDS = (
    ("deblur", "blind deblurring of one photo (default: coarse-to-fine EM with a diffusion prior)"),
    ("demo", "the main job on embedded data: EM and Algorithm 1 deblurring, Theorem 1 in closed form"),
    ("fit", "LightningCLI: train a score prior or run BlindDeconvModule (--config configs/fit/...)"),
    ("validate", "LightningCLI: validate a model (--config ...)"),
    ("test", "LightningCLI: run an experiment or benchmark probe (--config configs/experiments|benchmarks/...)"),
    ("predict", "LightningCLI: predict with a model (--config ...)"),
)


def _demo(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="lit-blind demo", description="Blind deblurring and Theorem 1 on embedded images")
    ap.add_argument("--out", default="outputs/demo", help="output directory")
    ap.add_argument("--size", type=int, default=128, help="image size of the Theorem-1 part (pixels)")
    ap.add_argument("--prior", default="natural-gray-small", help="prior of the deblurring part (load_prior spec)")
    ap.add_argument("--em-size", type=int, default=256, help="image size of the default (EM) deblurring part")
    ap.add_argument("--iterations", type=int, default=20, help="outer iterations K of the deblurring part")
    ap.add_argument("--inner", type=int, default=100, help="image steps K_x of the deblurring part")
    ap.add_argument("--skip-deblur", action="store_true", help="only the Theorem-1 part")
    args = ap.parse_args(argv)
    from lit_blind.demo import (
        print_deblur_summary,
        print_em_summary,
        print_summary,
        run_deblur_demo,
        run_demo,
        run_em_demo,
    )

    if not args.skip_deblur:
        print_em_summary(run_em_demo(Path(args.out) / "deblur", args.prior, size=args.em_size))
        print_deblur_summary(run_deblur_demo(Path(args.out) / "deblur", args.prior, K=args.iterations, K_x=args.inner))
    summary = run_demo(Path(args.out) / "theorem1", size=args.size)
    print_summary(summary)
    print(f"outputs in {args.out}")
    return 0


def _deblur(argv: list[str]) -> int:
    from lit_blind.deblur_cli import deblur_main

    return deblur_main(argv)


def main(argv: list[str] | None = None) -> int:
    from_shell = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "demo":
        return _demo(argv[1:])
    if argv and argv[0] == "deblur":
        return _deblur(argv[1:])
    if argv and argv[0] in LIGHTNING_SUBCOMMANDS:
        from lit_blind.lightning_cli import run_lightning_cli

        run_lightning_cli(None if from_shell else argv)  # None: LightningCLI reads sys.argv itself, no warning
        return 0
    asked = bool(argv) and argv[0] in ("-h", "--help")
    lines = ["usage: lit-blind COMMAND [options]   (lit-blind COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:9s} {text}" for name, text in COMMANDS]
    if argv and not asked:
        lines.insert(0, f"lit-blind: error: unknown command {argv[0]!r}")
    print("\n".join(lines), file=sys.stdout if asked else sys.stderr)
    return 0 if asked else 2


if __name__ == "__main__":
    raise SystemExit(main())
