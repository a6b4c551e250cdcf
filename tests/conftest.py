"""Shared fixtures: seeded generators and the optional ../shared/data folder."""

from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA} (present in CI, absent in a user's clone)")
    return SHARED_DATA


def make_tiny_unet(channels: int = 1, size: int = 8, seed: int = 0):
    """A small random diffusers VE UNet; its Fourier σ embedding is scaled down (1/16) so that, like a
    trained network, it varies smoothly with log σ (random scale-16 features make the ODE needlessly stiff)."""
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


@pytest.fixture(scope="session")
def tiny_unet_prior():
    from lit_blind.priors import UNetScorePrior

    return UNetScorePrior(make_tiny_unet(), sigma_min=0.01, sigma_max=10.0)
