"""Every fit config smoke-runs with --trainer.fast_dev_run; the exported prior loads and scores."""

from pathlib import Path

import pytest
import torch

from lit_blind.cli import run_lightning_cli

ROOT = Path(__file__).resolve().parents[1]
FIT = sorted((ROOT / "configs" / "fit").glob("*.yaml"))


@pytest.mark.parametrize("config", FIT, ids=[p.stem for p in FIT])
def test_fit_config_smoke(config, tmp_path, shared_data, monkeypatch):
    monkeypatch.chdir(ROOT)  # configs name ../shared/data relative to the repository
    out = tmp_path / "fit"
    cli = run_lightning_cli(
        [
            "fit",
            "--config",
            str(config),
            "--trainer.fast_dev_run",
            "true",
            "--trainer.logger",
            "false",
            "--trainer.callbacks",
            "null",
            "--trainer.default_root_dir",
            str(out),
            "--model.init_args.output_dir",
            str(out),
            "--model.init_args.n_samples",
            "0",
        ]
    )
    assert cli.trainer.global_step == 1
    from lit_blind.loading import load_prior

    prior = load_prior(out / "prior")  # exported at the end of fit, EMA weights, σ range in lit_blind_prior.json
    n = prior.unet.config.sample_size
    s = prior.score(torch.rand(2, 1, n, n), prior.sigma_min)
    assert s.shape == (2, 1, n, n) and torch.isfinite(s).all()
