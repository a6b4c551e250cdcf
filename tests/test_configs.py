"""Every YAML config of configs/experiments, configs/benchmarks and configs/fit parses and instantiates its
trainer, model and data (a new config is tested without a new test); partial configs are stacked on the
config their header names. The runs themselves are smoke-tested in test_prior_evaluation, test_blind_deconv,
test_score_training and test_landscape."""

from pathlib import Path

import pytest

from lit_blind.cli import run_lightning_cli

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for d in ("experiments", "benchmarks", "fit") for p in (ROOT / "configs" / d).glob("*.yaml"))
ON_TOP_OF = {  # a partial config -> the config it overrides (see its first lines)
    "hessian_at_critical_points": "experiments/hessian_spectrum.yaml",
    "levin09_em": "benchmarks/levin09.yaml",
    "levin09_ffdnet": "benchmarks/levin09.yaml",
    "blur_likelihood_bsd68": "experiments/blur_likelihood.yaml",
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
