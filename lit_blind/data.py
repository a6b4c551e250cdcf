"""LightningDataModules for evaluation: images from a folder or embedded ones, with stable ids.

Every item is ``{"image": (C, H, W) float32 in [0, 1], "image_id": str, "index": int}``; the index lets
``PriorEvaluationModule`` give each image to exactly one process under DDP.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from lit_blind.io import IMAGE_SUFFIXES, read_image

EMBEDDED = (
    "camera",
    "astronaut",
    "coins",
    "moon",
    "page",
    "text",
    "brick",
    "grass",
    "gravel",
    "coffee",
    "chelsea",
)


def embedded_image(name: str, channels: int = 1) -> torch.Tensor:
    """An image bundled with scikit-image (``skimage.data.<name>``) as ``(1, C, H, W)`` in [0, 1]."""
    if name not in EMBEDDED:
        raise ValueError(f"embedded image must be one of {EMBEDDED}, got {name!r}")
    from skimage import data

    a = torch.from_numpy(getattr(data, name)()).to(torch.float32) / 255
    x = a[None, None] if a.ndim == 2 else a.permute(2, 0, 1)[None, :3]
    if x.shape[1] != channels:
        x = x.mean(1, keepdim=True) if channels == 1 else x.expand(1, channels, *x.shape[-2:])
    return x.contiguous()


class ImageDataset(Dataset):
    """Images, each area-downsampled by ``scale`` then centre-cropped to ``size`` (when given)."""

    def __init__(self, images: list[tuple[str, torch.Tensor]], size: int | None, scale: int) -> None:
        self.items = []
        for image_id, x in images:
            if scale > 1:
                x = torch.nn.functional.avg_pool2d(x, scale)
            if size is not None:
                h, w = x.shape[-2:]
                if h < size or w < size:
                    raise ValueError(f"image {image_id!r} ({h}x{w} after scale {scale}) must be at least size={size}")
                top, left = (h - size) // 2, (w - size) // 2
                x = x[..., top : top + size, left : left + size]
            self.items.append((image_id, x[0].contiguous()))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        image_id, x = self.items[i]
        return {"image": x, "image_id": image_id, "index": i}


class ImageDataModule(pl.LightningDataModule):
    """Evaluation images: files under ``root`` matching ``pattern`` (sorted), and/or embedded skimage images.

    Example YAML::

        data:
          class_path: lit_blind.data.ImageDataModule
          init_args: {embedded: [camera, moon], scale: 4, size: 64}
    """

    def __init__(
        self,
        root: str | None = None,
        pattern: str = "*",
        embedded: Sequence[str] = (),
        channels: int = 1,
        size: int | None = None,
        scale: int = 1,
        limit: int | None = None,
        batch_size: int = 1,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if root is None and not embedded:
            raise ValueError("root or embedded must be given, got neither")
        if root is not None and not Path(root).is_dir():
            raise ValueError(f"root must be an existing folder, got {root!r}")
        for name in embedded:
            if name not in EMBEDDED:
                raise ValueError(f"embedded images must be among {EMBEDDED}, got {name!r}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        if scale < 1 or (size is not None and size < 1) or (limit is not None and limit < 1):
            raise ValueError(f"scale, size and limit must be positive, got {scale}, {size}, {limit}")
        self.root, self.pattern, self.embedded = root, pattern, list(embedded)
        self.channels, self.size, self.scale, self.limit = channels, size, int(scale), limit
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self.dataset: ImageDataset | None = None

    def _images(self) -> list[tuple[str, torch.Tensor]]:
        images = [(name, embedded_image(name, self.channels)) for name in self.embedded]
        if self.root is not None:
            files = sorted(p for p in Path(self.root).glob(self.pattern) if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise ValueError(f"no images matching {self.pattern!r} in {self.root}")
            images += [(p.stem, read_image(p, channels=self.channels)) for p in files]
        return images[: self.limit]

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is None:
            self.dataset = ImageDataset(self._images(), self.size, self.scale)

    def _loader(self) -> DataLoader:
        self.setup()
        return DataLoader(self.dataset, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader:
        return self._loader()

    def predict_dataloader(self) -> DataLoader:
        return self._loader()
