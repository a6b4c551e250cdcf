import pytest
import torch

from lit_blind.kernels import family
from lit_blind.likelihood import NonFiniteScoreError, potential, rademacher
from lit_blind.physics import blur
from lit_blind.priors import GaussianMixturePrior, GaussianPrior, Prior

D = torch.float64


def _analytic(gen):
    means = torch.rand(4, 1, 11, 9, generator=gen, dtype=D)
    return {
        "gaussian": (GaussianPrior(sigma_max=50.0), torch.rand(2, 1, 11, 9, generator=gen, dtype=D)),
        "mixture": (
            GaussianMixturePrior(means, std=0.1, sigma_max=50.0),
            means[:2] + 0.05 * torch.randn(2, 1, 11, 9, generator=gen, dtype=D),
        ),
    }


@pytest.mark.parametrize("name", ["gaussian", "mixture"])
@pytest.mark.parametrize("solver", ["rk45", "dopri5"])
def test_exact_divergence_matches_closed_form(gen, name, solver):
    prior, x = _analytic(gen)[name]
    res = potential(prior, x, solver=solver, divergence="exact")
    truth = -prior.log_prob(x, prior.sigma_min)
    assert (res.value - truth).abs().max() < 0.5, (res.value, truth)
    assert (res.nfe > 0).all() and res.stderr is None


@pytest.mark.parametrize("name", ["gaussian", "mixture"])
def test_hutchinson_mean_within_three_standard_errors(gen, name):
    prior, x = _analytic(gen)[name]
    res = potential(prior, x, solver="dopri5", n_probes=24, generator=gen)
    truth = -prior.log_prob(x, prior.sigma_min)
    assert res.per_probe.shape == (2, 24)
    assert ((res.value - truth).abs() < 3 * res.stderr + 0.5).all(), (res.value - truth, res.stderr)


def test_dopri5_reproduces_scipy_rk45_on_analytic_prior(gen):
    prior, x = _analytic(gen)["gaussian"]
    probes = rademacher((1, *x.shape), gen)
    a = potential(prior, x, solver="rk45", probes=probes)
    b = potential(prior, x, solver="dopri5", probes=probes)
    torch.testing.assert_close(a.value, b.value, atol=1e-6, rtol=0)
    assert torch.equal(a.nfe, b.nfe)  # same tableau, controller and initial step as scipy


@pytest.mark.parametrize("name", ["gaussian", "mixture"])
def test_expint_within_documented_error(gen, name):
    prior, x = _analytic(gen)[name]
    probes = rademacher((1, *x.shape), gen)
    ref = potential(prior, x, solver="rk45", probes=probes).value
    fast = potential(prior, x, solver="expint", steps=32, probes=probes)
    assert (fast.value - ref).abs().max() <= 0.01 * x[0].numel()
    assert (fast.nfe == 96).all()


def test_solvers_agree_on_small_unet(tiny_unet_prior):
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(3, 1, 8, 8, generator=gen)
    probes = rademacher((1, *x.shape), gen)
    ref = potential(tiny_unet_prior, x, solver="rk45", probes=probes).value
    dop = potential(tiny_unet_prior, x, solver="dopri5", probes=probes).value
    fast = potential(tiny_unet_prior, x, solver="expint", probes=probes).value
    assert (dop - ref).abs().max() < 0.1
    assert (fast - ref).abs().max() <= 0.01 * 64


def test_batching_does_not_change_a_sample(tiny_unet_prior):
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(4, 1, 8, 8, generator=gen)
    probes = rademacher((1, *x.shape), gen)
    together = potential(tiny_unet_prior, x, solver="dopri5", probes=probes)
    split = potential(tiny_unet_prior, x, solver="dopri5", probes=probes, batch_size=1)
    alone = potential(tiny_unet_prior, x[2:3], solver="dopri5", probes=probes[:, 2:3])
    # float32 network: batched kernels round differently (and differently per thread count: 0.11 nats with
    # one thread), which may flip an accept/reject decision; the values then differ within the solver's
    # tolerance, not by the many nats that mixing two samples' states would cost (exactness: next test)
    assert (together.value - split.value).abs().max() < 0.3
    assert abs(together.value[2] - alone.value[0]) < 0.3


def test_batching_is_exact_with_a_float64_network():
    from lit_blind.priors import UNetScorePrior
    from lit_blind.testing import tiny_unet

    prior = UNetScorePrior(tiny_unet().double(), sigma_min=0.01, sigma_max=10.0)
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(3, 1, 8, 8, generator=gen, dtype=D)
    probes = rademacher((1, *x.shape), gen)
    together = potential(prior, x, solver="dopri5", probes=probes)
    split = potential(prior, x, solver="dopri5", probes=probes, batch_size=1)
    assert torch.equal(together.nfe, split.nfe)
    torch.testing.assert_close(together.value, split.value, atol=1e-8, rtol=0)


def test_forward_difference_divergence_is_exact_for_a_linear_score(gen):
    prior, x = _analytic(gen)["gaussian"]  # linear score: the forward difference has no truncation error
    probes = rademacher((2, *x.shape), gen)
    vjp = potential(prior, x, solver="dopri5", probes=probes)
    fd = potential(prior, x, solver="dopri5", probes=probes, divergence="hutchinson-fd")
    torch.testing.assert_close(fd.per_probe, vjp.per_probe, atol=1e-6, rtol=0)


def test_forward_difference_divergence_is_unbiased_on_the_mixture(gen):
    prior, x = _analytic(gen)["mixture"]
    res = potential(prior, x, solver="dopri5", n_probes=24, generator=gen, divergence="hutchinson-fd")
    truth = -prior.log_prob(x, prior.sigma_min)
    assert ((res.value - truth).abs() < 3 * res.stderr + 0.5).all(), (res.value - truth, res.stderr)


def test_forward_difference_divergence_matches_vjp_on_small_unet(tiny_unet_prior):
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(3, 1, 8, 8, generator=gen)
    probes = rademacher((2, *x.shape), gen)
    vjp = potential(tiny_unet_prior, x, solver="expint", probes=probes)  # same steps for both estimators
    fd = potential(tiny_unet_prior, x, solver="expint", probes=probes, divergence="hutchinson-fd")
    assert (fd.per_probe - vjp.per_probe).abs().max() < 0.05, fd.per_probe - vjp.per_probe


def test_q_atol_controls_the_potential_error(gen):
    prior, x = _analytic(gen)["mixture"]
    truth = -prior.log_prob(x, prior.sigma_min)
    loose = potential(prior, x, solver="dopri5", divergence="exact", rtol=1e-2, atol=1e-2)
    tight = potential(prior, x, solver="dopri5", divergence="exact", rtol=1e-2, atol=1e-2, q_atol=1e-4)
    assert (tight.value - truth).abs().max() < 0.01, tight.value - truth
    assert (tight.value - truth).abs().max() < (loose.value - truth).abs().max()
    assert (tight.nfe > loose.nfe).all()


def test_common_random_numbers_reduce_noise_of_differences(gen):
    prior = GaussianPrior(sigma_max=50.0)
    x = torch.rand(1, 1, 11, 9, generator=gen, dtype=D)
    y = blur(x, family("gaussian", size=5)(torch.tensor([[1.0]], dtype=D)))
    pair = torch.cat([x, y])
    truth = (-prior.log_prob(y, 0.01) + prior.log_prob(x, 0.01)).item()
    shared, independent = [], []
    for _ in range(6):
        u = rademacher((1, 1, 1, 11, 9), gen)
        r = potential(prior, pair, solver="dopri5", probes=u)  # one probe for both images
        shared.append((r.value[1] - r.value[0]).item())
        r = potential(prior, pair, solver="dopri5", generator=gen)
        independent.append((r.value[1] - r.value[0]).item())
    shared, independent = torch.tensor(shared), torch.tensor(independent)
    assert shared.std() < 0.2 * independent.std()
    assert (shared.mean() - truth).abs() < 0.5


class _NaNPrior(Prior):
    sigma_min, sigma_max, sigma_range_strict = 0.01, 10.0, False

    def _score(self, x, sigma):
        return torch.where(sigma > 1, torch.full_like(x, float("nan")), -x)


def test_non_finite_score_raises():
    with pytest.raises(NonFiniteScoreError):
        potential(_NaNPrior(), torch.rand(1, 1, 4, 4), solver="dopri5")


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"sigma_eps": 1e-4}, "sigma_eps"),
        ({"sigma_eps": 100.0}, "sigma_eps"),
        ({"solver": "euler"}, "solver"),
        ({"divergence": "trace"}, "divergence"),
        ({"n_probes": 0}, "n_probes"),
        ({"batch_size": 0}, "batch_size"),
        ({"probes": torch.ones(1, 2, 1, 5, 5)}, "probes"),
        ({"rtol": -1.0}, "rtol"),
        ({"q_atol": 0.0}, "q_atol"),
        ({"q_atol": 0.1, "solver": "rk45"}, "q_atol"),
    ],
)
def test_bad_input(kw, match):
    with pytest.raises(ValueError, match=match):
        potential(GaussianPrior(), torch.rand(2, 1, 4, 4), **kw)


def test_bad_image_for_prior(tiny_unet_prior):
    with pytest.raises(ValueError, match="divisible"):
        potential(tiny_unet_prior, torch.rand(1, 1, 9, 8))
    with pytest.raises(ValueError, match="channel"):
        potential(tiny_unet_prior, torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="finite"):
        potential(tiny_unet_prior, torch.full((1, 1, 8, 8), float("nan")))
