"""Command line: ``lit-blind demo`` (the main job on embedded data) and, for experiments,
``lit-blind fit|validate|test|predict`` through LightningCLI (see configs/)."""

from __future__ import annotations

import argparse
import sys

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")


def _demo(argv: list[str]) -> int:
    from lit_blind.demo import print_summary, run_demo

    ap = argparse.ArgumentParser(prog="lit-blind demo", description="Theorem 1 in closed form on an embedded image")
    ap.add_argument("--out", default="outputs/demo", help="output directory")
    ap.add_argument("--size", type=int, default=128, help="image size (pixels)")
    args = ap.parse_args(argv)
    summary = run_demo(args.out, size=args.size)
    print_summary(summary)
    print(f"outputs in {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "demo":
        return _demo(argv[1:])
    if argv and argv[0] in LIGHTNING_SUBCOMMANDS:
        from lit_blind.lightning_cli import run_lightning_cli

        run_lightning_cli(argv)
        return 0
    print(
        "usage: lit-blind {demo|fit|validate|test|predict} [options]  (lit-blind demo --help)",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
