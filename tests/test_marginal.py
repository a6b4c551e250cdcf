"""The coarse-to-fine EM engine (lit_blind.marginal): each step against a closed form or a brute force."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import lit_blind.marginal as marginal
from lit_blind import GaussianPrior, deblur
from lit_blind.kernels import dirac, gaussian_kernel
from lit_blind.marginal import (
    FINEST_INNER,
    POLISH_SECOND_ORDER,
    SECOND_ORDER,
    SIGMA_END_PER_NOISE,
    STARTS,
    e_step,
    edge_repetition,
    edge_usefulness,
    gradient_covariance_trace,
    gradient_sparsity,
    kernel_normal_equations,
    kernel_step,
    kernel_window,
    marginal_em,
    prune_kernel,
    pyramid,
    resampled_noise_std,
    rescale_kernel,
    solve_kernel,
    tweedie_gradient_variance,
)
from lit_blind.metrics import kernel_error, noise_level
from lit_blind.physics import add_noise, blur, data_fidelity, image_gradient
from lit_blind.priors import GaussianMixturePrior

D = torch.float64


def _blocks(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A piecewise-constant test image with edges in every orientation, (1, 1, h, w) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    x = torch.full((h, w), 0.3, dtype=torch.float64)
    for _ in range(12):
        cy, cx, r = (torch.rand(3, generator=g, dtype=torch.float64) * torch.tensor([h, w, h / 4])).tolist()
        x[(yy - cy) ** 2 + (xx - cx) ** 2 < (r + 3) ** 2] = float(torch.rand(1, generator=g))
        a, b = (torch.rand(2, generator=g, dtype=torch.float64) * 2 - 1).tolist()
        x[(a * (yy - h / 2) + b * (xx - w / 2)) > r * 4] *= 0.7
    return x[None, None]


def _motion_kernel(k: int) -> torch.Tensor:
    h = torch.zeros(1, 1, k, k, dtype=torch.float64)
    for t in range(k - 2):
        h[0, 0, 1 + t, 1 + round((k - 3) * (0.5 + 0.5 * math.sin(t / 2)))] = 1.0 + t % 2
    return h / h.sum()


def test_normal_equations_match_brute_force_where_the_toeplitz_form_is_exact():
    k, H, W = 5, 9, 11
    g = torch.zeros(1, 1, H + k - 1 + 2 * k, W + k - 1 + 2 * k, dtype=torch.float64)
    g[..., k:-k, k:-k] = torch.randn(1, 1, H + k - 1, W + k - 1, generator=torch.Generator().manual_seed(1))
    y = torch.randn(1, 1, H + 2 * k, W + 2 * k, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    M, b = kernel_normal_equations([g], [y], k)
    patches = F.unfold(g, k)[0].T  # (positions i, m) = g(i + m), valid positions
    assert torch.allclose(b, patches.T @ y.flatten(), atol=1e-9)
    assert torch.allclose(M, patches.T @ patches, atol=1e-9)  # g vanishes near the border: no boundary term


def test_solve_kernel_satisfies_the_kkt_conditions():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(40, 16, generator=g, dtype=torch.float64)
    b = torch.randn(40, generator=g, dtype=torch.float64)
    M, rhs = A.T @ A, A.T @ b
    h = solve_kernel(M, rhs, reg=0.5, iters=2000)
    grad = (M + 0.5 * torch.eye(16, dtype=torch.float64)) @ h - rhs
    assert (h >= 0).all() and (h > 0).any() and (h == 0).any()
    assert grad[h > 0].abs().max() < 1e-6
    assert grad[h == 0].min() > -1e-6


def test_kernel_step_recovers_the_kernel_from_the_sharp_image():
    k = 9
    x = _blocks(80, 72)
    h_true = _motion_kernel(k)
    y = blur(x, h_true, "valid")
    h = kernel_step(x, y, k, reg=1e-6, edges=0)
    assert h.shape == (1, 1, k, k) and abs(h.sum().item() - 1) < 1e-9 and (h >= 0).all()
    assert kernel_error(h, h_true) < 0.1


@pytest.mark.parametrize("edges", [0, 5])
def test_kernel_step_with_second_differences_recovers_the_kernel_and_changes_the_fit(edges):
    k = 9
    x = _blocks(80, 72)
    h_true = _motion_kernel(k)
    y = blur(x, h_true, "valid")
    h = kernel_step(x, y, k, reg=1e-6, edges=edges, second_order=0.5)
    assert h.shape == (1, 1, k, k) and abs(h.sum().item() - 1) < 1e-9 and (h >= 0).all()
    assert kernel_error(h, h_true) < 0.1
    noisy = y + 0.05 * torch.randn(y.shape, generator=torch.Generator().manual_seed(0), dtype=D)
    assert not torch.allclose(
        kernel_step(x, noisy, k, 1.0, edges, second_order=0.0), kernel_step(x, noisy, k, 1.0, edges, second_order=0.5)
    )


def test_marginal_em_passes_second_order_to_the_pyramid_and_polish_second_order_to_the_polishing(monkeypatch):
    """second_order reaches every kernel step and covariance term of the pyramid (finest level included),
    polish_second_order the polishing rounds'; None is second_order everywhere."""
    seen, step, trace = [], marginal.kernel_step, marginal.gradient_covariance_trace
    monkeypatch.setattr(marginal, "kernel_step", lambda *a, **kw: seen.append(kw["second_order"]) or step(*a, **kw))
    monkeypatch.setattr(marginal, "gradient_covariance_trace", lambda *a: seen.append(a[4]) or trace(*a))
    y = blur(_blocks(40, 40), _motion_kernel(7), "valid")
    options = dict(init="large", iters=1, inner=1, finest_inner=1, polish=2, compare_after=1, second_order=0.5)
    res = marginal_em(y, GaussianPrior(), 7, polish_second_order=0.125, **options)
    levels = len(res.history["scales"])  # one outer iteration each, then the two polishing rounds
    assert levels == 3 and len(res.history["polish"]) == 2
    assert seen == [0.5] * 2 * levels + [0.125] * 2 * 2  # a covariance term and a kernel step per iteration
    seen.clear()
    marginal_em(y, GaussianPrior(), 7, polish_second_order=None, **options)
    assert seen == [0.5] * 2 * (levels + 2)
    with pytest.raises(ValueError, match="polish_second_order must be a finite number >= 0, got -0.5"):
        marginal_em(y, GaussianPrior(), 7, polish_second_order=-0.5)
    with pytest.raises(ValueError, match="second_order must be a finite number >= 0, got -1"):
        marginal_em(y, GaussianPrior(), 7, second_order=-1)


def test_select_edges_lowers_the_threshold_until_every_direction_has_its_share_by_brute_force():
    """Four bins of the gradient's direction, 45° apart (a gradient and its opposite one direction): the kept pixels
    are those at or above the highest score that leaves n/4 of them in every bin, so the weakest direction has its
    n/4 and the others more; one bin: exactly the n highest."""
    g = torch.Generator().manual_seed(3)
    gx, gy = torch.randn(2, 1, 1, 30, 40, generator=g, dtype=D)
    score = torch.rand(1, 1, 30, 40, generator=g, dtype=D) * (1 + 9 * (gx.abs() > gy.abs()))  # one direction favoured
    n = 200
    angle = torch.rad2deg(torch.atan2(gy, gx)) % 180
    bins = [(angle >= b * 45) & (angle < (b + 1) * 45) for b in range(4)]
    level = min(score[inside].sort(descending=True).values[n // 4 - 1] for inside in bins)
    four = marginal.select_edges(score, gx, gy, n, 4)
    assert four.dtype == torch.bool and four.shape == score.shape
    assert torch.equal(four, score >= level)
    assert min(int((four & inside).sum()) for inside in bins) == n // 4 and int(four.sum()) > n
    one = marginal.select_edges(score, gx, gy, n, 1)
    assert int(one.sum()) == n and torch.equal(one, score >= score.flatten().sort(descending=True).values[n - 1])
    steep = gx.abs() < gy.abs()  # the directions the score disfavours: more of them with the bins
    assert int((four & steep).sum()) > 2 * int((one & steep).sum())
    # empty bins do not count: every gradient in the first bin keeps its n/4 highest
    few = marginal.select_edges(score, gx.abs(), gy * 0, n, 4)
    assert int(few.sum()) == n // 4


def test_marginal_em_passes_edge_bins_to_every_kernel_step(monkeypatch):
    bins, step = [], marginal.kernel_step
    monkeypatch.setattr(marginal, "kernel_step", lambda *a, **kw: bins.append(kw["edge_bins"]) or step(*a, **kw))
    y = blur(_blocks(40, 40), _motion_kernel(7), "valid")
    marginal_em(y, GaussianPrior(), 7, init="large", iters=1, inner=1, finest_inner=1, edge_bins=4)
    assert len(bins) > 1 and set(bins) == {4}  # the pyramid's steps and the polishing's
    with pytest.raises(ValueError, match="edge_bins must be a positive integer, got 0"):
        marginal_em(y, GaussianPrior(), 7, edge_bins=0)


def test_edge_usefulness_is_one_along_a_straight_edge_and_small_on_fine_stripes():
    """Xu & Jia's r = ‖Σ_N ∇y‖ / Σ_N ‖∇y‖: every gradient of a straight step edge points the same way (r = 1);
    on stripes one pixel wide, five columns of alternating ±1 differences leave one of five (r = 1/5)."""
    edge = torch.zeros(1, 1, 40, 40, dtype=D)
    edge[..., 20:] = 1.0
    r = edge_usefulness(edge, 5)
    assert r.shape == (1, 1, 39, 39)
    torch.testing.assert_close(r[..., 17:22], torch.ones_like(r[..., 17:22]))  # windows that meet the edge
    assert r[..., :10].abs().max() == 0  # no gradient at all: 0, not NaN
    stripes = (torch.arange(40, dtype=D) % 2).expand(1, 1, 40, 40)
    inner = edge_usefulness(stripes, 5)[..., 2:-2, 2:-2]
    torch.testing.assert_close(inner, torch.full_like(inner, 0.2))


def test_edge_repetition_marks_stripes_and_not_edges_or_stroke_pairs():
    """Stripes of period 8 (sinusoidal, so every correlation is exact): their gradients agree with themselves at one
    and two periods and oppose themselves at the half periods, rep = 1 away from the border; after a blur too, which
    commutes with shifts; unchanged by the image's scale and offset. A straight step edge opposes itself nowhere and
    a pair of parallel strokes has no second period: rep ≤ 0."""
    k, n = 31, 96
    i = torch.arange(n, dtype=D)
    stripes = (0.5 + 0.4 * torch.sin(2 * math.pi * (i[:, None] + 0.5 * i[None, :]) / 8)).expand(1, 1, n, n)
    rep = edge_repetition(stripes, k)
    assert rep.shape == (1, 1, n - 1, n - 1) and rep.dtype == D
    inner = (slice(None), slice(None), slice(k, -k), slice(k, -k))
    assert rep[inner].min() > 0.95
    blurred = blur(stripes, gaussian_kernel(9, 1.5).to(D), "valid")
    assert edge_repetition(blurred, k)[inner].min() > 0.95
    torch.testing.assert_close(edge_repetition(3 * stripes - 1, k), rep, atol=1e-4, rtol=0)
    edge = torch.zeros(1, 1, n, n, dtype=D)
    edge[..., n // 2 :] = 1.0
    strokes = torch.zeros(1, 1, n, n, dtype=D)
    strokes[..., 40:43] = strokes[..., 50:53] = 1.0
    assert edge_repetition(edge, k).max() < 1e-3 and edge_repetition(strokes, k).max() < 1e-3


def test_edge_repetition_matches_its_definition_by_brute_force():
    """rep(p) = max_e min(c_2e, c_4e, −c_e, −c_3e) over the half plane of e, ‖4e‖∞ ≤ k − 1, c_d the correlation
    coefficient of ∇x and ∇x shifted by d over the k × k window at p, computed pixel by pixel at interior points."""
    k, n = 9, 40
    x = _blocks(n, n, seed=3) + 0.2 * torch.sin(torch.arange(n, dtype=D) * 2 * math.pi / 6)
    gx, gy = image_gradient(x)
    g = torch.stack([gx[0, 0, :-1, :], gy[0, 0, :, :-1]])  # (2, n − 1, n − 1)
    rep = edge_repetition(x, k)[0, 0]

    def c(p: tuple[int, int], d: tuple[int, int]) -> float:
        win = g[:, p[0] - k // 2 : p[0] + k // 2 + 1, p[1] - k // 2 : p[1] + k // 2 + 1]
        moved = g[:, p[0] - k // 2 + d[0] : p[0] + k // 2 + 1 + d[0], p[1] - k // 2 + d[1] : p[1] + k // 2 + 1 + d[1]]
        return float((win * moved).sum() / (win.pow(2).sum() * moved.pow(2).sum()).sqrt())

    r = (k - 1) // 4
    half = [(a, b) for a in range(r + 1) for b in range(-r, r + 1) if a > 0 or b > 0]
    for p in ((15, 15), (19, 12), (22, 24)):  # every shifted window inside the image
        want = max(
            min(c(p, (2 * a, 2 * b)), c(p, (4 * a, 4 * b)), -c(p, (a, b)), -c(p, (3 * a, 3 * b))) for a, b in half
        )
        assert float(rep[p]) == pytest.approx(want, abs=1e-5)


def test_kernel_step_leaves_the_excluded_gradients_out(monkeypatch):
    x = _blocks(48, 48)
    y = blur(x, _motion_kernel(7), "valid")
    exclude = torch.zeros(1, 1, 41, 41, dtype=torch.bool)
    exclude[..., 10:30, 5:25] = True
    seen = []
    equations = marginal.kernel_normal_equations
    monkeypatch.setattr(marginal, "kernel_normal_equations", lambda gs, ys, k: seen.append(gs) or equations(gs, ys, k))
    kept = kernel_step(x, y, 7, 1.0, edges=5, exclude=exclude)
    gx, gy, *second = seen[0]  # z's differences as kept; y's pixel i lies under z's pixel i + 3
    assert gx[..., 13:33, 8:28].abs().max() == 0 and gy[..., 13:33, 8:28].abs().max() == 0
    assert len(second) == 3 and all(d[..., 14:32, 9:27].abs().max() == 0 for d in second)
    assert gx.abs().sum() > 0
    assert not torch.allclose(kept, kernel_step(x, y, 7, 1.0, edges=5))
    torch.testing.assert_close(
        kernel_step(x, y, 7, 1.0, edges=5, exclude=~exclude.any().expand_as(exclude)),
        kernel_step(x, y, 7, 1.0, edges=5),
    )


def test_edge_window_changes_which_gradients_the_kernel_step_keeps():
    x = _blocks(48, 48) + 0.3 * (torch.arange(48, dtype=D) % 2) * (torch.arange(48, dtype=D)[:, None] > 30)
    y = blur(x, _motion_kernel(7), "valid")
    plain = kernel_step(x, y, 7, 1.0, edges=5, edge_window=0)
    assert not torch.allclose(plain, kernel_step(x, y, 7, 1.0, edges=5, edge_window=5))
    torch.testing.assert_close(kernel_step(x, y, 7, 1.0, edges=0, edge_window=0), kernel_step(x, y, 7, 1.0, edges=0))


def test_gradient_covariance_trace_matches_the_dense_formula():
    shape, rho, sigma = (6, 7), 0.3, 0.05
    h = gaussian_kernel(3, 0.8, torch.float64)
    eye = torch.eye(shape[0] * shape[1], dtype=torch.float64)

    def cov(hth: torch.Tensor) -> torch.Tensor:
        return sigma**2 * torch.linalg.inv(hth / rho + eye)

    dense = _dense_gradient_trace(h, shape, cov, 0.0)
    assert gradient_covariance_trace(h, shape, sigma, rho, 0.0) == pytest.approx(dense, rel=1e-9)
    # with the second differences at weight s (∂xy at s/2): the summed variance of every difference the step fits
    s = 0.7
    second = _dense_gradient_trace(h, shape, cov, s)
    assert gradient_covariance_trace(h, shape, sigma, rho, s) == pytest.approx(second, rel=1e-9)
    # the no-blur kernel leaves x least uncertain: the term grows with the blur it has to undo
    wide = gradient_covariance_trace(gaussian_kernel(3, 2.0, torch.float64), shape, sigma, rho, 0.0)
    assert gradient_covariance_trace(dirac(3, torch.float64), shape, sigma, rho, 0.0) < dense < wide


def _dense_gradient_trace(h: torch.Tensor, shape: tuple[int, int], cov, second_order: float = SECOND_ORDER) -> float:
    """tr(∇ C ∇ᵀ) with C = cov(HᵀH) built densely: circular blur by h (origin at its centre), forward differences,
    and the second differences at ``second_order`` (∂xy at half of it), the engine's default."""
    n, k = shape[0] * shape[1], h.shape[-1]
    eye = torch.eye(n, dtype=torch.float64).reshape(n, 1, *shape)
    hp = torch.zeros(shape, dtype=torch.float64)
    hp[:k, :k] = h[0, 0]
    hp = torch.roll(hp, (-(k // 2), -(k // 2)), (0, 1))
    H = torch.fft.ifft2(torch.fft.fft2(eye) * torch.fft.fft2(hp)).real.reshape(n, n).T
    Dx = (torch.roll(eye, -1, -1) - eye).reshape(n, n).T
    Dy = (torch.roll(eye, -1, -2) - eye).reshape(n, n).T
    C = cov(H.T @ H)
    terms = ((1, Dx), (1, Dy), (second_order, Dx @ Dx), (second_order, Dy @ Dy), (second_order / 2, Dy @ Dx))
    return float(sum(w * torch.trace(d @ C @ d.T) for w, d in terms))


def test_hqs_covariance_is_the_exact_covariance_of_the_e_steps_gaussian():
    """covariance='hqs': the first kernel step of a one-level run weighs ‖h‖² by tr(∇ σ_y²(HᵀH + ρI)⁻¹ ∇ᵀ) at
    the initial 3×3 box, computed densely here; with sigma_y omitted, the noise level is estimated from y."""
    y = blur(_blocks(16, 16), _motion_kernel(5), "valid")  # 12 × 12, x on 16 × 16
    sigma_y, rho = 0.02, 0.1
    one_level = dict(
        iters=1, inner=1, finest_inner=1, min_kernel=7, init="small", polish=0
    )  # 5×5 < min_kernel: one level
    res = marginal_em(y, GaussianPrior(), 5, covariance="hqs", sigma_y=sigma_y, rho=rho, **one_level)
    box = torch.zeros(1, 1, 5, 5, dtype=D)
    box[..., 1:4, 1:4] = 1 / 9
    dense = _dense_gradient_trace(
        box, (16, 16), lambda hth: sigma_y**2 * torch.linalg.inv(hth + rho * torch.eye(256, dtype=D))
    )
    assert res.history["sigma_y"] == sigma_y and res.history["level"] == [0]
    assert res.history["covariance"][0] == pytest.approx(dense, rel=1e-9)
    estimated = marginal_em(y, GaussianPrior(), 5, covariance="hqs", **one_level)
    assert estimated.history["sigma_y"] == noise_level(y)


def test_resampled_noise_std_matches_white_noise_through_the_pyramid():
    """The exact noise that the pyramid's resampling leaves, against 40 resampled white-noise images."""
    noise = torch.randn(40, 1, 90, 120, generator=torch.Generator().manual_seed(0), dtype=D)
    for size in ((64, 85), (45, 60), (22, 30)):
        sampled = F.interpolate(noise, size=size, mode="bilinear", antialias=True).std()
        assert resampled_noise_std((90, 120), size) == pytest.approx(float(sampled), rel=0.01)
    assert resampled_noise_std((90, 120), (90, 120)) == pytest.approx(1.0)


def test_rescale_kernel_stretches_by_the_ratio():
    h = gaussian_kernel(9, 1.0, torch.float64)
    assert torch.allclose(rescale_kernel(h, 9, 1.0), h, atol=1e-12)
    up = rescale_kernel(h, 17, 2.0)
    r = torch.arange(17, dtype=torch.float64) - 8
    std = (up[0, 0].sum(0) * r**2).sum().sqrt().item()
    assert up.sum().item() == pytest.approx(1.0) and std == pytest.approx(2.0, rel=0.1)


def test_prune_kernel_drops_specks_normalises_and_centres():
    h = torch.zeros(1, 1, 11, 11, dtype=torch.float64)
    h[0, 0, 2, 2:5] = 1.0  # the kernel, off centre
    h[0, 0, 9, 9] = 0.12  # an isolated speck, 3.8 % of the mass
    h[0, 0, 3, 3] = 0.01  # below 5 % of the maximum
    p = prune_kernel(h)
    assert p.sum().item() == pytest.approx(1.0) and (p > 0).sum().item() == 3
    assert p[0, 0, 5, 4:7].sum().item() == pytest.approx(1.0)
    h[0, 0, 9, 9] = 0.2  # 6.2 % of the mass: a faint piece of a shake, kept
    p = prune_kernel(h)
    assert (p > 0).sum().item() == 4 and p.max().item() == pytest.approx(1 / 3.2)


def test_kernel_step_prunes_with_the_given_mass(monkeypatch):
    seen = []
    monkeypatch.setattr(marginal, "prune_kernel", lambda h, min_mass: seen.append(min_mass) or h / h.sum())
    x = _blocks(40, 40)
    h = _motion_kernel(5)
    y = blur(x, h, "valid")
    marginal.kernel_step(x, y, 5, 0.0)
    marginal.kernel_step(x, y, 5, 0.0, prune_mass=0.1)
    assert seen == [marginal.PRUNE_MASS, 0.1] and marginal.PRUNE_MASS == 0.05


def test_pyramid_goes_from_the_smallest_kernel_to_the_requested_one():
    levels = pyramid(31)
    assert levels[-1] == (1.0, 31) and all(k % 2 == 1 and k >= 5 for _, k in levels)
    assert [k for _, k in levels] == sorted(k for _, k in levels)


def test_marginal_em_beats_the_no_blur_kernel_with_the_analytic_prior():
    k = 9
    x = _blocks(96, 96)
    h_true = _motion_kernel(k)
    g = torch.Generator().manual_seed(3)
    y = blur(x, h_true, "valid")
    y = y + 0.005 * torch.randn(y.shape, generator=g, dtype=y.dtype)
    seen = []
    res = marginal_em(y, GaussianPrior(), k, init="large", callback=seen.append)
    assert res.kernel.shape == (1, 1, k, k) and res.image.shape == (1, 1, 96, 96)
    finest = res.history["level"].count(max(res.history["level"]))
    assert len(seen) == len(res.history["sigma"])
    iters = finest - marginal.POLISH  # the finest level's EM iterations, then the polishing rounds
    polish_and_final = iters * (marginal.POLISH + 1)  # one final pass (iters pairs) per round and at the end
    assert res.history["score_evals"][-1] == 2 * (len(seen) - finest) + FINEST_INNER * iters + polish_and_final
    assert kernel_error(res.kernel, h_true) < kernel_error(dirac(k, torch.float64), h_true) - 0.1


def test_gradient_sparsity_is_scale_free_and_lower_for_the_sharp_image():
    x = _blocks(64, 64)
    assert gradient_sparsity(3 * x) == pytest.approx(gradient_sparsity(x), rel=1e-12)
    blurred = blur(x, gaussian_kernel(9, 1.5, torch.float64), "valid")
    assert gradient_sparsity(blurred) > 1.2 * gradient_sparsity(x[..., 4:-4, 4:-4])
    # an RGB image scores its luminance
    rgb = torch.cat([x, 0.5 * x, x.flip(-1)], 1)
    lum = 0.299 * rgb[:, :1] + 0.587 * rgb[:, 1:2] + 0.114 * rgb[:, 2:]
    assert gradient_sparsity(rgb) == pytest.approx(gradient_sparsity(lum), rel=1e-9)


def test_both_starts_keep_the_run_with_the_sparser_image():
    """init="both": the EM from each start with the same options; the kept kernel and image are those of the run
    whose image (on y's grid) has the lower gradient sparsity, and the history holds both runs' iterations."""
    k = 7
    y = blur(_blocks(56, 56, seed=2), _motion_kernel(k), "valid")
    y = y + 0.01 * torch.randn(y.shape, generator=torch.Generator().manual_seed(4), dtype=y.dtype)
    options = dict(iters=2, polish=1)
    runs = {start: marginal_em(y, GaussianPrior(), k, init=start, **options) for start in ("large", "small")}
    seen = []
    res = marginal_em(y, GaussianPrior(), k, init="both", callback=seen.append, **options)
    sparsity = {
        start: gradient_sparsity(r.image[..., k // 2 : -(k // 2), k // 2 : -(k // 2)]) for start, r in runs.items()
    }
    assert sparsity["large"] != sparsity["small"]
    best = min(sparsity, key=sparsity.get)
    assert res.history["chosen"] == best
    assert torch.equal(res.kernel, runs[best].kernel) and torch.equal(res.image, runs[best].image)
    for start, r in runs.items():
        assert torch.equal(res.history["starts"][start]["kernel"], r.kernel)
        assert res.history["starts"][start]["sparsity"] == pytest.approx(sparsity[start], rel=1e-12)
    n = len(runs["large"].history["level"])
    assert res.history["init"] == ["large"] * n + ["small"] * len(runs["small"].history["level"])
    assert res.history["score_evals"][-1] == sum(r.history["score_evals"][-1] for r in runs.values())
    assert len(seen) == len(res.history["level"]) and {s["total"] for s in seen} == {2 * n}
    assert [s["init"] for s in seen] == res.history["init"]


def test_both_starts_compare_after_some_rounds_and_polish_the_kept_one_on():
    """compare_after < polish: the starts are compared after compare_after polishing rounds (on the final pass under
    that kernel) and the kept one alone goes on to polish rounds, from the compared image: the result is the kept
    start's single run with polish rounds, at the cost of one final pass for the remaining rounds."""
    k = 7
    y = blur(_blocks(56, 56, seed=2), _motion_kernel(k), "valid")
    y = y + 0.01 * torch.randn(y.shape, generator=torch.Generator().manual_seed(4), dtype=y.dtype)
    options = dict(iters=2, finest_edges=5)
    compared = {start: marginal_em(y, GaussianPrior(), k, init=start, polish=1, **options) for start in STARTS}
    c = k // 2
    sparsity = {start: gradient_sparsity(r.image[..., c:-c, c:-c]) for start, r in compared.items()}
    best = min(sparsity, key=sparsity.get)
    seen = []
    res = marginal_em(y, GaussianPrior(), k, init="both", polish=2, compare_after=1, callback=seen.append, **options)
    alone = marginal_em(y, GaussianPrior(), k, init=best, polish=2, **options)
    assert res.history["chosen"] == best
    assert torch.equal(res.kernel, alone.kernel) and torch.equal(res.image, alone.image)
    assert not torch.equal(res.kernel, compared[best].kernel)  # the kept start's second round changed it
    for start, r in compared.items():
        assert torch.equal(res.history["starts"][start]["kernel"], r.kernel)
        assert res.history["starts"][start]["sparsity"] == pytest.approx(sparsity[start], rel=1e-12)
        assert res.history["starts"][start]["score_evals"] == r.history["score_evals"][-1]
    n = {start: len(r.history["level"]) for start, r in compared.items()}
    assert res.history["init"] == ["large"] * n["large"] + ["small"] * n["small"] + [best]
    assert len(res.history["polish"]) == 2
    assert all(torch.equal(p, q) for p, q in zip(res.history["polish"], alone.history["polish"], strict=True))
    # the kept round reuses the compared image: one more final pass, for the returned image
    assert res.history["score_evals"][-1] == sum(r.history["score_evals"][-1] for r in compared.values()) + 2
    assert len(seen) == len(res.history["level"]) and {s["total"] for s in seen} == {n["large"] + n["small"] + 1}
    with pytest.raises(ValueError, match="compare_after must be a non-negative integer, got -1"):
        marginal_em(y, GaussianPrior(), k, compare_after=-1)


def test_long_e_step_explains_the_photograph_under_the_true_kernel_and_not_under_a_wider_one():
    """e_step under a fixed kernel (what benchmarks/kernel_residual.py runs): after many HQS pairs the image
    under the true kernel leaves a residual ½‖h ⋆ z − y‖² below the noise floor ½Nσ_y² (the Wiener prior is
    weak enough to fit part of the noise), while under a uniform kernel as wide as the support no image explains
    the photograph (residual several times the floor); the last x_p, the data prox, fits better than z. The residual
    detects kernels that are too wide only: under the Dirac (no blur) the image y itself fits below the floor."""
    k, sigma_y = 9, 0.01
    h_true = _motion_kernel(k)
    y = blur(_blocks(96, 96), h_true, "valid")
    y = y + sigma_y * torch.randn(y.shape, generator=torch.Generator().manual_seed(0), dtype=D)
    floor = 0.5 * y.numel() * sigma_y**2
    x0 = F.pad(y, (k // 2,) * 4, mode="replicate")
    ratios = {}
    wide = torch.full((1, 1, k, k), 1 / k**2, dtype=D)
    for name, h in (("true", h_true), ("wide", wide), ("dirac", dirac(k, D))):
        z, xp = e_step(x0, y, h, GaussianPrior(), 1.4 * sigma_y, 0.1, 16)
        assert z.shape == xp.shape == x0.shape
        ratios[name] = [float(data_fidelity(v, y, h, "valid").sum()) / floor for v in (z, xp)]
        assert ratios[name][1] < ratios[name][0]
    assert ratios["true"][0] < 1 < 2 < ratios["wide"][0] and ratios["dirac"][0] < 1


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(h=torch.full((1, 1, 4, 4), 1 / 16, dtype=D)), "h must be one non-negative odd square"),
        (dict(h=-dirac(5, D)), "h must be one non-negative odd square"),
        (dict(x=torch.zeros(1, 1, 18, 18, dtype=D)), "x must be y's size plus"),
        (dict(x=torch.zeros(2, 1, 20, 20, dtype=D)), "x must have y's batch size 1"),
        (dict(sigma=-0.1), "sigma"),
        (dict(rho=0.0), "rho"),
        (dict(pairs=0), "pairs must be a positive integer"),
    ],
)
def test_e_step_rejects_bad_arguments(change, match):
    y = torch.rand(1, 1, 16, 16, dtype=D)
    args = dict(x=F.pad(y, (2,) * 4), y=y, h=dirac(5, D), prior=GaussianPrior(), sigma=0.02, rho=0.1, pairs=2)
    with pytest.raises(ValueError, match=match):
        e_step(**(args | change))


def test_marginal_em_warm_starts_from_a_given_kernel():
    """init=<kernel>: a one-level run started at the true kernel stays nearer to it than one started from the
    uniform kernel, and the first kernel step sees the given kernel (its covariance term is the trace at h_true)."""
    k, shape = 9, (64, 64)
    h_true = _motion_kernel(k)
    y = blur(_blocks(*shape), h_true, "valid")
    y = y + 0.005 * torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=y.dtype)
    one_level = dict(iters=2, min_kernel=k)
    warm = marginal_em(y, GaussianPrior(), k, init=3 * h_true, **one_level)
    cold = marginal_em(y, GaussianPrior(), k, init="large", **one_level)
    assert warm.history["covariance"][0] == pytest.approx(
        gradient_covariance_trace(h_true, shape, warm.history["sigma"][0], 0.1), rel=1e-9
    )
    assert kernel_error(warm.kernel, h_true) < kernel_error(cold.kernel, h_true)
    # through the pyramid the given kernel is shrunk to the coarsest level (5×5 here) without losing it: a thin
    # ring of radius 3 falls between the 5 × 5 points that sampling it at the scale ratio would read
    ring = torch.zeros(1, 1, 31, 31, dtype=D)
    t = torch.linspace(0, 2 * math.pi, 400, dtype=D)
    ring[0, 0, (15 + 3 * t.sin()).round().long(), (15 + 3 * t.cos()).round().long()] = 1.0
    seen = []
    res = marginal_em(
        blur(_blocks(96, 96), h_true, "valid"), GaussianPrior(), 31, init=ring, iters=1, callback=seen.append
    )
    assert seen[0]["kernel"].shape[-1] == 5 and torch.isfinite(res.kernel).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kernel_size": 41}, "kernel_size 41 must not exceed"),
        ({"kernel_size": 8}, "kernel_size must be an odd"),
        ({"sigma_start": 0.01, "sigma_end": 0.02}, "sigma_end must not exceed"),
        ({"iters": 0}, "iters must be a positive integer"),
        ({"init": "oracle"}, "init must be one of"),
        ({"init": "both", "iters": 0}, "iters must be a positive integer"),
        ({"init": torch.ones(1, 1, 7, 7, dtype=torch.float64)}, r"non-negative \(1, 1, 9, 9\) kernel"),
        ({"init": -torch.ones(1, 1, 9, 9, dtype=torch.float64)}, "positive sum"),
        ({"covariance": "sampled"}, "covariance must be one of"),
        ({"edge_window": 4}, "edge_window must be 0"),
        ({"sigma_y": 0.0}, r"sigma_y must be in \(0, 0.5\]"),
        ({"covariance": "hqs", "sigma_y": 2.0}, r"sigma_y must be in \(0, 0.5\]"),
        ({"prune_mass": 1.0}, r"prune_mass must be in \[0, 1\)"),
        ({"prune_mass": -0.1}, "prune_mass must be a finite number >= 0"),
        ({"refine": -1}, "refine must be a non-negative integer"),
        ({"refine": 1.5}, "refine must be a non-negative integer"),
        ({"attention": "windowed"}, "attention must be one of"),
        ({"polish_covariance": "prior"}, "polish_covariance must be one of"),
        ({"precision": "bf16"}, "precision must be one of"),
        ({"covariance": "tweedie", "precision": "bf16-mixed"}, "precision must be '32-true' or 'auto' with"),
        ({"window": 8}, r"window must be 'auto', 'full' or an integer side of at least kernel_size \(9\), got 8"),
        ({"window": "half"}, "window must be one of"),
        ({"window": True}, "window must be 'auto', 'full' or an integer"),
    ],
)
def test_marginal_em_rejects_bad_arguments(kwargs, match):
    y = torch.rand(1, 1, 40, 40, dtype=torch.float64)
    with pytest.raises(ValueError, match=match):
        marginal_em(y, GaussianPrior(), **({"kernel_size": 9} | kwargs))


def test_marginal_em_rejects_bad_images():
    with pytest.raises(ValueError, match="must be finite"):
        marginal_em(torch.full((1, 1, 40, 40), float("nan")), GaussianPrior(), 9)
    with pytest.raises(ValueError, match="C = 1"):
        marginal_em(torch.rand(1, 2, 40, 40), GaussianPrior(), 9)


def test_deblur_em_rejects_settings_it_cannot_honour():
    y = torch.rand(1, 1, 40, 40, dtype=torch.float64)
    with pytest.raises(ValueError, match="family must be 'simplex'"):
        deblur(y, GaussianPrior(), algorithm="em", family="gaussian", kernel_size=9, boundary="valid")
    with pytest.raises(ValueError, match="boundary must be 'valid'"):
        deblur(y, GaussianPrior(), algorithm="em", kernel_size=9, boundary="circular")
    with pytest.raises(ValueError, match="K, gamma_x apply to algorithm 'alternating'"):
        deblur(y, GaussianPrior(), kernel_size=9, K=4, gamma_x=0.1)  # the default algorithm is EM
    with pytest.raises(ValueError, match="em_options apply"):
        deblur(y, GaussianPrior(), algorithm="alternating", kernel_size=9, em_options={"iters": 2})
    with pytest.raises(ValueError, match="sigma_y given twice"):
        deblur(y, GaussianPrior(), kernel_size=9, sigma_y=0.01, em_options={"sigma_y": 0.02})


def test_annealing_ends_at_the_noise_level():
    """sigma_end=None: σ_t ends at SIGMA_END_PER_NOISE · σ_y, at least the prior's sigma_min and at most
    sigma_start; σ_y is estimated from y when not given, and deblur passes its sigma_y to the EM."""
    y = add_noise(blur(_blocks(40, 40), _motion_kernel(5), "valid"), 0.02, torch.Generator().manual_seed(0))
    # a 5×5 kernel below min_kernel: one level
    one = dict(init="large", iters=2, inner=1, finest_inner=1, min_kernel=7, polish=0)
    prior = GaussianPrior(sigma_min=0.005)
    for sigma_y, end in ((0.02, SIGMA_END_PER_NOISE * 0.02), (0.001, 0.005), (0.2, 0.05)):
        res = marginal_em(y, prior, 5, sigma_y=sigma_y, **one)
        assert res.history["sigma"] == pytest.approx([0.05, end], rel=1e-12)  # geometric: start, end
        assert res.history["sigma_y"] == sigma_y
    estimated = marginal_em(y, prior, 5, **one)
    assert estimated.history["sigma_y"] == noise_level(y) and 0.015 < noise_level(y) < 0.025
    assert estimated.history["sigma"][-1] == pytest.approx(SIGMA_END_PER_NOISE * noise_level(y), rel=1e-12)
    assert marginal_em(y, prior, 5, sigma_end=0.03, **one).history["sigma"][-1] == pytest.approx(0.03)
    via_deblur = deblur(y, prior, kernel_size=5, sigma_y=0.02, em_options=one).history
    assert via_deblur["sigma_y"] == 0.02 and via_deblur["sigma"][-1] == pytest.approx(SIGMA_END_PER_NOISE * 0.02)


def test_polishing_takes_the_covariance_term_at_the_noise_level_below_the_priors_floor():
    """polish_covariance="noise" (the default): the polishing rounds' full trace is taken at SIGMA_END_PER_NOISE · σ_y
    even where the denoiser's σ_t stop at the prior's sigma_min, so at σ_y = 0.001 (floor 0.005) the round's term is
    (0.0014 / 0.005)² of the denoiser-level one under the same kernel (the trace is σ² times a function of h), and the
    EM's own steps are untouched; where SIGMA_END_PER_NOISE · σ_y is above the floor the two agree exactly."""
    y = add_noise(blur(_blocks(40, 40), _motion_kernel(5), "valid"), 0.001, torch.Generator().manual_seed(0))
    # one level, two steps, one round
    one = dict(init="large", iters=2, inner=1, finest_inner=1, min_kernel=7, polish=1)
    prior = GaussianPrior(sigma_min=0.005)
    noise = marginal_em(y, prior, 5, sigma_y=0.001, **one).history
    denoiser = marginal_em(y, prior, 5, sigma_y=0.001, polish_covariance="denoiser", **one).history
    assert noise["sigma"] == denoiser["sigma"] == pytest.approx([0.05, 0.005, 0.005], rel=1e-12)  # the denoiser's
    assert noise["covariance"][:2] == denoiser["covariance"][:2]  # the EM's steps, so the same kernel to polish
    ratio = (SIGMA_END_PER_NOISE * 0.001 / 0.005) ** 2
    assert noise["covariance"][2] == pytest.approx(ratio * denoiser["covariance"][2], rel=1e-12)
    above = [marginal_em(y, prior, 5, sigma_y=0.02, polish_covariance=v, **one) for v in ("noise", "denoiser")]
    assert above[0].history["covariance"] == above[1].history["covariance"]
    assert torch.equal(above[0].kernel, above[1].kernel)


def test_rgb_noise_level_is_the_luminances():
    """An RGB y with per-channel noise σ: the EM works on the luminance Σ w_c y_c, whose noise is σ‖w‖; a given
    sigma_y is converted so, and the estimate (made on the luminance) agrees with the conversion."""
    gen = torch.Generator().manual_seed(0)
    x = torch.linspace(0.2, 0.8, 124, dtype=D).expand(1, 1, 124, 124)  # smooth: the estimate sees the noise only
    rgb = blur(torch.cat([x, 0.8 * x.flip(-1), 1 - x], 1), _motion_kernel(5), "valid")
    y = add_noise(rgb, 0.03, gen)
    one = dict(iters=1, inner=1, finest_inner=1, min_kernel=7)
    given = marginal_em(y, GaussianPrior(), 5, sigma_y=0.03, **one).history["sigma_y"]
    assert given == pytest.approx(0.03 * math.hypot(0.299, 0.587, 0.114), rel=1e-12)
    estimated = marginal_em(y, GaussianPrior(), 5, **one).history["sigma_y"]
    assert estimated == pytest.approx(given, rel=0.05)


def test_covariance_term_enters_the_kernel_step_only_when_asked():
    """The EM's own kernel steps (no polishing: on a noise-free y its term is at the noise level, 0, either way)."""
    y = blur(_blocks(48, 48), _motion_kernel(7), "valid")
    off = marginal_em(y, GaussianPrior(), 7, iters=1, inner=1, finest_inner=1, polish=0, covariance="none")
    on = marginal_em(y, GaussianPrior(), 7, iters=1, inner=1, finest_inner=1, polish=0)
    assert all(c == 0 for c in off.history["covariance"]) and all(c > 0 for c in on.history["covariance"])
    assert not torch.allclose(on.kernel, off.kernel)


def test_the_finest_level_runs_finest_inner_pairs_per_e_step(monkeypatch):
    """inner pairs per E-step at the coarser levels, finest_inner at the finest level, then the final pass under the
    final kernel: one pair per σ of the finest level's schedule (an RGB y: its channels as one batch); the history's
    score_evals counts them."""
    calls = []
    e_step = marginal._e_step

    def spy(x, y, h, prior, sigma, rho, pairs):
        calls.append((h.shape[-1], y.shape[0], pairs))  # channels go as a batch in the RGB pass
        return e_step(x, y, h, prior, sigma, rho, pairs)

    monkeypatch.setattr(marginal, "_e_step", spy)
    y = blur(_blocks(48, 48), _motion_kernel(7), "valid")
    res = marginal_em(y, GaussianPrior(), 7, init="large", iters=2, inner=1, finest_inner=3, min_kernel=5, polish=0)
    levels = len(pyramid(7, 5))
    final = [(7, 1, 1)] * 2  # the final pass: one pair per σ of the finest level's schedule
    assert levels > 1 and calls == [(5, 1, 1)] * 2 * (levels - 1) + [(7, 1, 3)] * 2 + final
    assert res.history["score_evals"][-1] == 2 * (levels - 1) + 6 + 2
    x = F.pad(y, (3,) * 4, mode="replicate")  # the final pass by hand: from y, under the returned kernel
    for sigma in res.history["sigma"][-2:]:
        x = e_step(x, y, res.kernel, GaussianPrior(), sigma, 0.1, 1)[0]
    torch.testing.assert_close(res.image, x, rtol=0, atol=1e-12)
    calls.clear()
    rgb = torch.cat([y, 0.8 * y, 1 - y], 1)
    res = marginal_em(rgb, GaussianPrior(), 7, init="large", iters=2, inner=1, finest_inner=3, min_kernel=5, polish=0)
    assert calls[-4:] == [(7, 1, 3)] * 2 + [(7, 3, 1)] * 2  # the finest level on the luminance, then the channels
    assert res.history["score_evals"][-1] == 2 * (levels - 1) + 6 + 2
    with pytest.raises(ValueError, match="finest_inner must be a positive integer, got 0"):
        marginal_em(y, GaussianPrior(), 7, finest_inner=0)


def test_the_finest_levels_kernel_steps_keep_finest_edges_gradients(monkeypatch):
    """The kernel steps of the coarser levels keep ``edges`` · 4k gradients, those of the finest level
    ``finest_edges`` · 4k; kernel_step keeps exactly that many of z's gradient pixels."""
    seen, kept = [], []
    step = marginal.kernel_step

    def spy(z, y, k, reg, edges, *args, **kw):
        seen.append((k, edges))
        return step(z, y, k, reg, edges, *args, **kw)

    monkeypatch.setattr(marginal, "kernel_step", spy)
    y = blur(_blocks(48, 48), _motion_kernel(7), "valid")
    marginal_em(
        y,
        GaussianPrior(),
        7,
        init="large",
        iters=2,
        inner=1,
        finest_inner=1,
        min_kernel=5,
        edges=3,
        finest_edges=5,
        polish=0,
    )
    levels = len(pyramid(7, 5))
    assert levels > 1 and seen == [(5, 3)] * 2 * (levels - 1) + [(7, 5)] * 2
    seen.clear()
    marginal_em(y, GaussianPrior(), 7, init="large", iters=1, inner=1, finest_inner=1, min_kernel=7)
    assert seen == [(7, marginal.FINEST_EDGES)] * (1 + marginal.POLISH)  # the polishing keeps the finest budget

    def count(gs, *args, **kw):  # the kept pixels, from the masked gradients the normal equations receive
        kept.append(int((gs[0][..., :-1, :] != 0).sum()))
        return torch.zeros(49, 49, dtype=torch.float64), torch.ones(49, dtype=torch.float64)

    monkeypatch.setattr(marginal, "kernel_normal_equations", count)
    z = _blocks(48, 48) + 0.01 * torch.randn(
        1, 1, 48, 48, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    for budget in (2.0, 5.0):
        step(z, y, 7, 1.0, budget)
        step(z, y, 7, 1.0, budget, edge_bins=4)
    # one direction bin (the default): exactly the budget; four: at least it, down to the weakest direction's share
    assert kept[0::2] == [2 * 4 * 7, 5 * 4 * 7]
    assert kept[1] >= kept[0] and kept[3] >= kept[2] and kept[3] > kept[1]
    with pytest.raises(ValueError, match="finest_edges must be a finite number >= 0, got -1"):
        marginal_em(y, GaussianPrior(), 7, finest_edges=-1)


def test_each_finer_level_starts_from_the_coarser_levels_image(monkeypatch):
    """warm_image=True: the first E-step of every finer level starts from the last image of the level below, its
    interior (the coarser y's grid) upsampled to this level's y and replicate-padded by k // 2; the coarsest level,
    and every level by default (warm_image=False), from y padded."""
    calls = []
    e_step = marginal._e_step

    def spy(x, y, h, prior, sigma, rho, pairs):
        out = e_step(x, y, h, prior, sigma, rho, pairs)
        calls.append((x, y, out[0]))
        return out

    monkeypatch.setattr(marginal, "_e_step", spy)
    y = blur(_blocks(48, 48), _motion_kernel(9), "valid")
    marginal_em(y, GaussianPrior(), 9, iters=2, inner=1, finest_inner=1, min_kernel=5, warm_image=True)
    assert [k for _, k in pyramid(9, 5)] == [5, 7, 9]
    (x0, y0, _), (_, _, z0), (x1, y1, _) = calls[0], calls[1], calls[2]  # level 0 (k = 5): two E-steps, then level 1
    torch.testing.assert_close(x0, F.pad(y0, (2,) * 4, mode="replicate"), rtol=0, atol=0)
    upsampled = F.interpolate(z0[..., 2:-2, 2:-2], size=tuple(y1.shape[-2:]), mode="bilinear", align_corners=False)
    torch.testing.assert_close(x1, F.pad(upsampled, (3,) * 4, mode="replicate"), rtol=0, atol=0)
    assert not torch.allclose(x1, F.pad(y1, (3,) * 4, mode="replicate"))
    calls.clear()
    marginal_em(y, GaussianPrior(), 9, iters=2, inner=1, finest_inner=1, min_kernel=5)
    torch.testing.assert_close(calls[2][0], F.pad(calls[2][1], (3,) * 4, mode="replicate"), rtol=0, atol=0)
    with pytest.raises(ValueError, match="warm_image must be True or False, got 1"):
        marginal_em(y, GaussianPrior(), 9, warm_image=1)


@pytest.mark.parametrize("kernel_image", ["hqs", "denoised"])
def test_the_kernel_step_fits_the_chosen_image_of_the_e_step(monkeypatch, kernel_image):
    """kernel_image="hqs": every kernel step fits the E-step's last HQS image x_p (the mean of the Gaussian whose
    covariance the term counts); "denoised": its denoised image z = D(x_p, σ_t)."""
    images, fitted = [], []
    e_step, step = marginal._e_step, marginal.kernel_step

    def spy_e(*args):
        out = e_step(*args)
        images.append(out)
        return out

    def spy_k(z, *args, **kw):
        fitted.append(z)
        return step(z, *args, **kw)

    monkeypatch.setattr(marginal, "_e_step", spy_e)
    monkeypatch.setattr(marginal, "kernel_step", spy_k)
    y = blur(_blocks(48, 48), _motion_kernel(7), "valid")
    opts = dict(init="large", iters=2, inner=2, finest_inner=2, min_kernel=5, polish=0)
    marginal_em(y, GaussianPrior(), 7, kernel_image=kernel_image, **opts)
    assert len(fitted) == len(images) - 2  # the final pass (2 σ) runs no kernel step
    for (z, xp), f in zip(images, fitted, strict=False):
        assert f is (xp if kernel_image == "hqs" else z)
        assert not torch.equal(z, xp)
    with pytest.raises(ValueError, match=r"kernel_image must be one of \('hqs', 'denoised'\), got 'z'"):
        marginal_em(y, GaussianPrior(), 7, kernel_image="z")


def test_refinement_counts_the_kept_pixels_in_the_finest_levels_last_steps(monkeypatch):
    """refine = r: the last r kernel steps of the finest level, and only those, take the covariance over the kept
    edge pixels (masked_cov); every other step the full trace; covariance="kept" keeps every step masked."""
    seen = []
    step = marginal.kernel_step

    def spy(z, y, k, reg, edges, masked_cov, *rest, **kw):
        seen.append((k, masked_cov))
        return step(z, y, k, reg, edges, masked_cov, *rest, **kw)

    monkeypatch.setattr(marginal, "kernel_step", spy)
    y = blur(_blocks(48, 48), _motion_kernel(7), "valid")
    res = marginal_em(y, GaussianPrior(), 7, init="large", iters=3, inner=1, min_kernel=5, refine=2, polish=0)
    coarse = 3 * (len(marginal.pyramid(7, 5)) - 1)  # kernel steps on the coarser levels
    assert seen[coarse:] == [(7, False), (7, True), (7, True)] and not any(m for _, m in seen[:coarse])
    assert res.history["covariance"][-1] > 0  # the trace is still computed; the kernel step scales it
    seen.clear()
    marginal_em(y, GaussianPrior(), 7, init="large", iters=3, inner=1, min_kernel=5, refine=0, polish=0)
    assert not any(m for _, m in seen)
    seen.clear()
    marginal_em(
        y, GaussianPrior(), 7, init="large", iters=3, inner=1, min_kernel=5, refine=3, covariance="kept", polish=0
    )
    assert all(m for _, m in seen)
    seen.clear()
    marginal_em(
        y, GaussianPrior(), 7, init="large", iters=1, inner=1, min_kernel=5, refine=2, polish=0
    )  # fewer steps than refine
    assert seen[-1] == (7, True) and not any(m for _, m in seen[:-1])
    assert marginal.REFINE == 2


def test_polishing_fits_the_kernel_to_the_final_pass_image(monkeypatch):
    """polish = r: after the finest level, r rounds of (the final pass from y under the current kernel, one HQS pair
    per σ of the finest level's schedule; a kernel step on its image with finest_edges gradients and their flanks
    (polish_flanks pixels around them, the EM's own steps none) and the covariance
    trace at the noise level, here the last σ_t (above the prior's floor; below it, see
    test_polishing_takes_the_covariance_term_at_the_noise_level_below_the_priors_floor), over every pixel as in the
    EM's own steps), then the final pass under the last kernel; each round's kernel in the
    history, each round an outer iteration of the finest level at the last σ_t in the history and to the callback,
    its denoiser calls counted; polish = 0 leaves the engine as it was."""
    steps = []
    step = marginal.kernel_step

    def spy(z, y, k, reg, edges, masked_cov, *rest, **kw):
        h = step(z, y, k, reg, edges, masked_cov, *rest, **kw)
        steps.append((z, reg, edges, masked_cov, kw.get("flanks", 0), h))
        return h

    monkeypatch.setattr(marginal, "kernel_step", spy)
    y = add_noise(blur(_blocks(48, 48), _motion_kernel(7), "valid"), 0.01, torch.Generator().manual_seed(0))
    opts = dict(init="large", iters=2, inner=1, finest_inner=1, min_kernel=5, finest_edges=5)
    base = marginal_em(y, GaussianPrior(), 7, polish=0, **opts)
    n = len(steps)
    assert base.history["polish"] == []
    steps.clear()
    seen = []
    res = marginal_em(y, GaussianPrior(), 7, polish=2, callback=lambda s: seen.append(s), **opts)
    assert len(steps) == n + 2
    assert [f for *_, f, _ in steps] == [0] * n + [marginal.POLISH_FLANKS] * 2  # the flanks in the polishing only
    torch.testing.assert_close(res.history["scales"][-1][1], base.kernel, rtol=0, atol=0)  # the same EM before
    sigmas = base.history["sigma"][-2:]
    assert res.history["sigma"] == base.history["sigma"] + [sigmas[-1]] * 2
    assert res.history["level"] == base.history["level"] + [base.history["level"][-1]] * 2
    assert [(s["iteration"], s["total"]) for s in seen[-3:]] == [(1, n + 2), (2, n + 2), (3, n + 2)]
    h = base.kernel
    for (z, reg, edges, masked_cov, _, h_new), kept in zip(steps[n:], res.history["polish"], strict=True):
        x = F.pad(y, (3,) * 4, mode="replicate")  # the final pass by hand, under the kernel before the round
        for sigma in sigmas:
            x = e_step(x, y, h, GaussianPrior(), sigma, 0.1, 1)[0]
        torch.testing.assert_close(z, x, rtol=0, atol=1e-12)
        assert edges == 5 and not masked_cov
        shape = tuple(x.shape[-2:])  # the trace with the polishing's weight of the second differences
        assert reg == pytest.approx(
            gradient_covariance_trace(h, shape, sigmas[-1], 0.1, POLISH_SECOND_ORDER), rel=1e-12
        )
        torch.testing.assert_close(kept, h_new, rtol=0, atol=0)
        h = h_new
    torch.testing.assert_close(res.kernel, h, rtol=0, atol=0)
    assert not torch.equal(res.kernel, base.kernel)
    assert marginal.POLISH == 3 and marginal.POLISH_FLANKS == 1
    assert res.history["score_evals"][-1] == base.history["score_evals"][-1] + 2 * 2
    with pytest.raises(ValueError, match="polish must be a non-negative integer, got -1"):
        marginal_em(y, GaussianPrior(), 7, polish=-1)


def test_covariance_of_masked_gradients_counts_the_kept_pixels_only():
    """E‖mask ⊙ ∂x ⋆ h − ∂y‖² = ‖mask ⊙ ∂z ⋆ h − ∂y‖² + ‖h‖² Σ_kept var: with edge selection the trace over
    all pixels is scaled by the kept fraction, which is exactly the unscaled step at that smaller weight."""
    x = _blocks(40, 40) + 0.01 * torch.randn(1, 1, 40, 40, generator=torch.Generator().manual_seed(0), dtype=D)
    y = blur(x, _motion_kernel(7), "valid")
    kept = 20 * 4 * 7 / (39 * 39)  # edges · 4k of the (H − 1)(W − 1) gradient magnitudes (no ties: noise)
    scaled = kernel_step(x, y, 7, 5.0, edges=20, masked_cov=True)
    by_hand = kernel_step(x, y, 7, 5.0 * kept, edges=20, masked_cov=False)
    torch.testing.assert_close(scaled, by_hand, rtol=0, atol=2e-3)
    assert not torch.allclose(scaled, kernel_step(x, y, 7, 5.0, edges=20, masked_cov=False))
    full = kernel_step(x, y, 7, 5.0, edges=0, masked_cov=True)  # every gradient kept: no scaling
    torch.testing.assert_close(full, kernel_step(x, y, 7, 5.0, edges=0, masked_cov=False))


def test_tweedie_gradient_variance_of_a_white_gaussian_prior():
    """N(m, s²I): D is linear with J = c I, c = s²/(s² + σ²), so every difference of two pixels has posterior
    variance 2cσ²; Hutchinson's per-pixel estimate is noisy but its mean over the image is exact in expectation."""
    prior = GaussianMixturePrior(torch.full((1, 1, 64, 64), 0.5, dtype=D), std=0.2)
    x = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(0), dtype=D)
    sigma = 0.1
    c = 0.2**2 / (0.2**2 + sigma**2)
    vx, vy = tweedie_gradient_variance(prior, x, sigma, probes=4)
    assert vx.shape == (1, 1, 64, 63) and vy.shape == (1, 1, 63, 64)
    for v in (vx, vy):
        assert abs(float(v.mean()) / (2 * c * sigma**2) - 1) < 0.03


def test_per_pixel_variance_of_a_constant_map_is_the_scalar_trace():
    """A constant variance v on every gradient gives each kernel entry the weight v × (pixels in y's window),
    summed over both directions: the scalar form of the covariance term."""
    x = _blocks(40, 40) + 0.01 * torch.randn(1, 1, 40, 40, generator=torch.Generator().manual_seed(0), dtype=D)
    y = blur(x, _motion_kernel(7), "valid")  # 34 × 34
    v = 2e-3
    gv = (torch.full((1, 1, 40, 39), v, dtype=D), torch.full((1, 1, 39, 40), v, dtype=D))
    per_pixel = kernel_step(x, y, 7, 0.0, edges=0, grad_var=gv)
    scalar = kernel_step(x, y, 7, v * 2 * 34 * 33, edges=0)
    torch.testing.assert_close(per_pixel, scalar, rtol=0, atol=1e-9)
    assert not torch.allclose(per_pixel, kernel_step(x, y, 7, 0.0, edges=0))


def test_rgb_photo_with_a_gray_prior_comes_back_in_colour(monkeypatch):
    x = _blocks(56, 50)
    rgb = torch.cat([x, 0.8 * x.flip(-1), 1 - x], 1)
    h = _motion_kernel(7)
    y = blur(rgb, h, "valid")
    batches = []  # the batch of every denoiser call: one image at a time, the final pass's channels too
    denoise = GaussianPrior._denoise_unchecked
    monkeypatch.setattr(
        GaussianPrior, "_denoise_unchecked", lambda self, z, s: batches.append(z.shape[0]) or denoise(self, z, s)
    )
    res = marginal_em(y, GaussianPrior(), 7, iters=2)
    assert set(batches) == {1}
    assert res.image.shape == (1, 3, 56, 50) and res.kernel.shape == (1, 1, 7, 7)
    # each channel is its own image: the colour differences survive
    assert (res.image[:, 0] - res.image[:, 2]).abs().mean() > 0.2
    gray = marginal_em(
        (y * torch.tensor([0.299, 0.587, 0.114], dtype=y.dtype)[:, None, None]).sum(1, keepdim=True),
        GaussianPrior(),
        7,
        iters=2,
    )
    assert torch.allclose(res.kernel, gray.kernel)  # the kernel is the luminance's
    with pytest.raises(ValueError, match="or 3"):
        marginal_em(torch.rand(1, 2, 40, 40, dtype=torch.float64), GaussianPrior(), 7)


def test_kernel_window_is_the_window_whose_ranked_gradients_sum_highest():
    """Against the sums of every window by brute force, on an image whose edges lie in one corner."""
    y = torch.zeros(1, 1, 40, 52, dtype=D)
    y[..., 22:, 30:] = _blocks(18, 22)
    top, left, h, w = kernel_window(y, 16)
    gx, gy = image_gradient(y)
    score = (gx[..., :-1, :] ** 2 + gy[..., :, :-1] ** 2).sqrt() * edge_usefulness(y, 5)
    sums = torch.tensor([[score[0, 0, i : i + 15, j : j + 15].sum() for j in range(52 - 15)] for i in range(40 - 15)])
    assert (h, w) == (16, 16) and float(sums[top, left]) == pytest.approx(float(sums.max()), rel=1e-12)
    assert top >= 22 - 15 and left >= 30 - 15  # the window overlaps the edges
    assert kernel_window(y, 45)[2:] == (40, 45)  # each side capped at the image's


def test_the_kernel_is_estimated_on_the_window_refitted_to_the_whole_photograph_and_deconvolved_on_it(monkeypatch):
    x = torch.full((1, 1, 70, 110), 0.4, dtype=D)
    x[..., 10:66, 52:106] = _blocks(56, 54)  # the edges lie in the right part
    h_true = _motion_kernel(7)
    y = add_noise(blur(x, h_true, "valid"), 0.01, torch.Generator().manual_seed(0))
    fitted = []  # the blurry image each kernel step fits
    step = marginal.kernel_step
    monkeypatch.setattr(
        marginal, "kernel_step", lambda z, yk, *a, **kw: fitted.append(yk.shape[-2:]) or step(z, yk, *a, **kw)
    )
    res = marginal_em(y, GaussianPrior(), 7, iters=2, window=60, sigma_y=0.01)
    top, left, h, w = res.history["window"]
    assert (h, w) == (60, 60) and left >= 40
    # every kernel step on the window but the last polishing round's, on the whole of y
    assert (60, 60) in fitted[:-1] and all(max(size) <= 60 for size in fitted[:-1])
    assert fitted[-1] == (64, 104)
    alone = marginal_em(y[..., top : top + h, left : left + w], GaussianPrior(), 7, iters=2, sigma_y=0.01)
    assert alone.history["window"] == (0, 0, 60, 60)
    for start in STARTS:  # up to the comparison of the starts, the same EM as on the window alone
        assert torch.equal(res.history["starts"][start]["kernel"], alone.history["starts"][start]["kernel"])
    assert res.image.shape == (1, 1, 70, 110)  # the whole photograph, deconvolved under the final kernel
    blurry = F.pad(y, (3,) * 4, mode="replicate")
    assert float(data_fidelity(res.image, y, res.kernel, "valid").sum()) < 0.5 * float(
        data_fidelity(blurry, y, res.kernel, "valid").sum()
    )
    full = marginal_em(y, GaussianPrior(), 7, iters=2, sigma_y=0.01)  # the default: all of y
    assert full.history["window"] == (0, 0, 64, 104) and full.image.shape == (1, 1, 70, 110)
    # auto on a photograph no larger than its square (at least WINDOW_MIN): all of y, the same estimate
    whole = marginal_em(y, GaussianPrior(), 7, iters=2, window="auto", sigma_y=0.01)
    assert whole.history["window"] == (0, 0, 64, 104)
    assert torch.equal(full.kernel, whole.kernel) and torch.equal(full.image, whole.image)
    monkeypatch.setattr(marginal, "WINDOW_MIN", 0)  # the floor lowered: twelve kernel sizes, 84 pixels
    auto = marginal_em(y, GaussianPrior(), 7, iters=1, window="auto", sigma_y=0.01)
    assert auto.history["window"][2:] == (64, marginal.WINDOW_PER_KERNEL * 7)  # 84 wide, capped at y's 64 high


def test_the_auto_window_is_twelve_kernel_sizes_and_no_smaller_than_its_floor():
    assert marginal.auto_window(31) == marginal.WINDOW_MIN == 372  # the rule measured at the default kernel size
    assert marginal.auto_window(15) == 372  # not 180: worse than the whole image at k = 15 (README)
    assert marginal.auto_window(41) == 492


def test_a_kernel_on_the_border_of_its_support_is_reported():
    """A photograph's noise (σ_y = 0.01): noise-free, the polishing rounds run without the covariance term (joint MAP
    steps, module docstring, "Polishing at the noise level") and the estimate need not stay as wide."""
    x = _blocks(64, 64)
    h = torch.zeros(1, 1, 9, 9, dtype=torch.float64)
    h[0, 0, 4, :] = 1 / 9  # a 9-px motion blur, as wide as the support
    gen = torch.Generator().manual_seed(0)
    y = add_noise(blur(x, h, "valid"), 0.01, gen)
    res = marginal_em(y, GaussianPrior(), 9, init=h)  # warm start: the report, not the estimate
    small = marginal_em(add_noise(blur(x, _motion_kernel(5), "valid"), 0.01, gen), GaussianPrior(), 9)
    assert any("kernel size may be too small" in w for w in res.history["warnings"])
    assert small.history["warnings"] == []


def test_deblur_defaults_to_em_on_the_valid_domain():
    y = blur(_blocks(48, 40), _motion_kernel(7), "valid")
    res = deblur(y, GaussianPrior(), kernel_size=7)
    direct = marginal_em(y, GaussianPrior(), 7)
    assert res.image.shape == (1, 1, 48, 40) and torch.equal(res.kernel, direct.kernel)


@pytest.mark.parametrize("attention", ["local", "global"])
def test_the_em_runs_the_denoiser_with_local_attention_unless_told_otherwise(monkeypatch, attention):
    """With a UNet prior larger than its training size, every denoiser call of the EM (its E-steps and the final
    pass) goes through WindowedAttention by default, none with ``attention="global"``; the processors are the
    defaults again afterwards."""
    from lit_blind.priors import WindowedAttention
    from lit_blind.testing import tiny_unet_prior

    prior, calls = tiny_unet_prior(), []
    windowed = WindowedAttention.__call__
    monkeypatch.setattr(WindowedAttention, "__call__", lambda self, *a, **k: calls.append(1) or windowed(self, *a, **k))
    denoise = marginal._denoise
    monkeypatch.setattr(marginal, "_denoise", lambda *a: calls.append(0) or denoise(*a))
    y = torch.rand(1, 1, 20, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    marginal_em(y, prior, 5, iters=1, inner=1, finest_inner=1, sigma_y=0.01, attention=attention)
    n = calls.count(0)  # denoiser calls; each passes the UNet's four attention blocks
    assert n > 0 and calls.count(1) == (4 * n if attention == "local" else 0)
    assert not any(isinstance(m.processor, WindowedAttention) for m in prior.unet.modules() if hasattr(m, "processor"))


def test_the_em_runs_its_denoiser_calls_at_the_precision_asked(monkeypatch):
    """precision="bf16-mixed": every denoiser call of the EM runs under bfloat16 autocast (and none with "32-true");
    the history records the precision in force, "auto" resolved by the device's native support; the float64 work
    around the network (CG, kernel steps) is not touched, so the kernel stays a float64 kernel on the simplex;
    covariance="tweedie" keeps float32 under "auto" (its finite differences)."""
    from lit_blind import priors
    from lit_blind.testing import tiny_unet_prior

    prior, seen = tiny_unet_prior(), []
    denoise = marginal._denoise
    monkeypatch.setattr(marginal, "_denoise", lambda *a: seen.append(torch.is_autocast_enabled("cpu")) or denoise(*a))
    y = torch.rand(1, 1, 20, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    one = dict(iters=1, inner=1, finest_inner=1, sigma_y=0.01, init="large")
    for precision, autocast in (("32-true", False), ("bf16-mixed", True)):
        seen.clear()
        res = marginal_em(y, prior, 5, precision=precision, **one)
        assert res.history["precision"] == precision and seen and set(seen) == {autocast}
        assert res.kernel.dtype == torch.float64 and abs(float(res.kernel.sum()) - 1) < 1e-12
    monkeypatch.setattr(priors, "native_bf16", lambda device: True)
    assert marginal_em(y, prior, 5, precision="auto", **one).history["precision"] == "bf16-mixed"
    tweedie = marginal_em(y, prior, 5, precision="auto", covariance="tweedie", **one)
    assert tweedie.history["precision"] == "32-true"


def test_flanks_keep_the_neighbours_of_the_kept_gradients(monkeypatch):
    """kernel_step(flanks=f) keeps exactly the pixels within Chebyshev distance f of the ``edges`` · 4k selected ones
    (scipy's binary dilation as the reference), the covariance term scaled by the grown count over the selected
    one; on the sharp image the flanks bring the kernel closer to the truth, the selection's bias of the README
    ("What the yardstick allows")."""
    from scipy import ndimage

    x = _blocks(80, 72)
    h_true = _motion_kernel(9)
    y = blur(x, h_true, "valid")
    kept, regs = [], []

    def count(gs, *args, **kw):  # the kept pixels, from the masked gradients the normal equations receive
        kept.append((gs[0][..., :-1, :] != 0) | (gs[1][..., :, :-1] != 0))
        return torch.eye(81, dtype=D), torch.ones(81, dtype=D)

    def weight(M, b, reg):
        regs.append(reg)
        return torch.ones(81, dtype=D)

    with monkeypatch.context() as m:
        m.setattr(marginal, "kernel_normal_equations", count)
        m.setattr(marginal, "solve_kernel", weight)
        for f in (0, 1, 2):
            kernel_step(x, y, 9, 1.0, edges=2, flanks=f)
        for f in (0, 1):  # the kept-pixel form counts the grown set itself
            kernel_step(x, y, 9, 1.0, edges=2, masked_cov=True, flanks=f)
    gx, gy = image_gradient(x)
    moving = ((gx[..., :-1, :] != 0) | (gy[..., :, :-1] != 0))[0, 0].numpy()  # a kept pixel shows where ∇x ≠ 0
    base = kept[0][0, 0].numpy()
    assert base.sum() == 2 * 4 * 9  # the selection itself: the largest gradients, none zero
    for f, mask in zip((1, 2), kept[1:3], strict=True):
        want = ndimage.binary_dilation(base, np.ones((2 * f + 1,) * 2, dtype=bool))
        np.testing.assert_array_equal(mask[0, 0].numpy(), want & moving)
        assert mask.sum() > base.sum()
    # the full trace grows with the kept pixels, as the kept-pixel form's does: the same weight per kept pixel
    n0, n1, n2 = (float(F.max_pool2d(kept[0].to(D), 2 * f + 1, stride=1, padding=f).sum()) for f in (0, 1, 2))
    assert regs[:3] == [pytest.approx(1.0), pytest.approx(n1 / n0), pytest.approx(n2 / n0)]
    assert regs[4] / regs[3] == pytest.approx(n1 / n0)
    errors = [kernel_error(kernel_step(x, y, 9, 1e-6, edges=2, flanks=f), h_true) for f in (0, 1)]
    assert errors[1] < 0.8 * errors[0]
    with pytest.raises(ValueError, match="polish_flanks must be a non-negative integer, got -1"):
        marginal_em(y, GaussianPrior(), 9, polish_flanks=-1)


def test_marginal_em_measures_the_repetition_on_the_polishing_images(monkeypatch):
    """One map per polishing round, on the final pass's image (on y's grid) that the round's kernel step fits, which
    gets the map above ``repetition``; the pyramid's kernel steps get none; ``repetition=0`` measures nothing."""
    y = blur(_blocks(40, 40), gaussian_kernel(7, 1.0).to(D), "valid")
    maps, steps = [], []
    measure, step = marginal.edge_repetition, marginal.kernel_step

    def fit(z, y, k, *a, exclude=None, **kw):
        steps.append((z, k, exclude))
        return step(z, y, k, *a, exclude=exclude, **kw)

    monkeypatch.setattr(marginal, "edge_repetition", lambda x, k: maps.append((x, k)) or measure(x, k))
    monkeypatch.setattr(marginal, "kernel_step", fit)
    res = marginal_em(y, GaussianPrior(), 7, iters=2, min_kernel=5, polish=3, compare_after=2)
    assert [k for _, k in pyramid(7, 5)] == [5, 5, 7]
    assert [k for _, k, _ in steps] == [5, 5, 5, 5, 7, 7, 7, 7] * 2 + [7]
    polishing = [s for i, s in enumerate(steps) if i % 8 >= 6 or i == 16]  # two rounds per start, the kept one's third
    assert all(e is None for i, (_, _, e) in enumerate(steps) if i % 8 < 6 and i < 16)
    assert len(maps) == len(polishing) == 5 and len(res.history["polish"]) == 3
    for (x, k), (z, _, e) in zip(maps, polishing, strict=True):
        assert k == 7 and x.shape == y.shape and e.dtype == torch.bool
        torch.testing.assert_close(x, z[..., 3:-3, 3:-3])  # the fitted image, on y's grid
        torch.testing.assert_close(e, measure(x, 7) > marginal.REPETITION)
    maps.clear()
    marginal_em(y, GaussianPrior(), 7, iters=2, min_kernel=5, polish=3, repetition=0)
    assert maps == []
    with pytest.raises(ValueError, match=r"repetition must be in \[0, 1\) \(a correlation; 0: off\), got 1.0"):
        marginal_em(y, GaussianPrior(), 7, repetition=1.0)
    with pytest.raises(ValueError, match="repetition must be a finite number >= 0, got -0.1"):
        marginal_em(y, GaussianPrior(), 7, repetition=-0.1)
