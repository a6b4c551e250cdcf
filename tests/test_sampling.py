"""Reverse-SDE sampling (lit_blind.sampling) against priors whose samples are known."""

import pytest
import torch

from lit_blind.priors import GaussianMixturePrior
from lit_blind.sampling import sample_ve

D = torch.float64


def test_samples_of_a_mixture_land_on_its_components_in_proportion(gen):
    means = torch.stack([torch.full((1, 4, 4), 0.2, dtype=D), torch.full((1, 4, 4), 0.8, dtype=D)])
    prior = GaussianMixturePrior(means, std=0.05, weights=torch.tensor([0.25, 0.75], dtype=D), sigma_max=50.0)
    x = sample_ve(prior, (1000, 1, 4, 4), steps=100, generator=gen).to(D)
    dist = torch.cdist(x.flatten(1), means.flatten(1))  # (1000, 2)
    nearest = dist.min(1)
    assert float(nearest.values.max()) < 0.05 * (16**0.5) * 2.5  # within 2.5 std radii of a component
    share = float((nearest.indices == 1).double().mean())
    assert share == pytest.approx(0.75, abs=0.05)  # binomial sd 0.014
    resid = x - means[nearest.indices]
    assert float(resid.std()) == pytest.approx(0.05, rel=0.1)  # the components' own spread survives


def test_sampler_rejects_too_few_steps():
    prior = GaussianMixturePrior(torch.zeros(1, 1, 2, 2, dtype=D), std=0.1)
    with pytest.raises(ValueError, match="steps"):
        sample_ve(prior, (1, 1, 2, 2), steps=1)
