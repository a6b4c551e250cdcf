"""Every YAML config of configs/experiments, configs/benchmarks and configs/fit parses and instantiates its
trainer, model and data, and runs to its end as a tiny CPU run (a new config is tested without a new test;
`TINY` says what makes each one small); partial configs are stacked on the config their header names."""

import json
from pathlib import Path

import pytest

from lit_blind.cli import run_lightning_cli
from lit_blind.trainer import BATCH_LIMITS

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for d in ("experiments", "benchmarks", "fit") for p in (ROOT / "configs" / d).glob("*.yaml"))
ON_TOP_OF = {  # a partial config -> the config it overrides (see its first lines)
    "hessian_at_critical_points": "experiments/hessian_spectrum.yaml",
    "levin09_em": "benchmarks/levin09.yaml",
    "levin09_ffdnet": "benchmarks/levin09.yaml",
    "blur_likelihood_bsd68": "experiments/blur_likelihood.yaml",
    "profile_noisy_breadth": "experiments/profile_noisy.yaml",
}


@pytest.mark.parametrize("config", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_instantiates(config, tmp_path, shared_data, monkeypatch):
    monkeypatch.chdir(tmp_path)  # data paths resolve from any directory
    stack = [ROOT / "configs" / ON_TOP_OF[config.stem]] if config.stem in ON_TOP_OF else []
    args = [a for c in [*stack, config] for a in ("--config", str(c))]
    args += ["--trainer.accelerator", "cpu", "--model.init_args.output_dir", str(tmp_path / "out")]
    if config.stem == "hessian_at_critical_points":
        (tmp_path / "points").mkdir()
        args += ["--model.init_args.probe.init_args.points", str(tmp_path / "points")]
    cli = run_lightning_cli(args, run=False)
    assert cli.model.output_dir is not None and cli.trainer.default_root_dir == str(tmp_path / "out")
    assert cli.trainer.logger is None or cli.trainer.logger.save_dir == str(tmp_path / "out")
    assert not (tmp_path / "outputs").exists()


def test_a_family_is_spelled_the_same_way_everywhere(tmp_path):
    """A name or a class_path, in a probe's family list, a data module's kernel dicts and the blind module."""
    motion45 = "{class_path: lit_blind.kernels.MotionFamily, init_args: {size: 31, angle: 45}}"
    probe = run_lightning_cli(
        [
            "--config",
            str(ROOT / "configs" / "experiments" / "blur_likelihood.yaml"),
            "--model.init_args.probe.init_args.families",
            f"[gaussian, {motion45}]",
            "--model.init_args.output_dir",
            str(tmp_path / "a"),
        ],
        run=False,
    ).model.probe
    assert list(probe.families) == ["gaussian", "motion"] and probe.families["motion"].angle == 45
    cli = run_lightning_cli(
        [
            "--config",
            str(ROOT / "configs" / "experiments" / "simplex_alternating.yaml"),
            "--model.init_args.family",
            "simplex",
            "--data.init_args.kernels",
            f"[{{family: {motion45}, theta: [3.0]}}, {{family: gaussian, theta: [1.0]}}]",
            "--model.init_args.output_dir",
            str(tmp_path / "b"),
        ],
        run=False,
    )
    assert cli.model.family.name == "simplex" and cli.model.family.size == 31
    cli.datamodule.setup()
    assert [i.split("/")[1] for i in cli.datamodule.problems["ids"][::2]][:2] == ["motion[3.0]", "gaussian[1.0]"]


GAUSS = "{class_path: lit_blind.priors.GaussianPrior}"
PROBE = "--model.init_args.probe.init_args."
SMALL_LIKELIHOOD = [PROBE + "families", "[gaussian]", PROBE + "thetas", "[0.0, 2.5]", PROBE + "kernel_size", "7"]
ONE_TEST_ITEM = {  # data module -> the overrides that leave it one test item
    "ImageDataModule": ["--data.init_args.limit", "1", "--data.init_args.noise", "0"],
    "LevinDataModule": ["--data.init_args.images", "[1]", "--data.init_args.kernels", "[1]"],
}
FEW_TRAINING_ITEMS = {  # data module -> the overrides that leave it a few training and validation items
    "BinarizedMNISTDataModule": ["--data.init_args.limit_train", "4", "--data.init_args.limit_val", "2"],
    "ImageFolderDataModule": ["--data.init_args.patches_per_epoch", "4", "--data.init_args.val_patches", "2"],
}
TINY = {  # what makes each config a tiny CPU run beyond the common overrides of _tiny_args (sizes, steps, grids)
    "blur_likelihood": [*SMALL_LIKELIHOOD, "--data.init_args.size", "16"],
    "blur_likelihood_bsd68": [*SMALL_LIKELIHOOD, "--data.init_args.size", "16"],
    "critical_points": [PROBE + "steps", "20", PROBE + "record_every", "10"],
    "hessian_spectrum": [PROBE + "descent_steps", "5"],
    "hessian_at_critical_points": [],
    "profile_noiseless": [*SMALL_LIKELIHOOD, "--data.init_args.size", "16"],
    "profile_noisy": [*SMALL_LIKELIHOOD, PROBE + "sigma_ys", "[0.05]", PROBE + "momentum_steps", "3"]
    + ["--data.init_args.size", "16"],
    "profile_noisy_breadth": [*SMALL_LIKELIHOOD, PROBE + "sigma_ys", "[0.05]", PROBE + "momentum_steps", "3"]
    + ["--data.init_args.size", "16", PROBE + "ode_steps", "4"],
    "timing": [PROBE + "repeats", "1", "--data.init_args.size", "16"],
    "levin09": [PROBE + "inits", "[large]", PROBE + "K", "2", PROBE + "K_x", "2"],
    "levin09_em": [PROBE + "inits", "[large]"],
    "levin09_ffdnet": [PROBE + "inits", "[large]", PROBE + "K", "2", PROBE + "K_x", "2"],
    "simplex_alternating": ["--model.init_args.family.init_args.size", "15", "--data.init_args.size", "32"]
    + ["--data.init_args.kernels", "[{family: motion, theta: [2.0], size: 15}]"],
    "zernike_alternating": ["--model.init_args.family.init_args.pupil_size", "64", "--data.init_args.size", "32"],
    "drs_real": ["--model.init_args.family.init_args.size", "15", "--data.init_args.size", "32"],
}


def _tiny_args(config: Path, out: Path) -> tuple[list[str], str]:
    """The config (stacked on the one it overrides) as a tiny CPU run: the analytic GaussianPrior, one test
    image, two training or deconvolution steps on a few training items, an 8-channel UNet; returns (arguments, subcommand)."""
    import yaml

    stack = [ROOT / "configs" / ON_TOP_OF[config.stem]] if config.stem in ON_TOP_OF else []
    files = [*stack, config]
    yamls = [yaml.safe_load(f.read_text()) for f in files]
    module, data = (
        next(y[s]["class_path"] for y in yamls[::-1] if "class_path" in y.get(s, {})) for s in ("model", "data")
    )
    model = [y.get("model", {}) for y in yamls]
    args = [a for c in files for a in ("--config", str(c))]
    args += ["--trainer.accelerator", "cpu", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]
    args += ["--model.init_args.output_dir", str(out)]
    if module.endswith("PriorEvaluationModule"):
        return ["test", *args, "--model.init_args.prior", GAUSS, *ONE_TEST_ITEM[data.rsplit(".", 1)[1]]], "test"
    args += ["--trainer.max_steps", "2", "--trainer.callbacks", "null"]
    if module.endswith("BlindDeconvModule"):
        args += ["--model.init_args.prior", GAUSS, "--model.init_args.K_x", "2", "--data.init_args.iterations", "2"]
        return ["fit", *args], "fit"
    unet = model[-1]["init_args"]["unet"]["init_args"]
    width = str([8] * len(unet["block_out_channels"]))
    args += ["--model.init_args.unet.init_args.block_out_channels", width]
    args += ["--model.init_args.unet.init_args.norm_num_groups", "4", "--trainer.limit_val_batches", "1"]
    args += ["--trainer.val_check_interval", "2", "--trainer.check_val_every_n_epoch", "null"]
    args += ["--model.init_args.n_samples", "1", "--model.init_args.sample_steps", "2"]
    args += ["--data.init_args.batch_size", "2", *FEW_TRAINING_ITEMS[data.rsplit(".", 1)[1]]]
    return ["fit", *args], "fit"


@pytest.mark.parametrize("config", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_runs_tiny(config, tmp_path, shared_data, monkeypatch):
    """Every config runs to its end as a tiny CPU run and writes its results under output_dir."""
    assert config.stem in TINY or config.parent.name == "fit", f"add a tiny-run recipe for {config.stem} to TINY"
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    args, command = _tiny_args(config, out)
    args += TINY.get(config.stem, [])
    if config.stem == "hessian_at_critical_points":  # its critical points come from a tiny critical_points run
        cp = ROOT / "configs" / "experiments" / "critical_points.yaml"
        run_lightning_cli(_tiny_args(cp, tmp_path / "cp")[0] + TINY["critical_points"])
        args += [PROBE + "points", str(tmp_path / "cp" / "critical_points")]
    cli = run_lightning_cli(args)
    if command == "test":
        rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
        assert rows and not any("error" in row for row in rows)
        assert json.loads((out / "summary.json").read_text())
    else:
        assert cli.trainer.global_step == 2


@pytest.mark.parametrize(("value", "expected"), [("1", 1), ("3", 3), ("0.5", 0.5), ("1.0", 1.0)])
def test_trainer_batch_limits_keep_an_integer_a_count_and_a_float_a_fraction(value, expected, tmp_path):
    """``--trainer.limit_test_batches 1`` is one batch, not 100 %: Lightning types these options
    ``Union[int, float]``, which typing's Union cache can hand to jsonargparse as ``Union[float, int]``."""
    config = ROOT / "configs" / "benchmarks" / "levin09.yaml"
    options = [*BATCH_LIMITS, "overfit_batches"]
    args = ["--config", str(config), "--model.init_args.output_dir", str(tmp_path)]
    args += [a for o in options for a in (f"--trainer.{o}", value)] + ["--trainer.val_check_interval", value]
    trainer = run_lightning_cli(args, run=False).trainer
    limits = (trainer.limit_train_batches, trainer.limit_test_batches, trainer.limit_predict_batches)
    for got in (*limits, trainer.overfit_batches):
        assert got == expected and type(got) is type(expected)
    assert trainer.val_check_interval == expected and type(trainer.val_check_interval) is type(expected)
