"""The paper-figure deconvolution configs smoke-run through ``lit-blind fit`` and resume from checkpoints."""

import json
from pathlib import Path

import pytest
import torch

from lit_blind.cli import run_lightning_cli

ROOT = Path(__file__).resolve().parents[1]
GAUSS = '{"class_path": "lit_blind.priors.GaussianPrior"}'


def _args(config, out, *extra):
    return [
        "fit",
        "--config",
        str(ROOT / "configs" / "experiments" / config),
        "--trainer.logger",
        "false",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.default_root_dir",
        str(out),
        "--trainer.callbacks",
        "null",
        "--model.init_args.output_dir",
        str(out),
        "--model.init_args.prior",
        GAUSS,
        "--model.init_args.K_x",
        "2",
        *extra,
    ]


@pytest.mark.parametrize(
    "config, extra",
    [
        ("simplex_alternating.yaml", ["--model.init_args.family.init_args.size", "15", "--data.init_args.size", "32"]),
        (
            "zernike_alternating.yaml",
            ["--model.init_args.family.init_args.pupil_size", "64", "--data.init_args.size", "32"],
        ),
    ],
)
def test_synthetic_configs_smoke(tmp_path, config, extra):
    out = tmp_path / "o"
    kernels = '[{"family": "motion", "theta": [2.0], "size": 15}]' if "simplex" in config else None
    more = ["--data.init_args.kernels", kernels] if kernels else []
    cli = run_lightning_cli(
        _args(config, out, "--trainer.max_steps", "3", "--data.init_args.iterations", "3", *extra, *more)
    )
    assert cli.trainer.global_step == 3
    summary = json.loads((out / "summary.json").read_text())
    assert {p["init"] for p in summary["problems"]} == {"large", "small"}
    assert all(p["kernel_error"] >= 0 for p in summary["problems"])
    if "simplex" in config:
        h = cli.model.family(cli.model.theta)
        assert (h >= 0).all() and torch.allclose(h.sum((-2, -1)), torch.ones(h.shape[0], 1, dtype=h.dtype))


def test_blind_fit_resumes_from_checkpoint(tmp_path):
    out = tmp_path / "r"
    common = [
        "--model.init_args.family.init_args.size",
        "15",
        "--data.init_args.size",
        "32",
        "--data.init_args.iterations",
        "4",
    ]
    common += ["--data.init_args.kernels", '[{"family": "motion", "theta": [2.0], "size": 15}]']
    ckpt = [
        "--trainer.callbacks+=ModelCheckpoint",
        "--trainer.callbacks.dirpath",
        str(out / "ck"),
        "--trainer.callbacks.every_n_train_steps",
        "1",
    ]
    full = run_lightning_cli(_args("simplex_alternating.yaml", tmp_path / "full", "--trainer.max_steps", "4", *common))
    run_lightning_cli(_args("simplex_alternating.yaml", out, "--trainer.max_steps", "2", *common, *ckpt))
    last = sorted((out / "ck").glob("*.ckpt"))[-1]
    resumed = run_lightning_cli(
        _args("simplex_alternating.yaml", out, "--trainer.max_steps", "4", *common, "--ckpt_path", str(last))
    )
    assert resumed.trainer.global_step == 4
    torch.testing.assert_close(resumed.model.theta, full.model.theta)


def test_drs_real_config_smoke(tmp_path, shared_data, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "d"
    run_lightning_cli(
        _args(
            "drs_real.yaml",
            out,
            "--trainer.max_steps",
            "2",
            "--data.init_args.iterations",
            "2",
            "--data.init_args.size",
            "64",
            "--model.init_args.family.init_args.size",
            "15",
        )
    )
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["problems"]) == 2 and (out / "images").is_dir()


def _levin_args(config: str, out: Path, **probe: str) -> list[str]:
    """``lit-blind test`` on Levin image 1 with kernel 3: the base config, ``config`` on top, the probe options."""
    args = ["test", "--config", str(ROOT / "configs/benchmarks/levin09.yaml")]
    args += ["--config", str(ROOT / "configs/benchmarks" / config), "--trainer.logger", "false"]
    args += ["--trainer.enable_progress_bar", "false", "--model.init_args.output_dir", str(out)]
    for name, value in probe.items():
        args += [f"--model.init_args.probe.init_args.{name}", value]
    return args + ["--data.init_args.images", "[1]", "--data.init_args.kernels", "[3]"]


def test_levin_benchmark_config_smoke(tmp_path, shared_data, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "lev"
    args = _levin_args("levin09_ffdnet.yaml", out, K="2", K_x="2")
    run_lightning_cli(args)
    summary = json.loads((out / "summary.json").read_text())
    for init in ("large", "small"):
        assert summary[init]["images"] == 1 and summary[init]["mean_error_ratio"] > 0
    assert (out / "figures" / "error_ratios.png").is_file() and (out / "figures" / "kernels.png").is_file()
    assert len(list((out / "estimates").glob("im1_kernel3_*_kernel.npy"))) == 3  # true, large, small
    run_lightning_cli(args)  # resumes: nothing recomputed
    assert len((out / "results.jsonl").read_text().splitlines()) == 2


def test_levin_em_config_smoke(tmp_path, shared_data, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "lev_em"
    run_lightning_cli(
        _levin_args(
            "levin09_em.yaml",
            out,
            inits="[small]",
            kernel_size="15",
            em_options="{iters: 1, inner: 1, finest_inner: 1}",
        )
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["small"]["images"] == 1 and summary["small"]["mean_error_ratio"] > 0


@pytest.mark.parametrize(("preset", "inits"), [("paper", "[large, small]"), ("fast", "[small]")])
def test_module_and_api_run_the_same_engine(tmp_path, preset, inits):
    """One engine: BlindDeconvModule's outer iterations equal alternating() on each of its problems. (With
    Armijo θ steps, a batch of several problems differs from single runs at the rounding level of the batched
    FFT, which the simplex projection's derivative can amplify where an entry sits at 0: one problem there.)"""
    from lit_blind.deconv import alternating
    from lit_blind.priors import GaussianPrior

    extra = ["--model.init_args.family.init_args.size", "15", "--data.init_args.size", "32"]
    extra += ["--data.init_args.inits", inits]
    extra += ["--data.init_args.kernels", '[{"family": "motion", "theta": [2.0], "size": 15}]']
    extra += ["--trainer.max_steps", "4", "--data.init_args.iterations", "4", "--model.init_args.preset", preset]
    cli = run_lightning_cli(_args("simplex_alternating.yaml", tmp_path / "o", *extra))
    model, problems = cli.model, cli.model.problems
    for i, init in enumerate(problems["inits"]):
        from lit_blind.kernels import initial_theta

        theta0 = initial_theta(model.family, init)
        res = alternating(
            problems["y"][i : i + 1], GaussianPrior(), model.family, theta0, sigma_y=0.01, K=4, K_x=2, preset=preset
        )
        torch.testing.assert_close(model.theta[i : i + 1], res.theta, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(model.x[i : i + 1], res.image, rtol=1e-10, atol=1e-12)
