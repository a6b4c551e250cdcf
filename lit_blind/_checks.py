"""Argument checks shared by every public function.

Each check raises ``ValueError`` naming the argument, what was expected and what came, before any
expensive work starts (STYLE.md §12). Nothing is clamped or reshaped here.
"""

from __future__ import annotations

import torch
from torch import Tensor


def check_tensor(name: str, x: object, ndim: int | None = None) -> Tensor:
    """Return ``x`` if it is a finite floating tensor of rank ``ndim``; raise ``ValueError`` otherwise."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite, got {int((~torch.isfinite(x)).sum())} non-finite values")
    return x


def check_image(name: str, x: object, channels: int | None = None) -> Tensor:
    """An image batch ``(B, C, H, W)``, finite, with ``channels`` channels when given."""
    x = check_tensor(name, x, ndim=4)
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name} must have {channels} channel(s), got shape {tuple(x.shape)}")
    return x


def check_positive(name: str, value: float, allow_zero: bool = False) -> float:
    """A finite scalar > 0 (or ≥ 0 with ``allow_zero``)."""
    v = float(value)
    ok = v >= 0 if allow_zero else v > 0
    if not (ok and v == v and abs(v) != float("inf")):
        rel = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {rel}, got {value!r}")
    return v


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``; a non-string is named by its type (a tensor is not printed)."""
    if not isinstance(value, str) or value not in choices:
        got = repr(value) if isinstance(value, str | int | float | None) else f"a {type(value).__name__}"
        raise ValueError(f"{name} must be one of {choices}, got {got}")
    return value


def sigma_tensor(sigma: float | Tensor, batch: int, like: Tensor) -> Tensor:
    """σ as a ``(B, 1, 1, 1)`` tensor on ``like``'s device and dtype; σ must be finite and > 0.

    Accepts a Python number, a 0-d tensor, or a tensor of shape ``(B,)`` / ``(1,)``.
    """
    s = torch.as_tensor(sigma, dtype=like.dtype, device=like.device)
    if s.ndim > 1 or (s.ndim == 1 and s.shape[0] not in (1, batch)):
        raise ValueError(f"sigma must be a number or a tensor of shape ({batch},), got shape {tuple(s.shape)}")
    if not bool(torch.isfinite(s).all()) or bool((s <= 0).any()):
        raise ValueError(f"sigma must be finite and > 0, got {sigma!r}")
    return s.reshape(-1, 1, 1, 1).expand(batch, 1, 1, 1)
