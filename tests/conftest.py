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


@pytest.fixture(scope="session")
def tiny_unet_prior():
    from lit_blind.testing import tiny_unet_prior

    return tiny_unet_prior()
