"""Reading images (files, scikit-image's embedded photos, MNIST's IDX files) and kernels into tensors, and
writing results.

Images come back as ``(1, C, H, W)`` float32 in [0, 1]; kernels as ``(1, 1, k, k)`` float64 normalised to
sum 1 in the **true-convolution** convention of :mod:`lit_blind.physics`. Files that store correlation
kernels (Levin et al. 2009: the blurred image is ``correlate2d(x, k)``) are flipped here, by the loader,
and never later: pass ``correlation=True`` or use :func:`read_levin_kernels`.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ("..", "shared", "data")


def data_path(path: str | Path) -> Path:
    """Where a data path of a config (e.g. ``../shared/data/levin09``) is, whatever the working directory.

    An absolute path, or one that exists from the working directory, is kept. A path under
    ``../shared/data`` is looked up under ``$LIT_BLIND_DATA`` when that is set; any other relative path
    relative to the repository (the folder holding ``configs/``). A path found nowhere comes back as given,
    so the caller's error names it.
    """
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    env = os.environ.get("LIT_BLIND_DATA")
    if env and p.parts[:3] == SHARED_DATA:
        candidate = Path(env).joinpath(*p.parts[3:])
        return candidate if candidate.exists() else p
    candidate = REPO_ROOT / p
    return candidate if candidate.exists() else p


def _read_mat(path: Path, key: str | None) -> np.ndarray | list[np.ndarray]:
    """A MATLAB variable: scipy for v4–v7.2 files, h5py for v7.3 (HDF5). Cells become lists."""
    try:
        from scipy.io import loadmat

        data = {k: v for k, v in loadmat(path).items() if not k.startswith("__")}
        hdf5 = None
    except NotImplementedError:  # v7.3
        import h5py

        hdf5 = h5py.File(path, "r")
        data = {k: hdf5[k] for k in hdf5.keys() if not k.startswith("#")}
    if key is None:
        if len(data) != 1:
            raise ValueError(f"key must name one of the variables {sorted(data)} in {path}, got None")
        key = next(iter(data))
    if key not in data:
        raise ValueError(f"key must be one of {sorted(data)} in {path}, got {key!r}")
    value = data[key]
    if hdf5 is not None:
        raw = value[()]
        if raw.dtype == object:  # cell array of references; h5py reads MATLAB arrays transposed
            out = [np.asarray(hdf5[ref][()]).T for ref in raw.ravel()]
        else:
            out = np.asarray(raw).T
        hdf5.close()
        return out
    if value.dtype == object:
        return [np.asarray(v) for v in value.ravel()]
    return np.asarray(value)


def _to_unit_range(a: np.ndarray, path: Path) -> np.ndarray:
    if a.dtype == np.bool_:
        return a.astype(np.float32)
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255
    if a.dtype == np.uint16:
        return a.astype(np.float32) / 65535
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"image in {path} must be bool, uint8, uint16 or floating point, got dtype {a.dtype}")
    a = a.astype(np.float32)
    bad = ~np.isfinite(a)
    if bad.any():
        raise ValueError(
            f"image in {path} must be finite, got {int(np.isnan(a).sum())} NaN and {int(np.isinf(a).sum())} inf values"
        )
    if a.min() < 0 or a.max() > 1:
        raise ValueError(
            f"image values in {path} must be in [0, 1] (or uint8/uint16), got range [{a.min()}, {a.max()}]"
        )
    return a


SIXTEEN_BIT = ("I;16", "I;16B", "I;16L")


def _pil_array(im, path: Path) -> np.ndarray:
    """A PIL image as an H×W (gray) or H×W×3 (RGB) array of its own depth: 1-bit as bool, 8-bit as uint8,
    16-bit as uint16, float (mode F) as float32; alpha is dropped with a warning; a palette is expanded."""
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA"):
        warnings.warn(f"{path}: the alpha channel of this {im.mode} image is dropped", stacklevel=3)
        im = im.convert("RGB" if im.mode != "LA" else "L")
    if im.mode == "I":  # 32-bit integer: PNG stores 16-bit gray this way in some PIL versions
        a = np.asarray(im)
        if a.min() < 0 or a.max() > 65535:
            raise ValueError(f"image in {path} is 32-bit integer with values outside [0, 65535]; cannot scale it")
        return a.astype(np.uint16)
    if im.mode in ("1", "L", "RGB", "F", *SIXTEEN_BIT):
        return np.asarray(im)
    if im.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        return np.asarray(im.convert("RGB"))
    raise ValueError(f"{path} has the PIL mode {im.mode!r}, which is not a gray or colour image")


def read_image(path: str | Path, channels: int | None = None, key: str | None = None) -> Tensor:
    """Read PNG/JPEG/BMP/TIFF, ``.npy`` (H×W or H×W×C) or ``.mat`` into a ``(1, C, H, W)`` tensor in [0, 1].

    8- and 16-bit files are scaled by 255 / 65535, 1-bit and float (TIFF mode F) images kept as values (floats
    must lie in [0, 1]; NaN or inf is an error that says so); a palette image is expanded, an alpha channel
    dropped with a ``UserWarning``. ``channels`` = 1 or 3 converts (gray ↔ RGB: the ITU-R BT.601 luma, as
    PIL's ``convert("L")``, / three copies) explicitly; None keeps the file's own channels.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"path must be an existing image file, got {str(path)!r}")
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be None, 1 or 3, got {channels!r}")
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        from PIL import Image

        try:
            with Image.open(path) as im:
                a = _pil_array(im, path)  # never PIL's convert to L: it clips 16-bit values to 255
        except OSError as err:  # PIL.UnidentifiedImageError and truncated files
            raise ValueError(f"path must be a readable image, got {str(path)!r}: {err}") from err
    elif suffix == ".npy":
        a = np.load(path)
    elif suffix == ".mat":
        a = _read_mat(path, key)
        if isinstance(a, list):
            raise ValueError(f"key must name an array in {path}, got a cell array")
    else:
        raise ValueError(f"path must end in one of {IMAGE_SUFFIXES + ('.npy', '.mat')}, got {str(path)!r}")
    a = _to_unit_range(np.asarray(a), path)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3):
        raise ValueError(f"image in {path} must be H×W or H×W×C with C in (1, 3), got shape {a.shape}")
    x = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None]
    return (x if channels is None else to_channels(x, channels)).contiguous()


LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma weights of R, G, B


def to_channels(x: Tensor, channels: int) -> Tensor:
    """A ``(B, 1|3, H, W)`` image with ``channels`` channels: RGB → gray by the ITU-R BT.601 luma
    0.299 R + 0.587 G + 0.114 B (as PIL's ``convert("L")``), gray → RGB by three copies; unchanged otherwise."""
    if x.shape[1] == channels:
        return x
    if channels == 1 and x.shape[1] == 3:
        luma = torch.tensor(LUMA, dtype=x.dtype, device=x.device)[:, None, None]
        return (x * luma).sum(1, keepdim=True)
    if channels == 3 and x.shape[1] == 1:
        return x.expand(x.shape[0], 3, *x.shape[-2:])
    raise ValueError(f"x must have 1 or 3 channels to convert to {channels}, got shape {tuple(x.shape)}")


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
    """An image bundled with scikit-image (``skimage.data.<name>``) as ``(1, C, H, W)`` in [0, 1]; an RGB one
    becomes gray as the mean of its channels (what every recorded result used; :func:`read_image` uses the
    BT.601 luma of a file)."""
    if name not in EMBEDDED:
        raise ValueError(f"embedded image must be one of {EMBEDDED}, got {name!r}")
    from skimage import data

    a = torch.from_numpy(getattr(data, name)()).to(torch.float32) / 255
    x = a[None, None] if a.ndim == 2 else a.permute(2, 0, 1)[None, :3]
    if x.shape[1] != channels:
        x = x.mean(1, keepdim=True) if channels == 1 else x.expand(1, channels, *x.shape[-2:])
    return x.contiguous()


def read_idx_images(path: str | Path) -> torch.Tensor:
    """An IDX3 image file (MNIST format, gzipped or not) as a uint8 tensor ``(N, H, W)``."""
    import gzip

    path = Path(path)
    raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 16 or int.from_bytes(raw[:4], "big") != 2051:
        raise ValueError(f"{path} must be an IDX3 image file (magic 2051), got magic {int.from_bytes(raw[:4], 'big')}")
    n, h, w = (int.from_bytes(raw[4 * i : 4 * i + 4], "big") for i in (1, 2, 3))
    if len(raw) != 16 + n * h * w:
        raise ValueError(f"{path} is truncated: expected {16 + n * h * w} bytes, got {len(raw)}")
    return torch.from_numpy(np.frombuffer(raw, np.uint8, offset=16).reshape(n, h, w).copy())


def _kernel_tensor(a: np.ndarray, path: Path, correlation: bool) -> Tensor:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 3 and a.shape[2] in (1, 3, 4):  # an RGB(A) PNG of a gray kernel
        a = a[:, :, 0]
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] % 2 == 0:
        raise ValueError(f"kernel in {path} must be square with an odd size, got shape {a.shape}")
    if not np.isfinite(a).all() or a.min() < 0 or a.sum() <= 0:
        raise ValueError(f"kernel in {path} must be finite, non-negative and non-zero")
    if correlation:
        a = a[::-1, ::-1]
    return torch.from_numpy(np.ascontiguousarray(a / a.sum()))[None, None]


def read_kernel(path: str | Path, correlation: bool = False, key: str | None = None) -> Tensor:
    """Read a kernel (PNG, ``.npy`` or ``.mat``) as ``(1, 1, k, k)`` float64 normalised to sum 1.

    ``correlation=True`` flips it by 180°, for files that store correlation kernels.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"path must be an existing kernel file, got {str(path)!r}")
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        from PIL import Image

        with Image.open(path) as im:
            a = np.asarray(im)
    elif suffix == ".npy":
        a = np.load(path)
    elif suffix == ".mat":
        a = _read_mat(path, key)
        if isinstance(a, list):
            raise ValueError(f"{path} holds a cell array of kernels; use read_kernels")
    else:
        raise ValueError(f"path must be a .png, .npy or .mat kernel file, got {str(path)!r}")
    return _kernel_tensor(a, path, correlation)


def read_kernels(path: str | Path, correlation: bool = False, key: str | None = None) -> list[Tensor]:
    """Read a ``.mat`` cell array of kernels (e.g. ``Levin09.mat``) as a list of ``(1, 1, k, k)`` tensors."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"path must be an existing .mat file, got {str(path)!r}")
    cells = _read_mat(path, key)
    if not isinstance(cells, list):
        cells = [cells]
    return [_kernel_tensor(c, path, correlation) for c in cells]


def read_levin_kernels(path: str | Path) -> list[Tensor]:
    """The 8 Levin et al. 2009 kernels from ``Levin09.mat`` (or a folder of ``levin_kernel{j}.npy``), flipped
    from their correlation convention to true convolution."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("levin_kernel*.npy"), key=lambda p: int(p.stem.removeprefix("levin_kernel")))
        if not files:
            raise ValueError(f"path must hold levin_kernel{{j}}.npy files, none found in {path}")
        return [read_kernel(f, correlation=True) for f in files]
    return read_kernels(path, correlation=True, key="kernels")


def write_image(path: str | Path, x: Tensor) -> None:
    """Write one image ``(1, C, H, W)`` or ``(C, H, W)`` in [0, 1] as an 8-bit PNG (values are clipped to
    [0, 1] for quantisation only; the tensor itself is not modified)."""
    from PIL import Image

    x = x.detach().cpu()
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise ValueError(f"x must hold one image, got shape {tuple(x.shape)}")
        x = x[0]
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"x must have shape (1|3, H, W), got {tuple(x.shape)}")
    a = (x.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a).save(path)
