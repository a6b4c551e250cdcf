"""The command line (lit_blind.cli): commands, one-line user errors naming the flag, complete or marked
outputs, interrupted runs, progress, data paths. Each input is written by the test."""

import functools
import inspect
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lit_blind.cli import deblur_parser, main
from lit_blind.demo import camera
from lit_blind.io import read_image, write_image
from lit_blind.kernels import family
from lit_blind.marginal import (
    COMPARE_AFTER,
    POLISH,
    POLISH_FLANKS,
    POLISH_SECOND_ORDER,
    REFINE,
    REPETITION,
    SECOND_ORDER,
    SIGMA_END_PER_NOISE,
    STARTS,
    marginal_em,
    pyramid,
)
from lit_blind.physics import blur

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
OUTPUTS = ("deblurred.png", "kernel.png", "kernel.npy", "comparison.png", "result.json")


def _lit_blind(*args, cwd, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "lit_blind.cli", *map(str, args)],
        cwd=cwd,
        env={**ENV, **kw.pop("env", {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


@pytest.fixture
def photo(tmp_path) -> Path:
    """A gray 64×64 photo blurred by a 7×7 motion kernel (circular)."""
    h = family("motion", size=7, angle=30)(torch.tensor([[2.0]], dtype=torch.float64))
    path = tmp_path / "photo.png"
    write_image(path, blur(camera(64), h).float())
    return path


def test_lit_blind_lists_its_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("deblur", "demo", "fit", "validate", "test", "predict", "--debug"))
    assert main(["frobnicate"]) == 2 and "unknown command 'frobnicate'" in capsys.readouterr().err
    assert main([]) == 2 and "commands:" in capsys.readouterr().err


def test_help_does_not_import_torch():
    code = (
        "import sys; from lit_blind.cli import main\n"
        "for argv in (['--help'], ['deblur', '--help'], ['demo', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"


def test_deblur_help_shows_every_option_with_its_default(capsys):
    with pytest.raises(SystemExit):
        main(["deblur", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for flag, default in (("--prior", "natural-gray-small"), ("--kernel-size", "31"), ("--algorithm", "em")):
        assert flag in out and f"default: {default}" in out
    for flag in ("--sigma-y", "--iterations", "--gamma-theta", "--force", "--boundary", "--out", "--init"):
        assert flag in out


@pytest.mark.parametrize(
    ("extra", "flag"),
    [
        (["--kernel-size", "8"], "--kernel-size must be an odd integer"),
        (["--kernel-size", "99"], "--kernel-size 99 must not exceed the image size"),
        (["--algorithm", "alternating", "--sigma-y", "10"], "--sigma-y must be in (0, 0.5]"),
        (["--iterations", "3"], "--iterations apply to --algorithm alternating|drs only"),
        (["--iterations", "3", "--sigma-y", "0.01"], "--iterations apply to --algorithm alternating|drs only"),
        (["--sigma-y", "0.9"], "--sigma-y must be in (0, 0.5]"),
        (["--boundary", "circular"], "--algorithm em needs --boundary valid"),
        (["--algorithm", "alternating", "--covariance", "kept"], "--covariance applies to --algorithm em only"),
        (
            ["--algorithm", "drs", "--polish-covariance", "denoiser"],
            "--polish-covariance applies to --algorithm em only",
        ),
        (["--algorithm", "alternating", "--init", "both"], "--init must be one of"),
        (["--algorithm", "drs", "--refine", "0"], "--refine applies to --algorithm em only"),
        (["--refine", "-1"], "--refine must be a non-negative integer, got -1"),
        (["--polish", "-2"], "--polish must be a non-negative integer, got -2"),
        (["--algorithm", "alternating", "--polish", "1"], "--polish applies to --algorithm em only"),
        (["--algorithm", "drs", "--precision", "bf16-mixed"], "--precision applies to --algorithm em only"),
        (["--polish-flanks", "-1"], "--polish-flanks must be a non-negative integer, got -1"),
        (["--algorithm", "drs", "--polish-flanks", "0"], "--polish-flanks applies to --algorithm em only"),
        (["--compare-after", "-1"], "--compare-after must be a non-negative integer, got -1"),
        (["--repetition", "1"], "--repetition must be in [0, 1) (a correlation; 0: off), got 1.0"),
        (["--algorithm", "drs", "--repetition", "0"], "--repetition applies to --algorithm em only"),
        (["--second-order", "-1"], "--second-order must be a finite number >= 0, got -1.0"),
        (["--algorithm", "drs", "--second-order", "0"], "--second-order applies to --algorithm em only"),
        (["--polish-second-order", "-1"], "--polish-second-order must be a finite number >= 0, got -1.0"),
        (["--algorithm", "drs", "--polish-second-order", "0"], "--polish-second-order applies to --algorithm em only"),
        (["--algorithm", "drs", "--compare-after", "1"], "--compare-after applies to --algorithm em only"),
        (["--window", "20"], "--window must be auto, full or a side of at least --kernel-size (31) pixels, got '20'"),
        (["--window", "half"], "--window must be auto, full or a side of at least --kernel-size (31) pixels"),
        (["--algorithm", "drs", "--window", "full"], "--window applies to --algorithm em only"),
        (["--prior", "no-such-prior"], "--prior must be 'gaussian'"),
        (["--prior", "missing/weights.pth"], "--prior names a file or folder that does not exist"),
    ],
)
def test_deblur_user_errors_are_one_line_naming_the_flag(photo, tmp_path, capsys, extra, flag):
    out = tmp_path / "o"
    rc = main(["deblur", str(photo), "--prior", "gaussian", "--out", str(out), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("lit-blind: error: ") and flag in err[-1]
    assert not (out / "result.json").exists()


def test_deblur_suggests_the_window_on_a_photo_larger_than_it(photo, tmp_path, capsys, monkeypatch):
    """With the window's floor lowered, the 64×64 photo with a 5×5 kernel is larger than the 60-pixel square of
    --window auto (12 kernel sizes): the default estimates the kernel on the whole photo and a note suggests the
    window, which --window auto uses."""
    import lit_blind.marginal

    monkeypatch.setattr(lit_blind.marginal, "WINDOW_MIN", 0)
    args = ["deblur", str(photo), "--prior", "gaussian", "--kernel-size", "5"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert "--window auto estimates the kernel on a 60x60 part" in capsys.readouterr().err
    assert json.loads((tmp_path / "a" / "result.json").read_text())["em_window"] == [0, 0, 64, 64]
    assert main([*args, "--window", "auto", "--out", str(tmp_path / "b")]) == 0
    assert "--window auto estimates" not in capsys.readouterr().err
    assert json.loads((tmp_path / "b" / "result.json").read_text())["em_window"][2:] == [60, 60]


def test_deblur_path_errors_come_before_any_work(photo, tmp_path, capsys):
    assert main(["deblur", str(tmp_path / "missing.png"), "--out", str(tmp_path / "o")]) == 2
    assert "IMAGE must be an existing image file" in capsys.readouterr().err
    assert main(["deblur", str(photo), "--out", str(photo / "o")]) == 2  # a folder under a file
    assert "--out must be a writable folder" in capsys.readouterr().err
    (tmp_path / "bad.png").write_bytes(b"not a png")
    assert main(["deblur", str(tmp_path / "bad.png"), "--out", str(tmp_path / "o")]) == 2
    assert "IMAGE must be a readable image" in capsys.readouterr().err


def test_debug_shows_the_traceback(photo, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="--kernel-size must be an odd integer"):
        main(["deblur", str(photo), "--kernel-size", "8", "--debug"])
    monkeypatch.setenv("LIT_BLIND_DEBUG", "1")
    with pytest.raises(ValueError, match="--kernel-size must be an odd integer"):
        main(["deblur", str(photo), "--kernel-size", "8"])


def test_a_diverging_engine_ends_with_an_error_naming_the_step(photo, tmp_path, capsys):
    out = tmp_path / "o"
    args = ["--prior", "gaussian", "--algorithm", "alternating", "--sigma-y", "5", "--force", "--kernel-size", "7"]
    assert main(["deblur", str(photo), *args, "--iterations", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "image step of outer iteration 0 diverged" in err and not (out / "result.json").exists()


def test_deblur_noise_estimate_is_printed_and_checked_against_sigma_y(photo, tmp_path, capsys):
    args = ["--prior", "gaussian", "--algorithm", "alternating", "--kernel-size", "7", "--iterations", "1"]
    assert main(["deblur", str(photo), *args, "--inner", "1", "--sigma-y", "0.3", "--out", str(tmp_path / "o")]) == 0
    captured = capsys.readouterr()
    assert "noise level estimated from the image (MAD)" in captured.out and "--sigma-y 0.3" in captured.out
    assert "differ by more than a factor 3" in captured.err
    estimate = json.loads((tmp_path / "o" / "result.json").read_text())["noise_level_estimate"]
    assert 0 <= estimate < 0.1


def test_deblur_em_rgb_photo_writes_a_complete_colour_result(tmp_path, capsys):
    x = camera(60 + 6)[..., :, :58].float()
    x = torch.cat([x, x.flip(-1), 1 - x], 1)  # an RGB photo: it comes back in colour
    h = family("motion", size=7, angle=30)(torch.tensor([[2.0]])).float()
    write_image(tmp_path / "photo.png", blur(x, h, "valid"))
    out = tmp_path / "o"
    (out / "stale").mkdir(parents=True)
    (out / "result.json").write_text("{}")  # a previous run's: removed before the new files are written
    rc = main(["deblur", str(tmp_path / "photo.png"), "--prior", "gaussian", "--kernel-size", "7", "--out", str(out)])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == sorted(OUTPUTS)  # no temporary names left
    k = np.load(out / "kernel.npy")
    assert k.shape == (7, 7) and abs(k.sum() - 1) < 1e-6 and (k >= 0).all()
    assert read_image(out / "deblurred.png").shape == (1, 3, 60, 52)
    result = json.loads((out / "result.json").read_text())
    assert result["score_evals"] > 0 and result["interrupted"] is False and result["image_size"] == [60, 52]
    help_text = " ".join(deblur_parser().format_help().split())
    names = ("covariance", "refine", "polish", "polish_covariance", "polish_flanks", "repetition", "compare_after")
    for name in (*names, "second_order", "polish_second_order", "window", "precision"):
        engine_default = inspect.signature(marginal_em).parameters[name].default
        assert result["settings"][name] == engine_default  # recorded from the engine, not a second default
        flag = name.replace("_", "-")
        assert f"(default: {engine_default})" in help_text.split(f"--{flag} ")[-1].split("--")[0]
    assert "deblur (em)" in capsys.readouterr().err  # the progress bar


def test_deblur_covariance_option_reaches_the_em_engine(photo, tmp_path):
    """--covariance tweedie: the per-pixel variance costs two denoiser calls per kernel step more (every outer
    iteration and every polishing round of the two starts of the default --init both, the kept one's last rounds
    once)."""
    evals = {}
    for choice in ("full", "tweedie"):
        out = tmp_path / choice
        args = ["deblur", str(photo), "--prior", "gaussian", "--kernel-size", "7", "--covariance", choice]
        assert main([*args, "--out", str(out)]) == 0
        result = json.loads((out / "result.json").read_text())
        assert result["settings"]["covariance"] == choice and result["settings"]["init"] == "both"
        assert result["em_init_kept"] in STARTS
        evals[choice] = result["score_evals"]
    defaults = inspect.signature(marginal_em).parameters
    compared = defaults["compare_after"].default
    outer = (defaults["iters"].default * len(pyramid(7, 5)) + compared) * len(STARTS)
    assert evals["tweedie"] == evals["full"] + 2 * (outer + defaults["polish"].default - compared)


def test_deblur_sigma_y_reaches_the_em(photo, tmp_path, monkeypatch, capsys):
    """--sigma-y σ with the EM (here with --covariance hqs, which reads it too): the engine gets σ in place of its
    own estimate, and the run records it."""
    import lit_blind.marginal

    calls = []

    @functools.wraps(marginal_em)  # its signature, from which the CLI reads the engine's defaults
    def recording(*args, **kwargs):
        calls.append(kwargs)
        return marginal_em(*args, **kwargs)

    monkeypatch.setattr(lit_blind.marginal, "marginal_em", recording)
    args = ["deblur", str(photo), "--prior", "gaussian", "--kernel-size", "7", "--covariance", "hqs"]
    first = ["--sigma-y", "0.02", "--refine", "0", "--polish", "0", "--polish-flanks", "0", "--compare-after", "0"]
    first += ["--repetition", "0", "--second-order", "0", "--polish-second-order", "0.25", "--window", "40"]
    assert main([*args, *first, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    assert [c["init"] for c in calls] == ["both", "both"]  # one engine call per run: it runs both starts itself
    assert calls[0]["sigma_y"] == 0.02 and "sigma_y" not in calls[1]
    assert calls[0]["refine"] == 0 and calls[1]["refine"] == REFINE  # --refine reaches the engine
    assert calls[0]["polish"] == 0 and calls[1]["polish"] == POLISH  # so does --polish
    assert calls[0]["polish_flanks"] == 0 and calls[1]["polish_flanks"] == POLISH_FLANKS  # and --polish-flanks
    assert calls[0]["compare_after"] == 0 and calls[1]["compare_after"] == COMPARE_AFTER  # and --compare-after
    assert calls[0]["repetition"] == 0 and calls[1]["repetition"] == REPETITION  # and --repetition
    assert calls[0]["second_order"] == 0 and calls[1]["second_order"] == SECOND_ORDER  # and --second-order
    assert calls[0]["polish_second_order"] == 0.25 and calls[1]["polish_second_order"] == POLISH_SECOND_ORDER
    assert calls[0]["window"] == 40 and calls[1]["window"] == "full"  # and --window
    result = json.loads((tmp_path / "a" / "result.json").read_text())
    assert result["em_window"][2:] == [40, 40]  # the part of the photo the kernel was estimated on
    assert result["settings"]["sigma_y"] == 0.02 and result["em_sigma_y"] == 0.02
    assert result["em_sigma_end"] == pytest.approx(SIGMA_END_PER_NOISE * 0.02)
    assert "--sigma-y 0.02" in capsys.readouterr().out


def test_deblur_alternating_rgb_nonsquare_photo(tmp_path):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 30, 37, generator=gen)
    write_image(tmp_path / "photo.png", blur(x, family("motion", size=7)(torch.tensor([[2.0]])), "circular"))
    args = ["--prior", "gaussian-rgb", "--algorithm", "alternating", "--kernel-size", "7", "--boundary", "circular"]
    args += ["--iterations", "4", "--inner", "5", "--out", str(tmp_path / "o")]
    assert main(["deblur", str(tmp_path / "photo.png"), *args]) == 0
    assert all((tmp_path / "o" / name).is_file() for name in OUTPUTS)
    k = np.load(tmp_path / "o" / "kernel.npy")
    assert k.shape == (7, 7) and abs(k.sum() - 1) < 1e-6 and (k >= 0).all()
    assert read_image(tmp_path / "o" / "deblurred.png").shape == (1, 3, 30, 37)


def _wait_for(stream, pattern: str, timeout: float = 120) -> str:
    """Read ``stream`` character by character until ``pattern`` matches (tqdm writes without newlines)."""
    seen, t0 = "", time.monotonic()
    while re.search(pattern, seen) is None and time.monotonic() - t0 < timeout:
        c = stream.read(1)
        if not c:
            break
        seen += c
    assert re.search(pattern, seen), seen[-2000:]
    return seen


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_interrupted_deblur_keeps_a_readable_partial_result(tmp_path, signum, code):
    write_image(tmp_path / "photo.png", camera(256).float())
    out = tmp_path / "o"
    # SIGINT as a terminal delivers it, also when the test runner was started in the background (a shell starts
    # background jobs with SIGINT ignored, and Python then keeps it ignored)
    sigint = {"preexec_fn": lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)}
    proc = _lit_blind("deblur", tmp_path / "photo.png", "--out", out, cwd=tmp_path, **sigint)  # shipped prior, ≈ 7 s
    _wait_for(proc.stderr, r"level=[2-9]")  # the EM loop is running, a few levels in
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    result = json.loads((out / "result.json").read_text())
    assert result["interrupted"] is True and result["level"] >= 2
    x = read_image(out / "deblurred.png")
    assert list(x.shape[-2:]) == result["image_size"] and 0 < x.shape[-1] <= 256
    assert np.load(out / "kernel.npy").sum() == pytest.approx(1)


def test_lightning_user_error_is_one_line_naming_the_key(tmp_path):
    proc = _lit_blind(
        "test",
        "--config",
        ROOT / "configs/benchmarks/levin09.yaml",
        "--data.init_args.root",
        tmp_path / "nope",
        cwd=tmp_path,
    )
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2
    assert err.strip().splitlines()[-1].startswith("lit-blind: error: --data.init_args.root must be the levin09 folder")


def _blur_args(out, *extra):
    return [
        "test",
        "--config",
        ROOT / "configs/experiments/blur_likelihood.yaml",
        "--model.init_args.output_dir",
        out,
        "--model.init_args.probe.init_args.families",
        "[gaussian]",
        "--model.init_args.probe.init_args.thetas",
        "[0.0, 5.0]",
        "--model.init_args.probe.init_args.kernel_size",
        "15",
        "--trainer.accelerator",
        "cpu",
        *extra,
    ]


def test_output_dir_moves_tensorboard_logs_and_config(tmp_path):
    out = tmp_path / "elsewhere"
    proc = _lit_blind(
        *_blur_args(out, "--data.init_args.embedded", "[camera]", "--data.init_args.size", "16"), cwd=tmp_path
    )
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    assert list((out / "tensorboard").glob("version_*/events.out.tfevents.*"))
    assert (out / "config.yaml").is_file() and (out / "summary.json").is_file()
    assert not (tmp_path / "outputs").exists()  # nothing under the working directory


def test_sigterm_during_test_exits_143_and_a_rerun_resumes(tmp_path):
    out = tmp_path / "bl"
    images = ["--data.init_args.embedded", "[camera, moon, coins, astronaut, coffee, chelsea]"]
    proc = _lit_blind(*_blur_args(out, *images, "--data.init_args.size", "48"), cwd=tmp_path)
    rows = out / "results.jsonl"
    t0 = time.monotonic()
    while not (rows.is_file() and rows.read_text().count("\n") >= 2) and time.monotonic() - t0 < 300:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-2000:]
    done = rows.read_text().count("\n")
    assert 2 <= done < 12 and not (out / "summary.json").exists()
    proc = _lit_blind(*_blur_args(out, *images, "--data.init_args.size", "48"), cwd=tmp_path)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    assert rows.read_text().count("\n") == 12 and (out / "summary.json").is_file()


def test_config_data_paths_resolve_from_any_directory(tmp_path, monkeypatch):
    from lit_blind.io import data_path

    monkeypatch.chdir(tmp_path)
    assert data_path("configs/benchmarks") == ROOT / "configs/benchmarks"  # relative to the repository
    assert data_path("no/such/folder") == Path("no/such/folder")  # unchanged: the caller's error names it
    (tmp_path / "mydata" / "levin09").mkdir(parents=True)
    monkeypatch.setenv("LIT_BLIND_DATA", str(tmp_path / "mydata"))
    assert data_path("../shared/data/levin09") == tmp_path / "mydata" / "levin09"
    assert data_path(tmp_path / "abs") == tmp_path / "abs"


def test_a_bare_diffusers_state_dict_is_explained(photo, tmp_path, capsys):
    from lit_blind.testing import tiny_unet

    torch.save(tiny_unet().state_dict(), tmp_path / "unet.pth")
    assert main(["deblur", str(photo), "--prior", str(tmp_path / "unet.pth"), "--out", str(tmp_path / "o")]) == 2
    assert "diffusers UNet2DModel state dict without its architecture" in capsys.readouterr().err


def test_map_algorithms_say_when_they_convert_an_rgb_photo(tmp_path, capsys):
    x = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    write_image(tmp_path / "rgb.png", x)
    args = ["--prior", "gaussian", "--algorithm", "alternating", "--kernel-size", "5", "--iterations", "1"]
    assert main(["deblur", str(tmp_path / "rgb.png"), *args, "--inner", "1", "--out", str(tmp_path / "o")]) == 0
    assert "the 3-channel photo is converted and the result is 1-channel" in capsys.readouterr().err
    assert read_image(tmp_path / "o" / "deblurred.png").shape[1] == 1
