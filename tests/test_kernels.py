import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from lit_blind.kernels import (
    J1_FIRST_ZERO,
    family,
    gaussian_kernel,
    perturbed_kernel,
    project_simplex,
    uniform_kernel,
)

D = torch.float64
ONE_D = ["gaussian", "motion", "defocus", "airy"]


def _second_moment(h):
    k = h.shape[-1]
    r = torch.arange(k, dtype=D) - k // 2
    return (h[:, 0] * (r[:, None] ** 2 + r[None, :] ** 2)).sum((-2, -1))


@pytest.mark.parametrize("name, kw", [(n, {}) for n in ONE_D] + [("motion", {"angle": 45}), ("motion", {"angle": 90})])
def test_one_parameter_family_shape_sum_dirac_monotone(name, kw):
    fam = family(name, size=31, **kw)
    theta = torch.linspace(0, 5, 51, dtype=D)[:, None]
    h = fam(theta)
    assert h.shape == (51, 1, 31, 31)
    assert (h >= 0).all()
    torch.testing.assert_close(h.sum((-2, -1)), torch.ones(51, 1, dtype=D))
    delta = torch.zeros(31, 31, dtype=D)
    delta[15, 15] = 1
    assert torch.equal(h[0, 0], delta)
    m2 = _second_moment(h)
    assert (m2.diff() > 0).all(), m2


@pytest.mark.parametrize("name", ONE_D)
def test_one_parameter_family_is_continuous_at_zero(name):
    h = family(name, size=31)(torch.tensor([[1e-3]], dtype=D))
    assert h[0, 0, 15, 15] > 0.99


@pytest.mark.parametrize("name", ONE_D)
def test_gradcheck_one_parameter(name):
    fam = family(name, size=15)
    theta = torch.tensor([[0.7], [2.3], [4.1]], dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(fam, (theta,))


def test_airy_second_derivative_exists():
    fam = family("airy", size=15)
    theta = torch.tensor([[1.7]], dtype=D, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda t: fam(t).pow(2).sum(), (theta,))


def test_airy_dark_ring_independent_of_kernel_size():
    theta = torch.tensor([[4.0]], dtype=D)
    h = family("airy", size=15, subsamples=1)(theta)[0, 0]
    assert h[7, 11] / h[7, 7] < 1e-6  # the first zero of J1 lands exactly at r = θ
    assert h[7, 9] / h[7, 7] > 0.1
    small, large = family("airy", size=15)(theta)[0, 0], family("airy", size=31)(theta)[0, 0]
    torch.testing.assert_close(small / small[7, 7], large[8:23, 8:23] / large[15, 15])


def test_zernike_zero_is_airy_pattern():
    for fc in (0.15, 0.2):
        theta_airy = J1_FIRST_ZERO / (2 * math.pi * fc)  # first dark ring of a pupil of radius fc
        airy = family("airy", size=31, theta_max=10, subsamples=1)(torch.tensor([[theta_airy]], dtype=D))
        errs = []
        for pupil in (256, 1024):
            z = family("zernike", size=31, fc=fc, pupil_size=pupil)(torch.zeros(1, 5, dtype=D))
            errs.append((z - airy).abs().max().item() / airy.max().item())
        assert errs[0] < 0.03 and errs[1] < errs[0] / 2, errs  # converges with the pupil sampling


def test_zernike_family_gradcheck_and_sum():
    fam = family("zernike", size=15, zernike_index=(4, 5, 11), pupil_size=64)
    theta = (0.1 * torch.randn(2, 3, generator=torch.Generator().manual_seed(0), dtype=D)).requires_grad_()
    h = fam(theta)
    torch.testing.assert_close(h.sum((-2, -1)), torch.ones(2, 1, dtype=D))
    assert torch.autograd.gradcheck(fam, (theta,), atol=1e-6)


def _qp_projection(v):
    res = minimize(
        lambda p: 0.5 * np.sum((p - v) ** 2),
        np.full_like(v, 1 / v.size),
        jac=lambda p: p - v,
        bounds=[(0, None)] * v.size,
        constraints=[{"type": "eq", "fun": lambda p: p.sum() - 1, "jac": lambda p: np.ones_like(p)}],
        method="SLSQP",
        options={"ftol": 1e-14, "maxiter": 500},
    )
    return res.x


def test_simplex_projection_equals_qp(gen):
    v = 2 * torch.randn(12, 7, generator=gen, dtype=D)
    p = project_simplex(v)
    for row, prow in zip(v, p, strict=True):
        np.testing.assert_allclose(prow.numpy(), _qp_projection(row.numpy()), atol=1e-6)


def test_simplex_projection_independent_across_batch(gen):
    v = torch.randn(5, 9, generator=gen, dtype=D) * torch.tensor([0.1, 1, 5, 20, 0.01], dtype=D)[:, None]
    p = project_simplex(v)
    for i in range(5):
        torch.testing.assert_close(p[i : i + 1], project_simplex(v[i : i + 1]))
    assert (p >= 0).all()
    torch.testing.assert_close(p.sum(1), torch.ones(5, dtype=D))


def test_simplex_family(gen):
    fam = family("simplex", size=5)
    theta = torch.randn(3, 25, generator=gen, dtype=D, requires_grad=True)
    h = fam(theta)
    assert h.shape == (3, 1, 5, 5) and (h >= 0).all()
    assert torch.autograd.gradcheck(fam, (theta,))
    torch.testing.assert_close(fam.project(fam.theta_of(h)), fam.theta_of(h))


def test_helpers():
    u = uniform_kernel(5)
    assert u.shape == (1, 1, 5, 5) and torch.allclose(u, torch.full_like(u, 1 / 25))
    g = gaussian_kernel(31, 1.5, D)
    assert abs(g.sum() - 1) < 1e-12 and g.argmax() == 15 * 31 + 15
    ht = perturbed_kernel(g, 0.1)
    assert abs(ht.sum() - 1.1) < 1e-12 and ht[0, 0, 15, 15] == pytest.approx(g[0, 0, 15, 15].item() + 0.1)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: family("blurry"), "name must be one of"),
        (lambda: family("gaussian", size=30), "odd"),
        (lambda: family("gaussian")(torch.tensor([1.0])), "2 dimensions"),
        (lambda: family("gaussian")(torch.tensor([[1.0, 2.0]])), r"shape \(B, 1\)"),
        (lambda: family("gaussian")(torch.tensor([[-0.1]])), "must lie in"),
        (lambda: family("motion")(torch.tensor([[5.5]])), "must lie in"),
        (lambda: family("airy")(torch.tensor([[float("inf")]])), "finite"),
        (lambda: family("zernike")(torch.zeros(1, 4)), r"shape \(B, 5\)"),
        (lambda: family("zernike", fc=0.7), "fc"),
        (lambda: gaussian_kernel(5, 0.0), "std"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_as_family_takes_a_name_or_an_instance_of_the_right_size():
    from lit_blind.kernels import MotionFamily, as_family, families_by_name

    assert isinstance(as_family("motion", 15), MotionFamily) and as_family("motion", 15).size == 15
    fam = MotionFamily(size=15, angle=45)
    assert as_family(fam, 15) is fam and fam.name == "motion"
    with pytest.raises(ValueError, match="has size 15, expected the kernel size 31"):
        as_family(fam, 31, "families")
    with pytest.raises(ValueError, match="family must be a family name"):
        as_family(3, 31)
    with pytest.raises(ValueError, match="name must be one of"):
        as_family("blurry", 31)
    with pytest.raises(ValueError, match="families must have distinct names, got 'motion' twice"):
        families_by_name(["motion", fam], 15)
