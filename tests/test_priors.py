import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lit_blind.kernels import family
from lit_blind.physics import blur
from lit_blind.priors import GaussianMixturePrior, GaussianPrior, Prior

D = torch.float64


def _priors(gen):
    means = torch.rand(5, 1, 17, 15, generator=gen, dtype=D)
    return {
        "gaussian": (GaussianPrior(), torch.rand(2, 1, 33, 29, generator=gen, dtype=D)),
        "gaussian_rgb": (
            GaussianPrior(channels=3, mean=0.2),
            torch.rand(2, 3, 17, 15, generator=gen, dtype=D),
        ),
        "mixture": (
            GaussianMixturePrior(means, std=0.3, weights=[1, 2, 3, 4, 5]),
            means[:2] + 0.2 * torch.randn(2, 1, 17, 15, generator=gen, dtype=D),
        ),
    }


@pytest.mark.parametrize("name", ["gaussian", "gaussian_rgb", "mixture"])
@pytest.mark.parametrize("sigma", [0.01, 0.5, torch.tensor([0.05, 3.0], dtype=D)])
def test_score_denoise_hvp_against_autograd(gen, name, sigma):
    prior, x = _priors(gen)[name]
    x = x.clone().requires_grad_()
    logp = prior.log_prob(x, sigma)
    assert logp.shape == (2,)
    (grad,) = torch.autograd.grad(logp.sum(), x, create_graph=True)
    score = prior.score(x, sigma)
    torch.testing.assert_close(score, grad, rtol=1e-9, atol=1e-9)
    s = torch.as_tensor(sigma, dtype=D).reshape(-1, 1, 1, 1)
    torch.testing.assert_close(prior.denoise(x, sigma), x + s**2 * score)
    v = torch.randn(x.shape, generator=gen, dtype=D)
    (hv,) = torch.autograd.grad(-(grad * v).sum(), x)
    torch.testing.assert_close(prior.hvp(x.detach(), v, sigma), hv, rtol=1e-8, atol=1e-8)


def test_gaussian_log_prob_equals_dense_covariance(gen):
    prior = GaussianPrior(mean=0.3)
    h, w, sigma = 5, 4, 0.2
    # the covariance built column by column from the FFT definition, then a dense Gaussian log-density
    eye = torch.eye(h * w, dtype=D).reshape(h * w, 1, h, w)
    spec = prior.spectrum(h, w)
    cols = torch.fft.ifft2(torch.fft.fft2(eye, norm="ortho") * spec, norm="ortho").real
    cov = cols.reshape(h * w, h * w) + sigma**2 * torch.eye(h * w, dtype=D)
    x = torch.rand(3, 1, h, w, generator=gen, dtype=D)
    dense = torch.distributions.MultivariateNormal(torch.full((h * w,), 0.3, dtype=D), cov)
    torch.testing.assert_close(prior.log_prob(x, sigma), dense.log_prob(x.flatten(1)))


def test_mixture_log_prob_against_direct_sum(gen):
    means = torch.rand(4, 2, 5, 3, generator=gen, dtype=D)
    w = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=D)
    prior = GaussianMixturePrior(means, std=0.4, weights=w)
    x = torch.rand(3, 2, 5, 3, generator=gen, dtype=D)
    sigma = 0.3
    var = 0.4**2 + sigma**2
    d = means[0].numel()
    direct = torch.zeros(3, dtype=D)
    for k in range(4):
        sq = (x - means[k]).flatten(1).pow(2).sum(1)
        direct += w[k] * torch.exp(-sq / (2 * var)) / (2 * math.pi * var) ** (d / 2)
    torch.testing.assert_close(prior.log_prob(x, sigma), torch.log(direct))


def test_mixture_is_stable_at_large_size(gen):
    means = torch.rand(200, 3, 128, 128, generator=gen)
    prior = GaussianMixturePrior(means, std=0.01)
    x = torch.rand(1, 3, 128, 128, generator=gen)  # far from every mean: exp(-1e8) underflows naively
    logp, score = prior.log_prob(x, 0.01), prior.score(x, 0.01)
    assert torch.isfinite(logp).all() and torch.isfinite(score).all()
    assert logp.item() < -1e7
    near = means[7:8] + 1e-3 * torch.randn(1, 3, 128, 128, generator=gen)
    # Tweedie for one component: D = μ + s²/(s² + σ²)(x − μ), halfway back to the mean here
    torch.testing.assert_close(prior.denoise(near, 0.01), 0.5 * (means[7:8] + near), atol=1e-5, rtol=0)


def test_mixture_means_are_critical_points(gen):
    means = torch.rand(3, 1, 9, 7, generator=gen, dtype=D)
    prior = GaussianMixturePrior(means, std=0.01)
    assert prior.score(means, 1e-3).abs().max() < 1e-8


@given(
    name=st.sampled_from(["gaussian", "motion", "defocus", "airy", "zernike"]),
    theta=st.floats(0.0, 5.0),
    seed=st.integers(0, 2**31 - 1),
    mean=st.sampled_from([0.0, 0.43]),
    sigma=st.sampled_from([0.001, 0.01, 0.3]),
)
@settings(max_examples=60, deadline=None)
def test_theorem1_blurry_is_more_likely(name, theta, seed, mean, sigma):
    """Condition (9) in closed form: q(h ⋆ x) ≤ q(x) for every sum-one kernel under a stationary prior."""
    gen = torch.Generator().manual_seed(seed)
    prior = GaussianPrior(mean=mean)
    x = torch.rand(1, 1, 33, 29, generator=gen, dtype=D)
    if name == "zernike":
        fam = family("zernike", size=15, pupil_size=64)
        th = 0.1 * theta * torch.randn(1, 5, generator=gen, dtype=D)
    else:
        fam = family(name, size=15)
        th = torch.tensor([[theta]], dtype=D)
    q_x, q_hx = -prior.log_prob(x, sigma), -prior.log_prob(blur(x, fam(th)), sigma)
    assert q_hx <= q_x + 1e-9 * abs(q_x)


class _StrictPrior(Prior):
    sigma_min, sigma_max = 0.01, 10.0

    def _score(self, x, sigma):
        return -x / (1 + sigma**2)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: GaussianPrior().score(torch.rand(1, 3, 8, 8), 0.1), "channel"),
        (lambda: GaussianPrior().score(torch.rand(1, 8, 8), 0.1), "4 dimensions"),
        (lambda: GaussianPrior().score(torch.rand(1, 1, 8, 8), 0.0), "sigma"),
        (lambda: GaussianPrior().score(torch.rand(1, 1, 8, 8), -1.0), "sigma"),
        (lambda: GaussianPrior().score(torch.full((1, 1, 8, 8), float("inf")), 0.1), "finite"),
        (lambda: GaussianPrior().score(torch.rand(2, 1, 8, 8), torch.ones(3)), "shape"),
        (
            lambda: GaussianMixturePrior(torch.rand(2, 1, 8, 8), 0.1).score(torch.rand(1, 1, 8, 9), 0.1),
            "size",
        ),
        (lambda: GaussianMixturePrior(torch.rand(2, 1, 8, 8), 0.1, weights=[1, -1]), "weights"),
        (lambda: GaussianMixturePrior(torch.rand(2, 1, 8, 8), 0.0), "std"),
        (lambda: _StrictPrior().score(torch.rand(1, 1, 8, 8), 20.0), r"lie in \[0.01, 10.0\]"),
        (lambda: _StrictPrior().check_sigma(0.001), "lie in"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_default_prior_tweedie_roundtrip():
    p = _StrictPrior()
    x = torch.rand(2, 1, 8, 8, dtype=D)
    torch.testing.assert_close(p.denoise(x, 0.5), x - 0.25 * x / 1.25)


def test_capabilities_are_declared_and_forwarded_by_loaded_prior(gen):
    from lit_blind.loading import LoadedPrior
    from lit_blind.testing import tiny_unet_prior

    x = torch.rand(2, 1, 8, 8, generator=gen, dtype=torch.float64)
    v = torch.randn(2, 1, 8, 8, generator=gen, dtype=torch.float64)
    loaded, exact = LoadedPrior("gaussian"), GaussianPrior()
    assert loaded.has_log_prob and loaded.has_hvp and loaded.multiple == 1
    torch.testing.assert_close(loaded.log_prob(x, 0.1), exact.log_prob(x, 0.1))
    torch.testing.assert_close(loaded.hvp(x, v, 0.1), exact.hvp(x, v, 0.1))
    net = tiny_unet_prior()
    assert not net.has_log_prob and not net.has_hvp and net.multiple > 1
    with pytest.raises(NotImplementedError, match="has_log_prob is False"):
        net.log_prob(x.float(), 0.1)


def test_padded_evaluation_takes_any_size(gen):
    from lit_blind.testing import tiny_unet_prior

    prior = tiny_unet_prior()
    m = prior.multiple
    x = torch.rand(1, 1, 3 * m + 1, 2 * m + 3, generator=gen)
    with pytest.raises(ValueError, match="divisible"):
        prior.denoise(x, 0.1)
    ph, pw = (-x.shape[-2]) % m, (-x.shape[-1]) % m
    padded = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="reflect")
    expected = prior.denoise(padded, 0.1)[..., : x.shape[-2], : x.shape[-1]]
    torch.testing.assert_close(prior.denoise_padded(x, 0.1), expected)
    torch.testing.assert_close(prior.score_padded(x, 0.1), (expected - x) / 0.1**2, rtol=1e-4, atol=1e-3)


def test_windowed_attention_attends_within_windows_of_the_given_size(gen):
    """WindowedAttention against attention computed window by window by hand: the tokens group-normed over the
    whole grid, softmax(q kᵀ/√d) v within each 4 × 4 window (partial windows at the far edges), the output
    projection and the residual; a grid that one window covers goes to diffusers' default processor."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    from lit_blind.priors import WindowedAttention
    from lit_blind.testing import tiny_unet

    attn = tiny_unet().mid_block.attentions[0]
    x = torch.randn(2, 32, 10, 7, generator=gen)
    with torch.no_grad():
        out = WindowedAttention(4)(attn, x)
        normed, ref = attn.group_norm(x), torch.empty_like(x)
        for i in range(0, 10, 4):
            for j in range(0, 7, 4):
                win = normed[:, :, i : i + 4, j : j + 4]
                t = win.flatten(2).transpose(1, 2)
                q, k, v = (
                    f(t).unflatten(-1, (attn.heads, -1)).transpose(1, 2) for f in (attn.to_q, attn.to_k, attn.to_v)
                )
                a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), -1) @ v
                o = attn.to_out[0](a.transpose(1, 2).flatten(2))
                ref[:, :, i : i + 4, j : j + 4] = o.transpose(1, 2).reshape(win.shape)
        ref = (ref + x) / attn.rescale_output_factor
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
        one = x[..., :4, :3].contiguous()
        torch.testing.assert_close(WindowedAttention(4)(attn, one), AttnProcessor2_0()(attn, one))


def test_local_attention_windows_every_attention_block_at_the_training_size_and_restores(gen):
    """tiny_unet (sample_size 8; four attention blocks one level down: in a down block, the middle, an up block): in
    local_attention every block attends within 4 × 4 tokens (8 pixels); an 8 × 8 image is unchanged, a 24 × 24
    one is not; on exit the default processors are back; priors without attention accept the context and
    LoadedPrior forwards it."""
    from diffusers.models.attention_processor import Attention

    from lit_blind.loading import LoadedPrior
    from lit_blind.priors import WindowedAttention
    from lit_blind.testing import tiny_unet_prior

    prior = tiny_unet_prior()
    blocks = [m for m in prior.unet.modules() if isinstance(m, Attention)]
    before = [type(m.processor) for m in blocks]
    assert len(blocks) == 4
    small, large = torch.rand(1, 1, 8, 8, generator=gen), torch.rand(1, 1, 24, 24, generator=gen)
    with torch.no_grad():
        ref_small, ref_large = prior.denoise(small, 0.1), prior.denoise(large, 0.1)
        with prior.local_attention():
            assert all(isinstance(m.processor, WindowedAttention) and m.processor.window == 4 for m in blocks)
            loc_small, loc_large = prior.denoise(small, 0.1), prior.denoise(large, 0.1)
    assert [type(m.processor) for m in blocks] == before
    torch.testing.assert_close(loc_small, ref_small)
    assert float((loc_large - ref_large).abs().max()) > 1e-4
    with GaussianPrior().local_attention():
        pass
    loaded = LoadedPrior("natural-gray-small")  # the shipped prior through the YAML wrapper: forwarded
    with loaded.local_attention():
        assert isinstance(loaded.inner.unet.mid_block.attentions[0].processor, WindowedAttention)
    assert not isinstance(loaded.inner.unet.mid_block.attentions[0].processor, WindowedAttention)


def test_precision_bf16_mixed_runs_the_network_in_bfloat16_and_restores_its_weights(gen, monkeypatch):
    """Prior.precision("bf16-mixed"): the denoiser's convolutions in bfloat16 (the output within bfloat16's
    rounding of float32's, and not equal to it), the 4-D weights and activations channels-last inside and the very
    same weights, without hooks, afterwards, also when the block raises; "auto" follows the device's native bfloat16
    support; a parameterless prior is left exact; a bad name is a ValueError naming the argument."""
    from lit_blind import priors
    from lit_blind.testing import tiny_unet_prior

    prior = tiny_unet_prior()
    weights = {name: (q.data_ptr(), q.stride()) for name, q in prior.named_parameters() if q.dim() == 4}
    x = torch.rand(1, 1, 24, 24, generator=gen)
    with torch.no_grad():
        ref = prior.denoise(x, 0.1)
        with prior.precision("bf16-mixed") as used:
            assert used == "bf16-mixed"
            conv = prior.unet.down_blocks[0].resnets[0].conv1.weight
            assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
            # the first convolution takes a one-channel image (both layouts) and answers in NCHW without the hook
            first = prior.unet.conv_in(x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last))
            assert first.is_contiguous(memory_format=torch.channels_last) and not first.is_contiguous()
            low = prior.denoise(x, 0.1)
    assert not any(m._forward_hooks for m in prior.modules())  # the layout hooks are gone
    assert low.dtype == torch.float32
    rel = float((low - ref).norm() / (ref - x).norm())
    assert 0 < rel < 0.05  # bfloat16 keeps 8 bits of mantissa: ≈ 0.4 % per operation
    with pytest.raises(RuntimeError, match="inside"), prior.precision("bf16-mixed"):
        raise RuntimeError("inside")
    assert {name: (q.data_ptr(), q.stride()) for name, q in prior.named_parameters() if q.dim() == 4} == weights
    for native, expected in ((True, "bf16-mixed"), (False, "32-true")):
        monkeypatch.setattr(priors, "native_bf16", lambda device, native=native: native)
        with prior.precision("auto") as used:
            assert used == expected
        with tiny_unet_prior().double().precision("auto") as used:  # autocast would not touch a float64 network
            assert used == "32-true"
    y = torch.rand(1, 1, 8, 8, generator=gen, dtype=torch.float64)
    exact = GaussianPrior().denoise(y, 0.1)
    with GaussianPrior().precision("auto") as used:
        assert used == "32-true"
    with GaussianPrior().precision("bf16-mixed"):
        assert torch.equal(GaussianPrior().denoise(y, 0.1), exact)
    with pytest.raises(ValueError, match="precision must be one of"), prior.precision("bf16"):
        pass


def test_native_bf16_does_not_count_emulation(monkeypatch):
    """A GPU that only emulates bfloat16 (compute capability < 8) is not native: "auto" keeps float32 there; a
    device type torch has no bfloat16 probe for is not native either."""
    from lit_blind.priors import native_bf16

    asked = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(
        torch.cuda, "is_bf16_supported", lambda including_emulation=True: asked.append(including_emulation)
    )
    assert not native_bf16("cuda") and asked == [False]
    assert not native_bf16("mps")
