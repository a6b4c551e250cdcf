"""Smoke and behaviour tests of the Lightning layer: configs run end to end, resume, and shard under DDP."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lit_blind.cli import run_lightning_cli
from lit_blind.results import ResultsFile

ROOT = Path(__file__).resolve().parents[1]
BLUR = str(ROOT / "configs/experiments/blur_likelihood.yaml")
SMOKE = str(ROOT / "configs/trainer/cpu_smoke.yaml")
KEY = ("image_id", "family", "theta")


def _blur_args(out, *extra):
    return [
        "test",
        "--config",
        BLUR,
        "--config",
        SMOKE,
        "--model.init_args.output_dir",
        str(out),
        "--model.init_args.probe.init_args.families",
        "[gaussian, motion]",
        "--model.init_args.probe.init_args.thetas",
        "[0.0, 2.5, 5.0]",
        "--model.init_args.probe.init_args.kernel_size",
        "15",
        "--data.init_args.embedded",
        "[camera, moon]",
        "--data.init_args.size",
        "16",
        *extra,
    ]


def _values(out):
    return {tuple(r[k] for k in KEY): r["potential"] for r in ResultsFile(out, KEY).rows()}


def test_blur_likelihood_runs_resumes_and_summarizes(tmp_path):
    out = tmp_path / "bl"
    run_lightning_cli(_blur_args(out))
    rows = ResultsFile(out, KEY).rows()
    assert len(rows) == 2 * 2 * 3 and all("potential" in r and r["nfe"] > 0 for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    for fam in ("gaussian", "motion"):  # Theorem 1 under the Gaussian prior, seen through the ODE
        assert summary["families"][fam]["fraction_strictly_decreasing"] == 1.0
        assert summary["families"][fam]["fraction_strictly_increasing"] == 0.0
        assert summary["families"][fam]["mean_decrease_q0_minus_qmax"] > 0
    assert (out / "figures" / "blur_likelihood.png").is_file() and (out / "config.yaml").is_file()
    before = _values(out)
    # a killed run: only the first 5 rows survived, plus a torn line
    lines = (out / "results.jsonl").read_text().splitlines()
    (out / "results.jsonl").write_text("\n".join(lines[:5]) + "\n" + lines[5][:10])
    run_lightning_cli(_blur_args(out))
    rows = ResultsFile(out, KEY).rows()
    assert len(rows) == 12 and len({tuple(r[k] for k in KEY) for r in rows}) == 12
    after = _values(out)
    assert all(abs(after[k] - before[k]) < 1e-6 for k in before)  # same probes per image: same values
    run_lightning_cli(_blur_args(out))  # nothing left to do
    assert len(ResultsFile(out, KEY).rows()) == 12


def test_a_folder_resumes_only_under_the_prior_and_probe_settings_that_wrote_it(tmp_path):
    """Rows of another prior or other probe settings are not mixed into a folder (the summary would average
    them); a changed θ grid or family list (what ``selects`` names) extends the run."""
    out = tmp_path / "bl"
    run_lightning_cli(_blur_args(out, "--model.init_args.probe.init_args.thetas", "[0.0, 5.0]"))
    assert json.loads((out / "run.json").read_text())["probe"]["solver_kw"]["solver"] == "dopri5"
    n = len(ResultsFile(out, KEY).rows())
    with pytest.raises(ValueError, match=r"another run \(probe\.solver_kw differ"):
        run_lightning_cli(_blur_args(out, "--model.init_args.probe.init_args.rtol", "1e-3"))
    gauss = "{class_path: lit_blind.priors.GaussianPrior, init_args: {sigma_min: 0.02}}"
    with pytest.raises(ValueError, match=r"prior\.sigma_min differ.*--model\.init_args\.output_dir"):
        run_lightning_cli(_blur_args(out, "--model.init_args.prior", gauss))
    assert len(ResultsFile(out, KEY).rows()) == n  # nothing written by the refused runs
    run_lightning_cli(_blur_args(out))  # the θ grid extended: the rows for θ = 2.5 are added
    assert len(ResultsFile(out, KEY).rows()) == n + 2 * 2


def test_resumed_multi_process_run_deals_out_the_images_still_to_do(tmp_path):
    from types import SimpleNamespace

    from torch.utils.data import DataLoader, DistributedSampler

    from lit_blind.modules import PriorEvaluationModule
    from lit_blind.priors import GaussianPrior
    from lit_blind.probes import CriticalPointProbe

    dataset = [{"index": i, "image_id": f"im{i}"} for i in range(6)]
    module = PriorEvaluationModule(GaussianPrior(), CriticalPointProbe(), str(tmp_path))
    module.results = ResultsFile(tmp_path, ("image_id",))
    for i in (0, 2, 4):  # a killed run finished the even images: rank index % 2 would get all the rest
        module.results.append({"image_id": f"im{i}"})
    module.trainer = SimpleNamespace(world_size=2, test_dataloaders=DataLoader(dataset))
    assert module._deal_images() == {1: 0, 3: 1, 5: 0}
    sampler = DistributedSampler(dataset, num_replicas=2, rank=0, shuffle=False)
    module.trainer = SimpleNamespace(world_size=2, test_dataloaders=DataLoader(dataset, sampler=sampler))
    assert module._deal_images() == {}  # each process sees only its shard: the sampler's split stands
    cli = run_lightning_cli(_blur_args(tmp_path / "bl"))
    assert cli.config["test"].trainer.use_distributed_sampler is False


def test_blur_likelihood_logs_to_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    run_lightning_cli(
        _blur_args(
            out,
            "--trainer.logger",
            "lightning.pytorch.loggers.TensorBoardLogger",
            "--trainer.logger.save_dir",
            str(out),
        )
    )
    events = next(out.rglob("events.out.tfevents.*")).parent
    tags = EventAccumulator(str(events), size_guidance={"images": 0, "scalars": 0}).Reload().Tags()
    assert "blur_likelihood" in tags["images"] and any(t.startswith("inputs/") for t in tags["images"])
    assert any(t.startswith("potential/gaussian/") for t in tags["scalars"])


def test_blur_likelihood_on_a_network_prior(tmp_path):
    out = tmp_path / "net"
    unet = (
        '{"class_path": "lit_blind.priors.UNetScorePrior", "init_args": {"sigma_max": 10.0, "unet": '
        '{"class_path": "diffusers.UNet2DModel", "init_args": {"sample_size": 16, "in_channels": 1, "out_channels": 1, '
        '"block_out_channels": [16, 32], "down_block_types": ["DownBlock2D", "AttnDownBlock2D"], '
        '"up_block_types": ["AttnUpBlock2D", "UpBlock2D"], "layers_per_block": 1, "norm_num_groups": 8, '
        '"time_embedding_type": "fourier"}}}}'
    )
    run_lightning_cli(
        _blur_args(out, "--model.init_args.prior", unet, "--model.init_args.probe.init_args.solver", "expint")
    )
    rows = ResultsFile(out, KEY).rows()
    assert len(rows) == 12 and all("potential" in r for r in rows)


@pytest.mark.slow
def test_ddp_two_processes_write_each_row_once_with_single_process_values(tmp_path):
    single, multi = tmp_path / "single", tmp_path / "ddp"
    images = ["--data.init_args.embedded", "[camera, moon, coins]"]
    run_lightning_cli(_blur_args(single, *images))
    cmd = [sys.executable, "-m", "lit_blind.cli", *_blur_args(multi, *images)]
    cmd += ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = ResultsFile(multi, KEY).rows()
    keys = [tuple(r[k] for k in KEY) for r in rows]
    assert len(keys) == 3 * 2 * 3 == len(set(keys))
    a, b = _values(single), _values(multi)
    assert a.keys() == b.keys() and max(abs(a[k] - b[k]) for k in a) < 1e-6


def test_timing_config(tmp_path, capsys):
    out = tmp_path / "timing"
    run_lightning_cli(
        [
            "test",
            "--config",
            str(ROOT / "configs/experiments/timing.yaml"),
            "--config",
            SMOKE,
            "--model.init_args.output_dir",
            str(out),
            "--data.init_args.size",
            "16",
        ]
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 3 and summary["model_eval_seconds_per_image"] > 0
    assert summary["potential_seconds_per_image"] > summary["model_eval_seconds_per_image"]
    assert "potential_seconds_per_image" in capsys.readouterr().out


def test_bad_probe_arguments_fail_before_work():
    from lit_blind.probes import BlurLikelihoodProbe

    with pytest.raises(ValueError, match="theta"):
        BlurLikelihoodProbe(thetas=[0.0, 6.0])
    with pytest.raises(ValueError, match="increasing"):
        BlurLikelihoodProbe(thetas=[2.0, 1.0])
    with pytest.raises(ValueError, match="boundary"):
        BlurLikelihoodProbe(boundary="valid")
    with pytest.raises(ValueError, match="name must be one of"):
        BlurLikelihoodProbe(families=["box"])


PRIOR_CONFIGS = sorted((ROOT / "configs" / "priors").glob("*.yaml"))


@pytest.mark.parametrize("config", PRIOR_CONFIGS, ids=[p.stem for p in PRIOR_CONFIGS])
def test_prior_configs_parse(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_lightning_cli(["test", "--config", BLUR, "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    assert "prior" in capsys.readouterr().out


def test_gaussian_prior_config_runs(tmp_path):
    out = tmp_path / "g"
    run_lightning_cli(_blur_args(out, "--config", str(ROOT / "configs/priors/gaussian.yaml")))
    assert len(ResultsFile(out, KEY).rows()) == 12


def test_loaded_prior_wraps_any_spec():
    import torch

    from lit_blind.loading import LoadedPrior
    from lit_blind.priors import GaussianPrior

    p = LoadedPrior("gaussian")
    x = torch.rand(1, 1, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(p.score(x, 0.1), GaussianPrior().score(x, 0.1))
    assert p.channels == 1 and p.sigma_min == 0.01


DATA_CONFIGS = sorted(
    p.relative_to(ROOT).as_posix()
    for folder in ("experiments", "benchmarks", "priors", "fit")
    for p in (ROOT / "configs" / folder).glob("*.yaml")
    if "\ndata:" in p.read_text()
)


@pytest.mark.parametrize("config", DATA_CONFIGS)
def test_shipped_data_sections_load(config, shared_data, monkeypatch):
    """The data section of every shipped config builds its dataset as written (run from the repository root)."""
    import importlib

    import yaml

    monkeypatch.chdir(ROOT)
    data = yaml.safe_load((ROOT / config).read_text())["data"]
    module, name = data["class_path"].rsplit(".", 1)
    dm = getattr(importlib.import_module(module), name)(**data.get("init_args", {}))
    fit = "lit-blind fit" in (ROOT / config).read_text() or config.startswith("configs/fit")
    dm.setup("fit" if fit else "test")
    assert len(dm.train_dataloader() if fit else dm.test_dataloader()) > 0
