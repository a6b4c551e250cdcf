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


def test_mnist_data_module_reads_idx_and_binarizes(shared_data):
    from lit_blind.data import BinarizedMNISTDataModule

    dm = BinarizedMNISTDataModule(root=str(shared_data / "mnist"), limit_train=100, limit_val=50, batch_size=10)
    dm.setup()
    (x,) = next(iter(dm.train_dataloader()))
    assert x.shape == (10, 1, 32, 32) and set(x.unique().tolist()) <= {0.0, 1.0}
    assert x[..., :2, :].abs().sum() == 0  # the 28→32 zero padding
    assert len(dm.val_set) == 50


def test_mnist_idx_errors(tmp_path):
    from lit_blind.data import BinarizedMNISTDataModule
    from lit_blind.io import read_idx_images

    with pytest.raises(ValueError, match="MNIST IDX"):
        BinarizedMNISTDataModule(root=str(tmp_path)).setup()
    (tmp_path / "bad").write_bytes(b"\x00\x00\x08\x03" + (5).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"12")
    with pytest.raises(ValueError, match="truncated"):
        read_idx_images(tmp_path / "bad")


def test_patch_data_module_is_deterministic(shared_data):
    from lit_blind.data import ImageFolderDataModule

    def first_batch():
        dm = ImageFolderDataModule(
            root=str(shared_data / "natural" / "Set12"), patch=16, batch_size=4, patches_per_epoch=8
        )
        dm.setup()
        return next(iter(dm.train_dataloader()))[0]

    a, b = first_batch(), first_batch()
    assert a.shape == (4, 1, 16, 16) and torch.equal(a, b)
