"""Small random networks for tests, benchmarks and examples: they need no download and run in milliseconds."""

from __future__ import annotations

import torch

from lit_blind.priors import UNetScorePrior


def tiny_unet(channels: int = 1, size: int = 8, seed: int = 0):
    """A small random diffusers VE ``UNet2DModel``; its Fourier σ embedding is scaled down (1/16) so that, like
    a trained network, it varies smoothly with log σ (random scale-16 features make the ODE needlessly stiff)."""
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    unet = UNet2DModel(
        sample_size=size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=8,
        time_embedding_type="fourier",
    ).eval()
    unet.time_proj.weight.data /= 16
    return unet


def tiny_unet_prior(channels: int = 1, size: int = 8, seed: int = 0) -> UNetScorePrior:
    """:func:`tiny_unet` as a prior with σ ∈ [0.01, 10]."""
    return UNetScorePrior(tiny_unet(channels, size, seed).requires_grad_(False), sigma_min=0.01, sigma_max=10.0)
