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


def test_ema_follows_the_warm_up_decay():
    """EMA after a step at global step t: e ← d e + (1 − d) w with d = min(ema_decay, (1 + t)/(10 + t))."""
    from types import SimpleNamespace

    from lit_blind.modules.score_training import ScoreTrainingModule
    from lit_blind.testing import tiny_unet

    module = ScoreTrainingModule(tiny_unet(), ema_decay=0.999)
    before = [e.clone() for e in module.ema.parameters()]
    with torch.no_grad():
        for w in module.unet.parameters():
            w.add_(1.0)
    for step, decay in ((0, 0.1), (5000, 5001 / 5010), (20000, 0.999)):
        module._trainer = SimpleNamespace(global_step=step)
        ref = [
            decay * e + (1 - decay) * w for e, w in zip(module.ema.parameters(), module.unet.parameters(), strict=True)
        ]
        module.on_train_batch_end(None, None, 0)
        for e, r in zip(module.ema.parameters(), ref, strict=True):
            torch.testing.assert_close(e, r)
    assert any(not torch.equal(e, b) for e, b in zip(module.ema.parameters(), before, strict=True))
