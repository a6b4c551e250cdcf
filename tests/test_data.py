"""The DataModules (lit_blind.data): MNIST IDX, random patches of an image folder, Levin 2009."""

import pytest
import torch


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


def test_levin_data_module(shared_data):
    from lit_blind.data import LevinDataModule

    dm = LevinDataModule(root=str(shared_data / "levin09"), images=[2], kernels=[4, 5])
    batch = next(iter(dm.test_dataloader()))
    assert batch["image"].shape == (1, 1, 255, 255) and batch["kernel"].shape == (1, 1, 27, 27)
    assert abs(batch["kernel"].sum().item() - 1) < 1e-9 and batch["image_id"] == ["im2_kernel4"]
