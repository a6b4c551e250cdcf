import pytest
import torch

from lit_blind.kernels import family, gaussian_kernel, uniform_kernel
from lit_blind.physics import add_noise, adjoint, blur, data_fidelity, pinv, prox_data

D = torch.float64


def _kernels(gen, b=3, k=9):
    h = torch.rand(b, 1, k, k, generator=gen, dtype=D)
    return h / h.sum((-2, -1), keepdim=True)


@pytest.mark.parametrize("boundary", ["circular", "valid"])
def test_adjointness(gen, boundary):
    x = torch.rand(3, 2, 33, 29, generator=gen, dtype=D)
    h = _kernels(gen)
    y = blur(x, h, boundary)
    r = torch.randn(y.shape, generator=gen, dtype=D)
    lhs = (y * r).sum()
    rhs = (x * adjoint(r, h, boundary)).sum()
    assert abs(lhs - rhs) < 1e-10 * abs(lhs)


def test_blur_is_true_convolution_centred(gen):
    x = torch.zeros(1, 1, 33, 29, dtype=D)
    x[0, 0, 10, 12] = 1.0
    h = torch.zeros(1, 1, 5, 5, dtype=D)
    h[0, 0, 2, 3] = 1.0  # shift by +1 column under true convolution
    y = blur(x, h)
    assert y[0, 0, 10, 13] == pytest.approx(1.0)
    h = _kernels(gen, 1, 7)
    y = blur(x, h)  # the impulse response is the kernel itself, centred at the impulse
    torch.testing.assert_close(y[0, 0, 7:14, 9:16], h[0, 0])


def test_valid_matches_circular_interior(gen):
    x = torch.rand(2, 1, 33, 29, generator=gen, dtype=D)
    h = _kernels(gen, 2, 7)
    torch.testing.assert_close(blur(x, h, "valid"), blur(x, h, "circular")[..., 3:-3, 3:-3])


def test_broadcast_one_image_many_kernels(gen):
    x = torch.rand(1, 3, 33, 29, generator=gen, dtype=D)
    h = _kernels(gen, 4, 9)
    y = blur(x, h)
    assert y.shape == (4, 3, 33, 29)
    torch.testing.assert_close(y[2:3], blur(x, h[2:3]))


@pytest.mark.parametrize("gamma", [0.3, torch.tensor([0.5, 2.0, 10.0], dtype=D)])
def test_prox_optimality_and_fft_equals_cg(gen, gamma):
    z = torch.rand(3, 1, 33, 29, generator=gen, dtype=D)
    y = torch.rand(3, 1, 33, 29, generator=gen, dtype=D)
    h = _kernels(gen)
    g = torch.as_tensor(gamma, dtype=D).reshape(-1, 1, 1, 1)
    u = prox_data(z, y, h, gamma)
    grad = g * adjoint(blur(u, h) - y, h) + (u - z)
    assert grad.abs().max() < 1e-10
    # the CG path on the same (circular) normal equations gives the same point
    from deepinv.optim.linear import conjugate_gradient

    rhs = g * adjoint(y, h) + z
    u_cg = conjugate_gradient(lambda v: g * adjoint(blur(v, h), h) + v, rhs, max_iter=500, tol=1e-12)
    torch.testing.assert_close(u, u_cg, atol=1e-6, rtol=0)


@pytest.mark.parametrize(("batch", "channels", "k"), [(2, 1, 7), (1, 3, 1), (1, 3, 11), (2, 2, 5)])
def test_prox_valid_optimality(gen, batch, channels, k):
    """The valid prox (its own operator on an FFT-friendly grid) against the optimality condition written with
    deepinv's valid convolution and its adjoint (blur, adjoint): kernels of 1 pixel to a third of the image, a
    kernel per image or one for every channel, sizes that are not FFT-friendly (33 × 29)."""
    z = torch.rand(batch, channels, 33, 29, generator=gen, dtype=D)
    h = _kernels(gen, batch, k)
    y = torch.rand(batch, channels, 34 - k, 30 - k, generator=gen, dtype=D)
    u = prox_data(z, y, h, 0.8, boundary="valid", tol=1e-10)
    grad = 0.8 * adjoint(blur(u, h, "valid") - y, h, "valid") + (u - z)
    assert grad.abs().max() < 1e-6


def test_pinv_inverts_invertible_blur(gen):
    x = torch.rand(2, 1, 33, 29, generator=gen, dtype=D)
    h = family("gaussian", size=9)(torch.tensor([[0.6], [0.8]], dtype=D))
    torch.testing.assert_close(pinv(blur(x, h), h), x, atol=1e-9, rtol=0)


def test_pinv_truncates_vanishing_frequencies():
    h = uniform_kernel(3, torch.float64)  # its transfer function vanishes at 1/3 cycles per pixel
    x = torch.zeros(1, 1, 33, 33, dtype=D)
    x[..., ::3, :] = 1.0  # all energy at the vanishing frequency (plus DC)
    out = pinv(blur(x, h), h)
    assert torch.isfinite(out).all()


def test_data_fidelity_and_noise(gen):
    x = torch.rand(2, 1, 17, 15, generator=gen, dtype=D)
    h = gaussian_kernel(5, 1.0, D)
    y = add_noise(blur(x, h), 0.01, torch.Generator().manual_seed(3))
    y2 = add_noise(blur(x, h), 0.01, torch.Generator().manual_seed(3))
    torch.testing.assert_close(y, y2)
    f = data_fidelity(x, y, h)
    assert f.shape == (2,)
    assert abs(f.mean().item() / (0.5 * 17 * 15 * 1e-4) - 1) < 0.3


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: blur(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 9, 9)), "must not be larger"),
        (lambda: blur(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 4, 4)), "odd size"),
        (lambda: blur(torch.rand(1, 16, 16), torch.rand(1, 1, 3, 3)), "4 dimensions"),
        (lambda: blur(torch.rand(1, 3, 16, 16), torch.rand(1, 2, 3, 3)), "channel"),
        (lambda: blur(torch.full((1, 1, 16, 16), float("nan")), torch.rand(1, 1, 3, 3)), "finite"),
        (lambda: blur(torch.rand(2, 1, 16, 16), torch.rand(3, 1, 3, 3)), "batch"),
        (lambda: blur(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 3, 3), "reflect"), "boundary"),
        (
            lambda: prox_data(torch.rand(1, 1, 9, 9), torch.rand(1, 1, 9, 9), torch.rand(1, 1, 3, 3), 0.0),
            "gamma",
        ),
        (
            lambda: prox_data(torch.rand(1, 1, 9, 9), torch.rand(1, 1, 9, 9), torch.rand(1, 1, 3, 3), 1, "valid"),
            "y must",
        ),
        (lambda: add_noise(torch.rand(1, 1, 4, 4), -0.1), "sigma_y"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
