"""LightningDataModules for evaluation: images from a folder or embedded ones, with stable ids.

Every item is ``{"image": (C, H, W) float32 in [0, 1], "image_id": str, "index": int}``; the index lets
``PriorEvaluationModule`` give each image to exactly one process under DDP.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.cli import instantiate_class
from torch.utils.data import DataLoader, Dataset

from lit_blind.io import (
    EMBEDDED,
    IMAGE_SUFFIXES,
    data_path,
    embedded_image,
    read_idx_images,
    read_image,
    read_kernel,
    read_levin_kernels,
)
from lit_blind.kernels import KernelFamily, family
from lit_blind.physics import add_noise, blur


class ImageDataset(Dataset):
    """Images, each area-downsampled by ``scale`` then centre-cropped to ``size`` (when given); ``native`` ids
    (MNIST digits, white noise: already at the prior's size) are kept as they are."""

    def __init__(
        self, images: list[tuple[str, torch.Tensor]], size: int | None, scale: int, native: Sequence[str] = ()
    ) -> None:
        self.items = []
        for image_id, x in images:
            if image_id not in native:
                x = self._resample(image_id, x, size, scale)
            self.items.append((image_id, x[0].contiguous()))

    @staticmethod
    def _resample(image_id: str, x: torch.Tensor, size: int | None, scale: int) -> torch.Tensor:
        if scale > 1:
            x = torch.nn.functional.avg_pool2d(x, scale)
        if size is not None:
            h, w = x.shape[-2:]
            if h < size or w < size:
                raise ValueError(f"image {image_id!r} ({h}x{w} after scale {scale}) must be at least size={size}")
            top, left = (h - size) // 2, (w - size) // 2
            x = x[..., top : top + size, left : left + size]
        return x

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        image_id, x = self.items[i]
        return {"image": x, "image_id": image_id, "index": i}


class ImageDataModule(pl.LightningDataModule):
    """Evaluation images: files under ``root`` matching ``pattern`` (sorted), embedded skimage images,
    binarised 32×32-padded MNIST test digits from the IDX files under ``mnist`` (ids ``mnist_*``), and
    ``noise`` uniform white-noise images of ``noise_size``² (ids ``noise_*``, seeded). ``scale`` and ``size``
    apply to the files and embedded images only: digits and noise are drawn at their final size. ``limit``
    caps files + embedded images + digits, in that order, before the noise images.

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
        mnist: str | None = None,
        noise: int = 0,
        noise_size: int = 32,
        channels: int = 1,
        size: int | None = None,
        scale: int = 1,
        limit: int | None = None,
        batch_size: int = 1,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if root is None and not embedded and mnist is None and not noise:
            raise ValueError("root, embedded, mnist or noise must be given, got none")
        root = None if root is None else str(data_path(root))
        mnist = None if mnist is None else str(data_path(mnist))
        if root is not None and not Path(root).is_dir():
            raise ValueError(f"root must be an existing folder, got {root!r}")
        for name in embedded:
            if name not in EMBEDDED:
                raise ValueError(f"embedded images must be among {EMBEDDED}, got {name!r}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        if scale < 1 or (size is not None and size < 1) or (limit is not None and limit < 1):
            raise ValueError(f"scale, size and limit must be positive, got {scale}, {size}, {limit}")
        self.root, self.pattern, self.embedded, self.mnist = root, pattern, list(embedded), mnist
        self.noise, self.noise_size, self.seed = int(noise), int(noise_size), int(seed)
        self.channels, self.size, self.scale, self.limit = channels, size, int(scale), limit
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self.dataset: ImageDataset | None = None

    def _images(self) -> tuple[list[tuple[str, torch.Tensor]], set[str]]:
        """Files, embedded images and digits (at most ``limit``), and the ids of the digits."""
        images = [(name, embedded_image(name, self.channels)) for name in self.embedded]
        if self.root is not None:
            files = sorted(p for p in Path(self.root).glob(self.pattern) if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise ValueError(f"no images matching {self.pattern!r} in {self.root}")
            images += [(p.stem, read_image(p, channels=self.channels)) for p in files]
        if self.mnist is not None:
            test = _find_mnist(Path(self.mnist), "test")
            if test is None:
                raise ValueError(f"mnist must be a folder with the MNIST IDX files, none found in {self.mnist}")
            digits = read_idx_images(test)[: self.limit]
            digits = torch.nn.functional.pad((digits.float() / 255 > 0.5).float()[:, None], (2, 2, 2, 2))
            digits = [(f"mnist_test_{i:05d}", d[None]) for i, d in enumerate(digits)]
            images += digits
            return images[: self.limit], {i for i, _ in digits}
        return images[: self.limit], set()

    def _noise(self) -> list[tuple[str, torch.Tensor]]:
        g = torch.Generator().manual_seed(self.seed)
        n = self.noise_size
        return [(f"noise_{i:03d}", torch.rand(1, self.channels, n, n, generator=g)) for i in range(self.noise)]

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is None:
            images, digits = self._images()
            noise = self._noise()
            self.dataset = ImageDataset(images + noise, self.size, self.scale, digits | {i for i, _ in noise})

    def _loader(self) -> DataLoader:
        self.setup()
        return DataLoader(self.dataset, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader:
        return self._loader()

    def predict_dataloader(self) -> DataLoader:
        return self._loader()


def _find_mnist(root: Path, split: str) -> Path | None:
    stem = "train-images-idx3-ubyte" if split == "train" else "t10k-images-idx3-ubyte"
    for folder in (root, root / "MNIST" / "raw"):
        for name in (stem + ".gz", stem, stem.replace("-idx3", ".idx3")):
            if (folder / name).is_file():
                return folder / name
    return None


class BinarizedMNISTDataModule(pl.LightningDataModule):
    """Binarised MNIST (paper §2.3): IDX files, 28→32 zero padding, pixels > ``threshold`` → 1.

    ``root`` holds ``train-images-idx3-ubyte[.gz]`` and ``t10k-images-idx3-ubyte[.gz]`` directly or in the
    torchvision layout ``MNIST/raw``; ``download=True`` fetches them with torchvision when a network exists.
    Training uses the 60k training images, validation the 10k test images (both optionally limited).
    """

    def __init__(
        self,
        root: str = "data/mnist",
        threshold: float = 0.5,
        pad: int = 2,
        batch_size: int = 128,
        val_batch_size: int = 256,
        limit_train: int | None = None,
        limit_val: int | None = None,
        download: bool = False,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must lie in (0, 1), got {threshold}")
        self.root, self.threshold, self.pad = data_path(root), float(threshold), int(pad)
        self.batch_size, self.val_batch_size = int(batch_size), int(val_batch_size)
        self.limit_train, self.limit_val, self.download = limit_train, limit_val, download
        self.num_workers = int(num_workers)
        self.train_set = self.val_set = None

    def prepare_data(self) -> None:
        if self.download and _find_mnist(self.root, "train") is None:
            from torchvision.datasets import MNIST

            MNIST(str(self.root), train=True, download=True)
            MNIST(str(self.root), train=False, download=True)

    def _load(self, split: str, limit: int | None) -> torch.utils.data.TensorDataset:
        path = _find_mnist(self.root, split)
        if path is None:
            raise ValueError(
                f"root must hold the MNIST IDX files ({split}), none found in {self.root} or {self.root / 'MNIST/raw'}; "
                "pass download=True with a network"
            )
        x = read_idx_images(path)[:limit]
        x = (x.float() / 255 > self.threshold).float()[:, None]
        x = torch.nn.functional.pad(x, (self.pad,) * 4)
        return torch.utils.data.TensorDataset(x)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = self._load("train", self.limit_train)
            self.val_set = self._load("test", self.limit_val)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, self.batch_size, shuffle=True, drop_last=True, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, self.val_batch_size, shuffle=False, num_workers=self.num_workers)


class PatchDataset(Dataset):
    """Random ``patch``×``patch`` crops (with random flips) of a list of images; ``length`` draws per epoch.

    Deterministic: item i of epoch e comes from a generator seeded with (seed, e, i).
    """

    def __init__(self, images: list[torch.Tensor], patch: int, length: int, seed: int, flips: bool) -> None:
        self.images, self.patch, self.length, self.seed, self.flips = images, patch, length, seed, flips
        self.epoch = 0
        for x in images:
            if min(x.shape[-2:]) < patch:
                raise ValueError(f"patch must not exceed the image size, got {patch} for {tuple(x.shape)}")

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * 10_007 + i)
        x = self.images[int(torch.randint(len(self.images), (1,), generator=g))]
        top = int(torch.randint(x.shape[-2] - self.patch + 1, (1,), generator=g))
        left = int(torch.randint(x.shape[-1] - self.patch + 1, (1,), generator=g))
        p = x[:, top : top + self.patch, left : left + self.patch]
        if self.flips and bool(torch.randint(2, (1,), generator=g)):
            p = p.flip(-1)
        if self.flips and bool(torch.randint(2, (1,), generator=g)):
            p = p.flip(-2)
        return (p.contiguous(),)


class ImageFolderDataModule(pl.LightningDataModule):
    """Random patches of a folder of images (gray or RGB) for score training; the last ``val_fraction`` of
    the sorted files is held out for validation (fixed patches: the generator of epoch 0)."""

    def __init__(
        self,
        root: str,
        pattern: str = "*",
        channels: int = 1,
        patch: int = 32,
        batch_size: int = 64,
        patches_per_epoch: int = 6400,
        val_patches: int = 512,
        val_fraction: float = 0.1,
        flips: bool = True,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        root = str(data_path(root))
        if not Path(root).is_dir():
            raise ValueError(f"root must be an existing folder, got {root!r}")
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
        self.root, self.pattern, self.channels, self.patch = Path(root), pattern, channels, int(patch)
        self.batch_size, self.patches_per_epoch, self.val_patches = (
            int(batch_size),
            int(patches_per_epoch),
            int(val_patches),
        )
        self.val_fraction, self.flips, self.seed, self.num_workers = val_fraction, flips, int(seed), int(num_workers)
        self.train_set = self.val_set = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        files = sorted(p for p in self.root.glob(self.pattern) if p.suffix.lower() in IMAGE_SUFFIXES)
        if len(files) < 2:
            raise ValueError(
                f"root must hold at least 2 images matching {self.pattern!r}, found {len(files)} in {self.root}"
            )
        n_val = max(1, round(self.val_fraction * len(files)))
        images = [read_image(p, channels=self.channels)[0] for p in files]
        self.train_set = PatchDataset(images[:-n_val], self.patch, self.patches_per_epoch, self.seed, self.flips)
        self.val_set = PatchDataset(images[-n_val:], self.patch, self.val_patches, self.seed + 1, False)

    def train_dataloader(self) -> DataLoader:
        self.train_set.epoch = self.trainer.current_epoch if self.trainer is not None else 0
        return DataLoader(self.train_set, self.batch_size, shuffle=False, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, self.batch_size, shuffle=False, num_workers=self.num_workers)


class BlurProblemsDataModule(pl.LightningDataModule):
    """Synthetic blind-deconvolution problems for ``BlindDeconvModule`` (paper §5, Figs. 11, 12, 14, 15).

    Every (image, kernel, init) combination is one problem; y = h̄ ⋆ x̄ + σ_y n (circular blur, seeded).
    ``kernels`` are dicts ``{family, theta}`` (θ̄ as a list) or paths to kernel files; ``family`` is named as
    everywhere else (:func:`~lit_blind.kernels.as_family`): a name, built at ``size`` (default 31) with the
    dict's other keys as options (``{family: motion, theta: [5.0], angle: 45}``), or a ``class_path`` /
    ``init_args`` mapping of a :class:`~lit_blind.kernels.KernelFamily`.
    The train loader yields the whole batch of problems ``iterations`` times (one outer iteration each).
    Without ground truth (real photos), pass ``blurry`` paths instead of ``embedded``/``kernels``.
    """

    def __init__(
        self,
        embedded: Sequence[str] = ("camera",),
        kernels: Sequence[dict | str] = ({"family": "motion", "theta": [4.0], "size": 31, "angle": 30},),
        inits: Sequence[str] = ("large", "small"),
        blurry: Sequence[str] = (),
        sigma_y: float = 0.01,
        channels: int = 1,
        size: int | None = 64,
        scale: int = 1,
        iterations: int = 400,
        seed: int = 0,
    ) -> None:
        super().__init__()
        for init in inits:
            if init not in ("large", "small"):
                raise ValueError(f"inits must be 'large' or 'small', got {init!r}")
        if sigma_y < 0:
            raise ValueError(f"sigma_y must be >= 0, got {sigma_y}")
        self.embedded, self.kernels, self.inits = list(embedded), list(kernels), list(inits)
        self.blurry = [str(data_path(p)) for p in blurry]
        self.sigma_y, self.channels, self.size, self.scale = sigma_y, channels, size, scale
        self.iterations, self.seed = int(iterations), int(seed)
        self.problems: dict | None = None

    def _kernel(self, spec) -> tuple[str, torch.Tensor, torch.Tensor | None]:

        if isinstance(spec, str):
            return Path(spec).stem, read_kernel(spec), None
        spec = dict(spec)
        fam, theta = spec.pop("family"), torch.tensor([spec.pop("theta")], dtype=torch.float64)
        if isinstance(fam, dict) and "class_path" in fam:
            fam = instantiate_class((), fam)
        if isinstance(fam, KernelFamily):
            if spec:
                raise ValueError(f"kernels: options {spec} apply to a family name; a family object carries its own")
        elif isinstance(fam, str):
            fam = family(fam, **spec)
        else:
            raise ValueError(f"kernels family must be a name, a KernelFamily or a class_path mapping, got {fam!r}")
        h = fam(theta)
        return f"{fam.name}{theta.flatten().tolist()}", h, theta

    def setup(self, stage: str | None = None) -> None:
        if self.problems is not None:
            return

        ids, ys, xs, hs, thetas, inits = [], [], [], [], [], []
        gen = torch.Generator().manual_seed(self.seed)
        if self.blurry:
            for p in self.blurry:
                y = ImageDataset([(p, read_image(p, channels=self.channels))], self.size, self.scale).items[0][1][None]
                y = y.double()
                for init in self.inits:
                    ids.append(f"{Path(p).stem}/{init}")
                    ys.append(y)
                    inits.append(init)
        else:
            images = ImageDataset([(n, embedded_image(n, self.channels)) for n in self.embedded], self.size, self.scale)
            for image_id, x in images.items:
                for spec in self.kernels:
                    kid, h, theta = self._kernel(spec)
                    y = add_noise(blur(x[None].double(), h.double()), self.sigma_y, gen)
                    for init in self.inits:
                        ids.append(f"{image_id}/{kid}/{init}")
                        ys.append(y)
                        xs.append(x[None].double())
                        hs.append(h.double())
                        thetas.append(theta)
                        inits.append(init)
        shapes = {tuple(y.shape) for y in ys}
        if len(shapes) != 1:
            raise ValueError(f"all problems must share one image size, got {sorted(shapes)}")
        self.problems = {
            "ids": ids,
            "y": torch.cat(ys),
            "x_true": torch.cat(xs) if xs else None,
            "h_true": hs or None,
            "theta_true": thetas or None,
            "inits": inits,
        }

    def train_dataloader(self) -> DataLoader:
        self.setup()
        y = self.problems["y"]
        return DataLoader(_Repeat(y, self.iterations), batch_size=None)


class _Repeat(Dataset):
    def __init__(self, y: torch.Tensor, n: int) -> None:
        self.y, self.n = y, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.y


class LevinDataModule(pl.LightningDataModule):
    """Levin et al. 2009: the 32 real blurred 255×255 images with their sharp image and kernel.

    Items: ``image`` (the blurred y), ``sharp``, ``kernel`` (flipped from Levin's correlation convention to
    true convolution on load, padded to ``kernel_pad`` so that items collate), ``image_id`` ``im{i}_kernel{j}``.
    ``images`` / ``kernels`` select subsets (1-based, as in the file names).
    """

    def __init__(
        self,
        root: str = "../shared/data/levin09",
        images: Sequence[int] = (1, 2, 3, 4),
        kernels: Sequence[int] = (1, 2, 3, 4, 5, 6, 7, 8),
        kernel_pad: int = 27,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        root = str(data_path(root))
        if not Path(root).is_dir():
            raise ValueError(f"root must be the levin09 folder (sharp/, blurred/, kernels/), got {root!r}")
        self.root, self.images, self.kernels = Path(root), list(images), list(kernels)
        self.kernel_pad, self.num_workers = int(kernel_pad), int(num_workers)
        self.items: list[dict] | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.items is not None:
            return

        ks = read_levin_kernels(self.root / "kernels" / "Levin09.mat")
        self.items = []
        for i in self.images:
            sharp = read_image(self.root / "sharp" / f"im{i}.png", channels=1)[0]
            for j in self.kernels:
                k = ks[j - 1]
                p = (self.kernel_pad - k.shape[-1]) // 2
                if p < 0:
                    raise ValueError(f"kernel_pad must be >= {k.shape[-1]} (kernel {j}), got {self.kernel_pad}")
                y = read_image(self.root / "blurred" / f"im{i}_kernel{j}_img.png", channels=1)[0]
                self.items.append(
                    {
                        "image": y,
                        "sharp": sharp,
                        "kernel": torch.nn.functional.pad(k, (p,) * 4)[0],
                        "image_id": f"im{i}_kernel{j}",
                    }
                )
        for n, item in enumerate(self.items):
            item["index"] = n

    def test_dataloader(self) -> DataLoader:
        self.setup()
        return DataLoader(self.items, batch_size=1, shuffle=False, num_workers=self.num_workers)
