"""``load_prior(spec)``: a :class:`~lit_blind.priors.Prior` in [0, 1] units from a name or a path.

Accepted specs (this module grows with the loaders of the pretrained models):

* ``"gaussian"`` / ``"gaussian-rgb"`` — the analytic :class:`~lit_blind.priors.GaussianPrior`, 1 or 3
  channels (keyword arguments forwarded);
* a shipped prior name (``"mnist-small"``, ``"natural-gray-small"``): a folder under ``checkpoints/`` of the
  repository, or under ``$LIT_BLIND_CHECKPOINTS``;
* a diffusers ``UNet2DModel`` folder (``config.json`` + weights) whose output is the VE score; its σ range
  comes from ``lit_blind_prior.json`` beside the weights (written by ``ScoreTrainingModule.export``) or
  from ``sigma_min`` / ``sigma_max`` keyword arguments.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from lit_blind.priors import GaussianPrior, Prior, UNetScorePrior

SHIPPED = ("mnist-small", "natural-gray-small")
REPO_CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"


def _checkpoint_dirs() -> list[Path]:
    env = os.environ.get("LIT_BLIND_CHECKPOINTS")
    return ([Path(env)] if env else []) + [REPO_CHECKPOINTS]


def _find_shipped(name: str) -> Path:
    for root in _checkpoint_dirs():
        if (root / name / "config.json").is_file():
            return root / name
    raise ValueError(
        f"spec {name!r} names a shipped prior, but no {name}/config.json was found in "
        f"{[str(p) for p in _checkpoint_dirs()]} (set LIT_BLIND_CHECKPOINTS to the folder that holds it)"
    )


def load_diffusers_ve(
    directory: str | Path, sigma_min: float | None = None, sigma_max: float | None = None
) -> UNetScorePrior:
    """A diffusers VE ``UNet2DModel`` folder as a prior; σ range from ``lit_blind_prior.json`` or arguments."""
    from diffusers import UNet2DModel

    directory = Path(directory)
    meta_path = directory / "lit_blind_prior.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    sigma_min = meta.get("sigma_min") if sigma_min is None else sigma_min
    sigma_max = meta.get("sigma_max") if sigma_max is None else sigma_max
    if sigma_min is None or sigma_max is None:
        raise ValueError(
            f"sigma_min and sigma_max must be given for {directory} (no lit_blind_prior.json there), got {sigma_min}, {sigma_max}"
        )
    try:
        unet = UNet2DModel.from_pretrained(directory)
    except (OSError, ValueError, RuntimeError) as err:
        raise ValueError(f"{directory} must hold a diffusers UNet2DModel (config.json + weights): {err}") from err
    return UNetScorePrior(unet.eval().requires_grad_(False), sigma_min=sigma_min, sigma_max=sigma_max)


def load_prior(spec: str | Path, **kw) -> Prior:
    """A prior from a name or a path (see the module docstring).

    Example::

        prior = load_prior("mnist-small")          # the shipped binarised-MNIST VE prior
        prior = load_prior("path/to/unet", sigma_min=0.01, sigma_max=348.0)
    """
    spec_s = str(spec)
    if spec_s in ("gaussian", "gaussian-rgb"):
        return GaussianPrior(**({"channels": 3} if spec_s == "gaussian-rgb" else {}), **kw)
    if spec_s in SHIPPED:
        return load_diffusers_ve(_find_shipped(spec_s), **kw)
    path = Path(spec_s)
    if path.is_dir() and (path / "config.json").is_file():
        return load_diffusers_ve(path, **kw)
    raise ValueError(
        f"spec must be 'gaussian', 'gaussian-rgb', one of {SHIPPED} or a diffusers UNet2DModel folder, got {spec_s!r}"
    )


class PretrainedPrior(UNetScorePrior):
    """A loadable network prior for YAML configs: ``{class_path: lit_blind.loading.PretrainedPrior,
    init_args: {spec: mnist-small}}``."""

    def __init__(self, spec: str, sigma_min: float | None = None, sigma_max: float | None = None) -> None:
        loaded = load_prior(
            spec, **{k: v for k, v in (("sigma_min", sigma_min), ("sigma_max", sigma_max)) if v is not None}
        )
        if not isinstance(loaded, UNetScorePrior):
            raise ValueError(f"spec must name a network prior, got {spec!r}")
        super().__init__(loaded.unet, loaded.sigma_min, loaded.sigma_max)
        self.spec = spec
