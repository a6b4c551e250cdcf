import pytest
import torch

from lit_blind.api import deblur
from lit_blind.deconv import alternating, douglas_rachford
from lit_blind.io import embedded_image
from lit_blind.kernels import dirac, family, initial_theta, uniform_kernel
from lit_blind.metrics import kernel_error
from lit_blind.physics import add_noise, blur, prox_data
from lit_blind.priors import GaussianMixturePrior, GaussianPrior

D = torch.float64


def _pinned(n):
    """A one-component mixture centred on x̄: the prior pins the image, so the kernel must be found."""
    xbar = torch.nn.functional.adaptive_avg_pool2d(embedded_image("camera"), n).double()
    return xbar, GaussianMixturePrior(xbar, std=0.01)


FAST = dict(sigma_y=0.01, K=60, K_x=5, gamma_x=1.0, gamma_theta="armijo", theta_steps=5, R=1000)


@pytest.mark.parametrize("name, theta_bar", [("gaussian", 2.0), ("motion", 3.0), ("airy", 2.5), ("defocus", 2.0)])
def test_algorithm1_recovers_one_parameter_families(name, theta_bar):
    xbar, prior = _pinned(32)
    fam = family(name, size=15)
    tb = torch.tensor([[theta_bar]], dtype=D)
    y = blur(xbar, fam(tb))
    res = alternating(y, prior, fam, initial_theta(fam, "large", tb), **FAST)
    assert abs(res.theta.item() - theta_bar) < 1e-2
    assert len(res.history["theta"]) == 60 and res.history["score_evals"][-1] == 60 * 5


def test_algorithm1_recovers_zernike():
    xbar, prior = _pinned(64)
    fam = family("zernike", size=31, pupil_size=128, fc=0.2)
    tb = torch.tensor([[0.1, -0.05, 0.08, 0.03, -0.04]], dtype=D)
    y = blur(xbar, fam(tb))
    res = alternating(y, prior, fam, initial_theta(fam, "large", tb), **{**FAST, "K": 40, "K_x": 3})
    assert (res.theta - tb).abs().max() < 1e-2


@pytest.mark.parametrize("algorithm", [alternating, douglas_rachford])
def test_simplex_kernels_stay_on_simplex_and_recover(algorithm):
    xbar, prior = _pinned(32)
    h = family("motion", size=7, angle=30)(torch.tensor([[2.0]], dtype=D))
    y = blur(xbar, h)
    seen = []
    fam = family("simplex", size=7)
    res = algorithm(y, prior, fam, uniform_kernel(7, D).flatten(1), callback=lambda s: seen.append(s["kernel"]), **FAST)
    for k in seen + [res.kernel]:
        assert (k >= 0).all() and abs(k.sum().item() - 1) < 1e-9
    assert kernel_error(res.kernel, h) < 0.01


class _PinnedAtEveryScale(GaussianMixturePrior):
    """The pinned prior at any size: its mean is x̄ resized to the input (coarse-to-fine works on smaller y)."""

    image_size = None

    def __init__(self, xbar):
        super().__init__(xbar, std=0.01)
        self.image_size = None

    def _score(self, x, sigma):
        mean = torch.nn.functional.interpolate(self.means, size=x.shape[-2:], mode="bilinear", antialias=True)
        return (mean - x) / (self.std**2 + sigma.reshape(-1, 1, 1, 1) ** 2)


def test_coarse_to_fine_starts_each_scale_from_the_coarser_kernel_and_recovers_it():
    from lit_blind.deconv import upsample_kernel

    xbar, _ = _pinned(64)
    h = family("motion", size=15, angle=30)(torch.tensor([[5.0]], dtype=D))
    y = blur(xbar, h)
    seen = []
    kw = {k: v for k, v in FAST.items() if k != "gamma_x"}
    res = deblur(
        y,
        _PinnedAtEveryScale(xbar),
        algorithm="alternating",
        kernel_size=15,
        scales=3,
        gamma_x=1.0,
        callback=lambda s: seen.append(s),
        **kw,
    )
    assert [k for k, _ in res.history["scales"]] == [3, 7, 15] and sorted({s["scale"] for s in seen}) == [0, 1, 2]
    assert all(s["kernel"].shape[-1] == {2: 3, 1: 7, 0: 15}[s["scale"]] for s in seen)
    assert res.history["score_evals"][-1] == 3 * FAST["K"] * FAST["K_x"]  # every scale counts
    for _, k in res.history["scales"]:
        assert (k >= 0).all() and abs(k.sum().item() - 1) < 1e-9
    # the coarse estimate, upsampled, is already closer to the truth than the large init it replaces
    coarse = upsample_kernel(res.history["scales"][1][1], 15)
    assert kernel_error(coarse, h) < 0.7 * kernel_error(uniform_kernel(15, D), h)
    assert kernel_error(res.kernel, h) < 0.06  # one scale, same schedule: 0.046 (a thin 15×15 line, 60 iterations)


def test_upsample_kernel_keeps_the_centre_and_the_mass():
    from lit_blind.deconv import upsample_kernel

    up = upsample_kernel(dirac(3, D), 7)
    assert abs(up.sum().item() - 1) < 1e-12 and (up >= 0).all()
    assert torch.allclose(up, up.flip(-1), atol=1e-15) and torch.allclose(up, up.flip(-2), atol=1e-15)
    assert up[0, 0, 3, 3] == up.max() and up[0, 0, 0].sum() == 0  # the spread ends where the Dirac cell did


def test_paper_defaults_fixed_step_moves_toward_truth():
    xbar, prior = _pinned(32)
    fam = family("gaussian", size=15)
    y = blur(xbar, fam(torch.tensor([[2.0]], dtype=D)))
    res = alternating(
        y, prior, fam, torch.tensor([[2.15]], dtype=D), sigma_y=0.01, K=20, K_x=5, gamma_x=1.0, gamma_theta=0.1
    )
    th = [t[0] for t in res.history["theta"]]
    assert all(b <= a for a, b in zip(th, th[1:], strict=False)) and th[-1] < 2.02


def test_fft_and_cg_image_steps_agree():
    gen = torch.Generator().manual_seed(0)
    z = torch.rand(1, 1, 24, 20, generator=gen, dtype=D)
    y = torch.rand(1, 1, 24, 20, generator=gen, dtype=D)
    h = family("defocus", size=5)(torch.tensor([[1.5]], dtype=D))
    from deepinv.optim.linear import conjugate_gradient

    from lit_blind.physics import adjoint

    u_fft = prox_data(z, y, h, 0.5)
    u_cg = conjugate_gradient(
        lambda v: 0.5 * adjoint(blur(v, h), h) + v, 0.5 * adjoint(y, h) + z, max_iter=300, tol=1e-10
    )
    torch.testing.assert_close(u_fft, u_cg, atol=1e-6, rtol=0)


def test_paper_preset_reproduces_the_engine_before_the_refactor():
    """Regression reference: values printed by the separate loops of Algorithms 1–2 as they were before the
    one-engine refactor (commit 17731a0 and earlier), on a fixed small problem; the paper preset is the default."""
    from lit_blind.io import embedded_image

    x = torch.nn.functional.adaptive_avg_pool2d(embedded_image("camera"), 32).double()
    fam = family("motion", size=9, angle=30)
    y = add_noise(blur(x, fam(torch.tensor([[3.0]], dtype=D))), 0.01, torch.Generator().manual_seed(0))
    theta0 = torch.tensor([[1.0]], dtype=D)
    a = alternating(y, GaussianPrior(), fam, theta0, sigma_y=0.01, K=5, K_x=3)
    d = douglas_rachford(y, GaussianPrior(), fam, theta0, sigma_y=0.01, K=5, K_x=3)
    fast = alternating(y, GaussianPrior(), fam, theta0, sigma_y=0.01, K=6, K_x=3, gamma_theta="armijo", theta_steps=3)
    for res, theta, total in ((a, 0.9997571222129935, 518.2568436760355), (d, 0.9999272568306669, 518.2600352656658)):
        assert res.theta.item() == pytest.approx(theta, rel=1e-12) and float(res.image.sum()) == pytest.approx(total)
    assert fast.theta.item() == pytest.approx(0.18744549176561381, rel=1e-10)
    assert fast.history["data_fidelity"][-1] == pytest.approx(4.335220118153256e-05, rel=1e-8)


def test_presets_declare_every_default_once():
    from lit_blind.deconv import PRESETS, preset

    assert preset("paper", "alternating")["gamma_x"] == 0.01 and preset("paper", "drs")["gamma_x"] == 1.0
    assert preset("fast", "alternating")["K"] == 40 and set(PRESETS["fast"]) == set(PRESETS["paper"])
    with pytest.raises(ValueError, match="preset must be one of"):
        preset("slow", "alternating")
    with pytest.raises(ValueError, match="preset must be one of"):
        deblur(torch.rand(1, 1, 16, 16), GaussianPrior(), algorithm="alternating", kernel_size=5, preset="slow")
    with pytest.raises(ValueError, match="preset apply to algorithm"):
        deblur(torch.rand(1, 1, 16, 16), GaussianPrior(), kernel_size=5, preset="fast")


def test_deblur_takes_a_family_instance():
    x, prior = _pinned(32)
    fam = family("motion", size=9, angle=30)
    y = blur(x, fam(torch.tensor([[3.0]], dtype=D)))
    kw = dict(algorithm="alternating", theta0=torch.tensor([[2.0]], dtype=D), K=3, K_x=2)
    by_instance = deblur(y, prior, family=fam, **kw)
    by_name = deblur(y, prior, family="motion", kernel_size=9, family_kw={"angle": 30}, **kw)
    torch.testing.assert_close(by_instance.theta, by_name.theta)
    with pytest.raises(ValueError, match="sets the kernel size"):
        deblur(y, prior, family=fam, kernel_size=15, **kw)
