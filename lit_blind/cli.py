"""The command line: ``lit-blind deblur IMAGE`` (a user's photo), ``lit-blind demo`` (the main job on embedded
data) and, for experiments, ``lit-blind fit|validate|test|predict`` through LightningCLI (``configs/``).

* User errors — a ``ValueError`` from the library's checks, an unreadable file, a bad path — end as one line
  ``lit-blind: error: <message>`` and exit status 2; ``--debug`` (anywhere on the line) or
  ``LIT_BLIND_DEBUG=1`` shows the traceback instead. Other exceptions are bugs and keep their traceback.
* ``deblur`` creates and checks ``--out`` before any computation, writes every file under a temporary name
  and renames it, ``result.json`` last: a folder without ``result.json`` is incomplete. Ctrl-C / SIGTERM
  write the current estimate with ``"interrupted": true`` and exit 130 / 143.
* ``test`` / ``fit`` cut short by SIGTERM exit 143 (Lightning stops after the current batch; finished rows
  stay in ``results.jsonl`` and a rerun resumes), by Ctrl-C with Lightning's status 1.
* torch, Lightning and diffusers are imported by the command that needs them, so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from lit_blind._limits import COVARIANCES, POLISH_COVARIANCES, PRECISIONS, SIGMA_Y_MAX

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")
COMMANDS = (
    ("deblur", "blind deblurring of one photo (default: coarse-to-fine EM with a diffusion prior)"),
    ("demo", "the main job on embedded data: EM and Algorithm 1 deblurring, Theorem 1 in closed form"),
    ("fit", "LightningCLI: train a score prior or run BlindDeconvModule (--config configs/fit/...)"),
    ("validate", "LightningCLI: validate a model (--config ...)"),
    ("test", "LightningCLI: run an experiment or benchmark probe (--config configs/experiments|benchmarks/...)"),
    ("predict", "LightningCLI: predict with a model (--config ...)"),
)
TRAINER_CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "trainer"

# flag, type, the library's name (deblur's parameter and the preset's key), help of the options that only
# Algorithms 1-2 read: None on the parser, the --preset's value when not given (lit_blind.deconv.PRESETS, where
# every default lives once); an explicit value with --algorithm em is an error, not silently ignored (except
# --sigma-y, which the EM reads too)
MAP_OPTIONS = [
    (
        "--sigma-y",
        float,
        "sigma_y",
        f"noise level σ_y of the image in [0, 1]; (0, {SIGMA_Y_MAX}] unless --force",
    ),
    ("--iterations", int, "K", "outer iterations K"),
    ("--inner", int, "K_x", "image steps per outer iteration K_x"),
    ("--reset", int, "R", "reset x to y every R iterations"),
    ("--gamma-x", float, "gamma_x", "image step γ_x"),
    ("--gamma-theta", str, "gamma_theta", "θ step: a number (the paper: 0.001) or 'armijo'"),
    ("--theta-steps", int, "theta_steps", "θ steps per outer iteration"),
    ("--theta-start", int, "theta_start", "outer iterations before the first kernel step"),
    ("--scales", int, "scales", "coarse-to-fine scales (simplex family), 1 = off"),
]
# parameter names of the library's messages -> the flags a user typed
FLAGS = {name: flag for flag, _, name, _ in MAP_OPTIONS} | {
    "kernel_size": "--kernel-size",
    "family": "--family",
    "init": "--init",
    "boundary": "--boundary",
    "spec": "--prior",
    "kind": "--prior-kind",
    "path": "IMAGE",
}


class Interrupted(Exception):
    """SIGTERM (or SIGINT) during ``deblur``, raised from the signal handler so the partial result is kept."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.exit_code = 128 + signum


def main(argv: list[str] | None = None) -> int:
    """``lit-blind`` with ``argv`` (None: the command line); returns the exit status."""
    from_shell = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("LIT_BLIND_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    if from_shell:
        sys.argv = [sys.argv[0], *argv]  # LightningCLI reads sys.argv itself (no warning about both)
    try:
        if argv and argv[0] == "demo":
            return demo_main(argv[1:])
        if argv and argv[0] == "deblur":
            return deblur_main(argv[1:])
        if argv and argv[0] in LIGHTNING_SUBCOMMANDS:
            return lightning_main(None if from_shell else argv)
    except (ValueError, OSError) as err:
        if debug:
            raise
        message = _flagged(str(err)) if argv[0] == "deblur" else str(err)
        print(f"lit-blind: error: {message}", file=sys.stderr)
        return 2
    return _usage(argv)


def _usage(argv: list[str]) -> int:
    asked = bool(argv) and argv[0] in ("-h", "--help")
    lines = ["usage: lit-blind COMMAND [options]   (lit-blind COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:9s} {text}" for name, text in COMMANDS]
    lines += ["", "--debug (or LIT_BLIND_DEBUG=1): a traceback instead of the one-line error message"]
    if argv and not asked:
        lines.insert(0, f"lit-blind: error: unknown command {argv[0]!r}")
    print("\n".join(lines), file=sys.stdout if asked else sys.stderr)
    return 0 if asked else 2


def _flagged(message: str) -> str:
    """The message with a leading library parameter name replaced by its flag (``kernel_size`` → ``--kernel-size``)."""
    name, _, rest = message.partition(" ")
    return f"{FLAGS[name]} {rest}" if name in FLAGS and rest else message


# ---------------------------------------------------------------------------------------------------- deblur


def deblur_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="lit-blind deblur",
        description="Blind deconvolution of one image: the sharp image and its blur kernel. Writes deblurred.png "
        "(cropped to the input size), kernel.png (scaled to its maximum), kernel.npy (true-convolution kernel, "
        "sum 1), comparison.png and, last, result.json; a folder without result.json is incomplete.",
    )
    ap.add_argument("image", help="blurry image (PNG/JPEG/TIFF 8 or 16 bit, NPY, MAT), gray or RGB, in [0, 1]")
    ap.add_argument(
        "--prior",
        default="natural-gray-small",
        help="load_prior spec: natural-gray-small, mnist-small, gaussian, a diffusers folder or a .pth "
        "(default: %(default)s)",
    )
    ap.add_argument(
        "--prior-kind", default=None, help="kind of a .pth state dict: edm-ncsnpp or edm-adm (default: by its keys)"
    )
    ap.add_argument("--kernel-size", type=int, default=31, help="odd side of the kernel support (default: %(default)s)")
    ap.add_argument("--out", default="outputs/deblur", help="output folder, created first (default: %(default)s)")
    ap.add_argument(
        "--family", default="simplex", help="kernel family: simplex (free form) or a 1-D family (default: %(default)s)"
    )
    ap.add_argument(
        "--init",
        default=None,
        choices=["both", "large", "small"],
        help="kernel initialisation: uniform over the support / small box / both (--algorithm em: the EM from each, "
        "the sharper result kept) (default: both with --algorithm em, large otherwise)",
    )
    ap.add_argument(
        "--algorithm",
        default="em",
        choices=["em", "alternating", "drs"],
        help="em: coarse-to-fine EM with the prior's denoiser (lit_blind.marginal, valid boundary, its own "
        "schedule); alternating / drs: the paper's Algorithms 1 / 2 with the options below (default: %(default)s)",
    )
    ap.add_argument(
        "--boundary",
        default="valid",
        choices=["valid", "circular"],
        help="valid: a real photo (y is smaller than x); circular: a synthetic periodic blur (default: %(default)s)",
    )
    ap.add_argument("--force", action="store_true", help=f"accept --sigma-y outside (0, {SIGMA_Y_MAX}]")
    em_only = ap.add_argument_group("EM only (--algorithm em)")
    em_only.add_argument(
        "--covariance",
        default=None,
        choices=COVARIANCES,
        help="the covariance term of the kernel step (README, Levin benchmark): full (over every pixel; best on "
        "synthetic blur), kept (over the kept edge gradients), tweedie (the denoiser's per-pixel variance of the "
        "kept gradients, 2x the denoiser calls), hqs (the E-step's exact covariance at the image's estimated "
        "noise level; better on the real Levin captures) or none (joint MAP) "
        "(default: full)",
    )
    em_only.add_argument(
        "--refine",
        type=int,
        default=None,
        help="the last N kernel steps of the finest level count the covariance over the kept edge gradients only "
        "(README, 'The kernel is refined at the end': better on real shake); 0 keeps the full term to the end, a "
        "lower kernel error on synthetic blur (default: 2)",
    )
    em_only.add_argument(
        "--polish",
        type=int,
        default=None,
        help="kernel steps after the finest level, each on the image of a non-blind pass under the current kernel "
        "(README, 'Polishing the kernel': a lower kernel error on synthetic blur, one success more on the Levin "
        "captures); 0 took about 27%% less time than two rounds in the twentieth session (default: 3)",
    )
    em_only.add_argument(
        "--polish-covariance",
        default=None,
        choices=POLISH_COVARIANCES,
        help="the level of the polishing's covariance term (README, 'Polishing at the photograph's noise level'): "
        "noise (1.4 x the image's noise level, below the prior's sigma_min too; better on the real Levin captures) "
        "or denoiser (the denoiser's last level, as before) (default: noise)",
    )
    em_only.add_argument(
        "--polish-flanks",
        type=int,
        default=None,
        help="the polishing's kernel steps also keep the pixels within N pixels of a kept edge gradient, the edges' "
        "flanks (README, 'Polishing with the edges' flanks': better on the real Levin captures); 0 keeps the "
        "selected gradients alone, as before (default: 1)",
    )
    em_only.add_argument(
        "--repetition",
        type=float,
        default=None,
        help="the polishing's kernel steps leave out the gradients whose repetition within the kernel's support, a "
        "correlation, exceeds R on the image they fit: stripes (README, 'Repeated texture left out of the "
        "polishing': one Levin success more); 0 keeps them, as before (default: 0.2)",
    )
    em_only.add_argument(
        "--second-order",
        type=float,
        default=None,
        help="the weight of the second differences beside the first in the kernel steps of the pyramid, Cho & Lee's "
        "(README, 'Second differences in the kernel step': better on the real Levin captures and under random camera "
        "shake); 0 fits the first differences alone, as before the thirty-fifth session (default: 0.5)",
    )
    em_only.add_argument(
        "--polish-second-order",
        type=float,
        default=None,
        help="their weight in the polishing rounds' kernel steps (README, 'Second differences in the kernel step': "
        "the first differences alone there keep the Levin results and lower the kernel error on noisy photos) "
        "(default: 0.0)",
    )
    em_only.add_argument(
        "--compare-after",
        type=int,
        default=None,
        help="the two starts of the default init 'both' are compared after N polishing rounds and the kept one "
        "alone goes on to all of them (README, 'The kept start polished on': the third round at the cost of one more "
        "non-blind pass); N at least the number of rounds polishes both starts fully (default: 2)",
    )
    em_only.add_argument(
        "--window",
        default=None,
        help="estimate the kernel on a square part of the photo, the one with the most isolated straight edges, refit "
        "it to the whole photo in the last polishing round and deconvolve the whole photo under it (README, 'Large "
        "photographs': 2.7x faster on an 800x800 photo, a little less accurate on most photos): full (the whole "
        "photo), auto (12 kernel sizes a side, at least 372 pixels; a smaller photo is estimated whole) or a side in "
        "pixels of at least the kernel size (default: full)",
    )
    em_only.add_argument(
        "--precision",
        default=None,
        choices=PRECISIONS,
        help="the prior network's arithmetic (README, 'The denoiser in bfloat16'): auto (bf16-mixed where the CPU or "
        "GPU computes in bfloat16 natively, else 32-true), 32-true or bf16-mixed (default: auto)",
    )
    map_only = ap.add_argument_group("Algorithms 1-2 only (--algorithm alternating|drs)")
    map_only.add_argument(
        "--preset",
        default=None,
        choices=["fast", "paper"],
        help="the schedule the options below default to (lit_blind.deconv.PRESETS): fast (40 outer iterations, "
        "Armijo θ steps) or paper (the paper's K = 400, K_x = 100) (default: fast)",
    )
    for flag, typ, _, text in MAP_OPTIONS:
        if flag == "--sigma-y":  # every algorithm reads it: listed with the common options
            more = "(default: --algorithm em estimates it from the image, alternating|drs take the --preset's)"
            ap.add_argument(flag, type=typ, default=None, help=f"{text} {more}")
        else:
            map_only.add_argument(flag, type=typ, default=None, help=f"{text} (default: from --preset)")
    return ap


def _check_sigma_y(sigma_y: float, force: bool) -> None:
    if not (0 < sigma_y <= SIGMA_Y_MAX or (force and sigma_y > 0)):
        more = " (--force accepts more, with --algorithm alternating|drs)"
        raise ValueError(f"--sigma-y must be in (0, {SIGMA_Y_MAX}] for an image in [0, 1]{more}, got {sigma_y}")


def deblur_main(argv: list[str]) -> int:
    args = deblur_parser().parse_args(argv)  # before the heavy imports: --help answers at once
    if args.kernel_size < 3 or args.kernel_size % 2 == 0:
        raise ValueError(f"--kernel-size must be an odd integer >= 3, got {args.kernel_size}")
    if args.algorithm == "em":
        given = [flag for flag, *_ in MAP_OPTIONS if flag != "--sigma-y" and getattr(args, _dest(flag)) is not None]
        given += ["--preset"] if args.preset is not None else []
        if given:
            raise ValueError(f"{', '.join(given)} apply to --algorithm alternating|drs only, not to --algorithm em")
        if args.sigma_y is not None:
            _check_sigma_y(args.sigma_y, force=False)
        for flag in ("--refine", "--polish", "--polish-flanks", "--compare-after"):
            if getattr(args, _dest(flag)) is not None and getattr(args, _dest(flag)) < 0:
                raise ValueError(f"{flag} must be a non-negative integer, got {getattr(args, _dest(flag))}")
        for flag in ("--second-order", "--polish-second-order"):
            value = getattr(args, _dest(flag))
            if value is not None and not 0 <= value < float("inf"):
                raise ValueError(f"{flag} must be a finite number >= 0, got {value}")
        if args.repetition is not None and not 0 <= args.repetition < 1:
            raise ValueError(f"--repetition must be in [0, 1) (a correlation; 0: off), got {args.repetition}")
        if args.window is not None and args.window not in ("auto", "full"):
            if not (args.window.isdigit() and int(args.window) >= args.kernel_size):
                raise ValueError(
                    f"--window must be auto, full or a side of at least --kernel-size ({args.kernel_size}) pixels, "
                    f"got {args.window!r}"
                )
            args.window = int(args.window)
    else:
        from lit_blind.deconv import preset

        em_flags = (
            "--covariance",
            "--refine",
            "--polish",
            "--polish-covariance",
            "--polish-flanks",
            "--repetition",
            "--second-order",
            "--polish-second-order",
            "--compare-after",
            "--window",
        )
        for flag in (*em_flags, "--precision"):
            if getattr(args, _dest(flag)) is not None:
                raise ValueError(f"{flag} applies to --algorithm em only, not to --algorithm {args.algorithm}")
        args.preset = args.preset or "fast"
        defaults = preset(args.preset, args.algorithm)
        for flag, _, name, _ in MAP_OPTIONS:
            if getattr(args, _dest(flag)) is None:
                setattr(args, _dest(flag), defaults[name])
        _check_sigma_y(args.sigma_y, args.force)
    out = _prepare_out(Path(args.out))
    import warnings

    from lit_blind.io import read_image, to_channels
    from lit_blind.metrics import noise_level

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y_file = read_image(args.image)
    for w in caught:
        print(f"lit-blind: warning: {w.message}", file=sys.stderr)
    if args.kernel_size > min(y_file.shape[-2:]):
        raise ValueError(f"--kernel-size {args.kernel_size} must not exceed the image size {tuple(y_file.shape[-2:])}")
    sigma_hat = noise_level(y_file)
    if args.algorithm == "em" and args.window is None:
        from lit_blind.marginal import auto_window

        side = auto_window(args.kernel_size)
        if min(y_file.shape[-2:]) > side:  # a large photo: the faster option, measured (README)
            print(
                f"lit-blind: note: --window auto estimates the kernel on a {side}x{side} part of this photo and refits "
                "it to the whole: 2.7x faster on an 800x800 photo, a little less accurate on most photos (README, "
                "'Large photographs')",
                file=sys.stderr,
            )
    print(f"noise level estimated from the image (MAD): {sigma_hat:.4f}", end="")
    if args.sigma_y is not None:
        print(f"; --sigma-y {args.sigma_y}", flush=True)
        if not 1 / 3 <= args.sigma_y / max(sigma_hat, 1e-12) <= 3:
            print(
                f"lit-blind: warning: --sigma-y {args.sigma_y} and the estimate {sigma_hat:.4f} differ by more "
                "than a factor 3",
                file=sys.stderr,
            )
    else:
        print(flush=True)

    from lit_blind.loading import load_prior

    prior = load_prior(args.prior, **({"kind": args.prior_kind} if args.prior_kind else {}))
    # EM keeps an RGB photo in colour with a gray prior (kernel on the luminance); Algorithms 1–2 convert
    y = y_file if args.algorithm == "em" else to_channels(y_file, prior.channels)
    if y.shape[1] != y_file.shape[1]:
        print(
            f"lit-blind: warning: --algorithm {args.algorithm} works in the prior's {prior.channels} channel(s): the "
            f"{y_file.shape[1]}-channel photo is converted and the result is {prior.channels}-channel "
            "(--algorithm em keeps an RGB photo in colour)",
            file=sys.stderr,
        )
    state: dict = {}
    t0 = time.perf_counter()
    try:
        with _signals_raise():
            res = _deblur_em(args, y, prior, state) if args.algorithm == "em" else _deblur_map(args, y, prior, state)
    except (KeyboardInterrupt, Interrupted) as err:
        code = err.exit_code if isinstance(err, Interrupted) else 130
        summary = _summary(args, sigma_hat, t0, interrupted=True)
        if state:
            summary.update(level=state.get("level"), iteration=state["iteration"], score_evals=state["score_evals"])
            _write_outputs(out, y, state["x"].detach(), state["kernel"].detach(), summary)
        else:
            _atomic_write(out / "result.json", lambda p: p.write_text(json.dumps(summary, indent=2) + "\n"))
        print(f"\nlit-blind: interrupted; the estimate so far is in {out} (result.json: interrupted)", file=sys.stderr)
        return code
    summary = _summary(args, sigma_hat, t0, interrupted=False)
    summary["data_fidelity"] = res.history["data_fidelity"][-1]
    summary["score_evals"] = res.history["score_evals"][-1]
    summary["warnings"] = res.history.get("warnings", [])
    if args.algorithm == "em":  # the noise level the EM used (its luminance's for RGB) and where σ_t ended
        summary |= {"em_sigma_y": res.history["sigma_y"], "em_sigma_end": res.history["sigma"][-1]}
        summary["em_precision"] = res.history["precision"]  # what --precision auto resolved to
        summary["em_window"] = res.history["window"]  # (top, left, height, width) the kernel was estimated on
        if "chosen" in res.history:  # --init both: the start whose result was kept
            summary["em_init_kept"] = res.history["chosen"]
    for warning in summary["warnings"]:
        print(f"lit-blind: warning: {warning}", file=sys.stderr)
    _write_outputs(out, y, res.image, res.kernel, summary)
    print(
        f"wrote {out}/deblurred.png, kernel.png, kernel.npy, comparison.png, result.json ({summary['seconds']:.1f} s)"
    )
    return 0


def _dest(flag: str) -> str:
    return flag[2:].replace("-", "_")


def _prepare_out(out: Path) -> Path:
    """Create ``out``, prove it writable and drop a previous ``result.json`` (it would vouch for the new files)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        (out / "result.json").unlink(missing_ok=True)
    except OSError as err:
        raise ValueError(f"--out must be a writable folder, got {str(out)!r}: {err.strerror or err}") from err
    return out


@contextmanager
def _signals_raise():
    """SIGTERM raises :class:`Interrupted` while the block runs (SIGINT already raises KeyboardInterrupt)."""

    def handler(signum, frame):
        raise Interrupted(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _summary(args, sigma_hat: float, t0: float, interrupted: bool) -> dict:
    return {
        "image": str(args.image),
        "prior": args.prior,
        "settings": {k: v for k, v in vars(args).items() if k not in ("image", "out")},
        "noise_level_estimate": sigma_hat,
        "seconds": time.perf_counter() - t0,
        "interrupted": interrupted,
    }


def _atomic_write(path: Path, write) -> None:
    """``write(tmp)`` to a hidden temporary file of the same suffix beside ``path``, then rename onto ``path``."""
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    write(tmp)
    os.replace(tmp, path)


def _write_outputs(out: Path, y, x, kernel, summary: dict) -> None:
    """Every file atomically, ``result.json`` last. With the valid boundary x is larger than y by the kernel's
    support and is cropped to it; an EM run interrupted at a coarse level is written at that level's size, and
    within ``--window`` at that window's."""
    import numpy as np
    import torch

    from lit_blind.io import write_image

    if summary["settings"]["boundary"] == "valid":
        c = kernel.shape[-1] // 2
        x = x[..., c : x.shape[-2] - c, c : x.shape[-1] - c]
    k = kernel[0, 0].double().cpu().numpy()
    _atomic_write(out / "deblurred.png", lambda p: write_image(p, x.float()))
    _atomic_write(out / "kernel.npy", lambda p: np.save(p, k))
    _atomic_write(out / "kernel.png", lambda p: write_image(p, torch.from_numpy(k / k.max())[None]))
    _atomic_write(out / "comparison.png", lambda p: _comparison(p, y, x, k))
    summary["image_size"] = list(x.shape[-2:])
    _atomic_write(out / "result.json", lambda p: p.write_text(json.dumps(summary, indent=2) + "\n"))


def _deblur_em(args, y, prior, state: dict):
    """``--algorithm em``: :func:`~lit_blind.marginal.marginal_em` (its own schedule)."""
    from tqdm import tqdm

    from lit_blind.marginal import marginal_em

    if args.boundary != "valid":
        raise ValueError(f"--algorithm em needs --boundary valid, got {args.boundary!r}")
    if args.family != "simplex":
        raise ValueError(f"--algorithm em estimates a free-form kernel: --family must be simplex, got {args.family!r}")
    # the engine's defaults, declared once, in its signature
    names = (
        "init",
        "covariance",
        "refine",
        "polish",
        "polish_covariance",
        "polish_flanks",
        "repetition",
        "second_order",
        "polish_second_order",
        "compare_after",
        "window",
    )
    for name in (*names, "precision"):
        if getattr(args, name) is None:
            setattr(args, name, inspect.signature(marginal_em).parameters[name].default)
    with tqdm(desc="deblur (em)", unit="it") as bar:

        def progress(s: dict) -> None:
            state.update(s)
            bar.total = s["total"]
            bar.set_postfix(level=s["level"], sigma=f"{s['sigma']:.3g}", f=f"{s['data_fidelity']:.3g}", refresh=False)
            bar.update(1)

        noise = {} if args.sigma_y is None else {"sigma_y": args.sigma_y}  # in place of the engine's estimate
        return marginal_em(
            y, prior, args.kernel_size, init=args.init, covariance=args.covariance, refine=args.refine, polish=args.polish,
            polish_covariance=args.polish_covariance, polish_flanks=args.polish_flanks, repetition=args.repetition,
            second_order=args.second_order, polish_second_order=args.polish_second_order,
            compare_after=args.compare_after, window=args.window, precision=args.precision, callback=progress,
            **noise,
        )  # fmt: skip


def _deblur_map(args, y, prior, state: dict):
    """``--algorithm alternating|drs``: Algorithm 1 / 2 through :func:`~lit_blind.api.deblur`."""
    from tqdm import tqdm

    from lit_blind.api import PAPER_INIT, deblur

    args.init = args.init or PAPER_INIT  # recorded in result.json's settings
    settings = {name: getattr(args, _dest(flag)) for flag, _, name, _ in MAP_OPTIONS}
    if settings["gamma_theta"] != "armijo":  # a str when given on the command line
        settings["gamma_theta"] = float(settings["gamma_theta"])
    with tqdm(total=args.iterations * args.scales, desc=f"deblur ({args.algorithm})", unit="it") as bar:

        def progress(s: dict) -> None:
            state.update(s)
            bar.set_postfix(f=f"{s['data_fidelity']:.3g}", refresh=False)
            bar.update(1)

        return deblur(
            y, prior, algorithm=args.algorithm, family=args.family, kernel_size=args.kernel_size, init=args.init,
            boundary=args.boundary, callback=progress, **settings,
        )  # fmt: skip


def _comparison(path: Path, y, x, k) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def show(ax, img, title):
        a = img[0].permute(1, 2, 0).clamp(0, 1).cpu().numpy()
        ax.imshow(a[..., 0] if a.shape[-1] == 1 else a, cmap="gray", vmin=0, vmax=1)
        ax.set_title(title)
        ax.axis("off")

    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4), gridspec_kw={"width_ratios": [1, 1, 0.6]})
    show(axes[0], y, "blurry")
    show(axes[1], x, "deblurred")
    axes[2].imshow(k, cmap="gray")
    axes[2].set_title("kernel")
    axes[2].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100, format=path.suffix[1:])
    plt.close(fig)


# ------------------------------------------------------------------------------------------------------ demo


def demo_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="lit-blind demo", description="Blind deblurring and Theorem 1 on embedded images")
    ap.add_argument("--out", default="outputs/demo", help="output directory (default: %(default)s)")
    ap.add_argument("--size", type=int, default=128, help="image size of the Theorem-1 part (default: %(default)s)")
    ap.add_argument(
        "--prior",
        default="natural-gray-small",
        help="prior of the deblurring parts, a load_prior spec (default: %(default)s)",
    )
    ap.add_argument(
        "--em-size", type=int, default=256, help="image size of the default (EM) deblurring part (default: %(default)s)"
    )
    ap.add_argument(
        "--iterations", type=int, default=20, help="outer iterations K of the Algorithm-1 part (default: %(default)s)"
    )
    ap.add_argument(
        "--inner", type=int, default=100, help="image steps K_x of the Algorithm-1 part (default: %(default)s)"
    )
    ap.add_argument("--skip-deblur", action="store_true", help="only the Theorem-1 part")
    args = ap.parse_args(argv)
    from lit_blind.demo import run_deblur_demo, run_demo, run_em_demo

    if not args.skip_deblur:
        _print_em_summary(run_em_demo(Path(args.out) / "deblur", args.prior, size=args.em_size))
        summary = run_deblur_demo(Path(args.out) / "deblur", args.prior, K=args.iterations, K_x=args.inner)
        _print_deblur_summary(summary)
    _print_theorem1_summary(run_demo(Path(args.out) / "theorem1", size=args.size))
    print(f"outputs in {args.out}")
    return 0


def _print_em_summary(s: dict) -> None:
    print(f"Default blind method (EM), {s['image']}, prior {s['prior']}")
    print(
        f"PSNR {s['blurry_psnr']:.2f} dB blurry -> {s['psnr']:.2f} dB deblurred ({s['psnr'] - s['blurry_psnr']:+.2f} dB), "
        f"kernel error {s['kernel_error']:.3f}, {s['score_evals']} denoiser evaluations, {s['seconds']:.1f} s"
    )


def _print_deblur_summary(s: dict) -> None:
    print(f"Blind deblurring, {s['image']}, motion blur, sigma_y=0.01, prior {s['prior']}, K={s['K']}, K_x={s['K_x']}")
    print(f"blurry PSNR {s['blurry_psnr']:.2f} dB")
    print(f"{'init':6s} {'kernel error':>12s} {'PSNR':>7s} {'dist. to no-blur':>16s} {'seconds':>8s}")
    for init in ("large", "small"):
        r = s[init]
        print(
            f"{init:6s} {r['kernel_error']:12.3f} {r['psnr']:7.2f} {r['kernel_error_vs_dirac']:16.3f} {r['seconds']:8.1f}"
        )


def _print_theorem1_summary(summary: dict) -> None:
    print(f"Theorem 1 on {summary['image']}, GaussianPrior, sigma_eps={summary['sigma_eps']}")
    print(
        f"{'family':10s} {'decreasing':>10s} {'q(x)-q(h5*x)':>14s} {'max|ODE-exact|':>15s} {'max|Δ ODE-Δ exact|':>19s}"
    )
    for name, s in summary["families"].items():
        print(
            f"{name:10s} {str(s['strictly_decreasing']):>10s} {s['decrease_q0_minus_q5']:14.1f} "
            f"{s['max_abs_ode_error']:15.2f} {s['max_abs_ode_error_of_differences']:19.2f}"
        )
    o = summary["ode"]
    print(f"ODE: {o['solver']} rtol={o['rtol']}, mean NFE {o['mean_nfe']:.0f}, {o['seconds']:.1f} s for 44 images")


# ------------------------------------------------------------------------------------------------- Lightning


def lightning_main(args: list[str] | None) -> int:
    """``lit-blind fit|validate|test|predict``: LightningCLI; 143 when SIGTERM cut the run short."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    try:
        run_lightning_cli(args)
    except SIGTERMException:  # a SystemExit without a status: Lightning's own exit would read as success
        print("lit-blind: terminated (SIGTERM); finished rows are kept, the same command resumes", file=sys.stderr)
        return 143
    return 0


def run_lightning_cli(args: list[str] | None, run: bool = True):
    """LightningCLI on ``args`` (``None``: the command line); returns the ``LightningCLI``. ``run=False``
    (``args`` without a subcommand) only parses the configs and instantiates the trainer, model and data.

    ``configs/trainer/default.yaml`` (every subcommand) and ``configs/trainer/test.yaml`` (``test``) are read
    before the ``--config`` files, which override them. The module's ``output_dir``, when it has one, is the
    one place a run writes to: the trainer's ``default_root_dir``, a TensorBoard/CSV logger's ``save_dir`` and
    the ``dirpath`` of a ``ModelCheckpoint`` that names none (``output_dir/checkpoints``) follow it, so
    ``--model.init_args.output_dir`` moves everything.
    """
    import lightning.pytorch as pl
    from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

    class SaveConfigToOutputDir(SaveConfigCallback):
        """``config.yaml`` (as run) into the module's ``output_dir``, else the logger's folder, else nowhere."""

        def save_config(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
            out = getattr(pl_module, "output_dir", None)
            if out is None and trainer.logger is not None:
                out = trainer.logger.log_dir
            if out is not None and trainer.is_global_zero:
                Path(out).mkdir(parents=True, exist_ok=True)
                self.parser.save(self.config, Path(out) / self.config_filename, skip_none=False, overwrite=True)

    class LitBlindCLI(LightningCLI):
        def instantiate_classes(self) -> None:
            try:
                super().instantiate_classes()
            except ValueError as err:
                raise _config_error(err, self._config()) from err

        def before_instantiate_classes(self) -> None:
            _follow_output_dir(self._config())

        def _config(self):
            return self.config[self.subcommand] if self.subcommand else self.config

    defaults = {sub: [TRAINER_CONFIGS / "default.yaml"] for sub in LIGHTNING_SUBCOMMANDS}
    defaults["test"].append(TRAINER_CONFIGS / "test.yaml")
    parser_kwargs = {sub: {"default_config_files": [str(f) for f in fs if f.is_file()]} for sub, fs in defaults.items()}
    from lit_blind.trainer import Trainer

    return LitBlindCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        trainer_class=Trainer,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=SaveConfigToOutputDir,
        save_config_kwargs={"overwrite": True, "save_to_log_dir": False},
        parser_kwargs=parser_kwargs if run else parser_kwargs["fit"],
        run=run,
        args=args,
    )


def _config_error(err: ValueError, config) -> ValueError:
    """The class's own ``ValueError`` under jsonargparse's "Does not validate against any of the Union
    subtypes" wrapper, its leading parameter name spelled as the flag that sets it
    (``root must ...`` → ``--data.init_args.root must ...``)."""
    inner = err
    while isinstance(inner.__cause__ or inner.__context__, ValueError):
        inner = inner.__cause__ or inner.__context__
    message = str(inner)
    name, _, rest = message.partition(" ")
    match = re.search(r"class_path='([\w.]+)'", str(err))
    owners = [key for key, node in _class_nodes(config, "") if name in (node.get("init_args") or {})]
    exact = [key for key, node in _class_nodes(config, "") if match and node.class_path == match.group(1)]
    owners = [key for key in owners if key in exact] or owners
    return ValueError(f"--{owners[0]}.init_args.{name} {rest}" if len(owners) == 1 else message)


def _class_nodes(node, prefix: str):
    """(dotted key, namespace) of every ``class_path`` entry in a jsonargparse config, depth first."""
    from jsonargparse import Namespace

    for key, value in vars(node).items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Namespace):
            if "class_path" in value:
                yield dotted, value
                if isinstance(value.get("init_args"), Namespace):
                    yield from _class_nodes(value.init_args, f"{dotted}.init_args.")
            else:
                yield from _class_nodes(value, f"{dotted}.")


def _follow_output_dir(config) -> None:
    """Point the trainer's root, its logger and its checkpoints at the model's ``output_dir`` (see above)."""
    out = (config.model.get("init_args") or {}).get("output_dir")
    if out is None:
        return
    config.trainer.default_root_dir = str(out)
    loggers = config.trainer.logger if isinstance(config.trainer.logger, list) else [config.trainer.logger]
    for logger in loggers:
        if hasattr(logger, "class_path") and logger.class_path.rpartition(".")[2] in ("TensorBoardLogger", "CSVLogger"):
            logger.init_args.save_dir = str(out)
    for callback in config.trainer.callbacks or []:
        if hasattr(callback, "class_path") and callback.class_path.endswith("ModelCheckpoint"):
            if callback.init_args.get("dirpath") is None:  # an explicit dirpath wins
                callback.init_args.dirpath = str(Path(out) / "checkpoints")


if __name__ == "__main__":
    raise SystemExit(main())
