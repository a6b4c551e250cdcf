import json

import pytest
import torch

from lit_blind.kernels import family
from lit_blind.landscape import (
    check_local_minimizer,
    find_critical_point,
    hessian_spectrum,
    noiseless_profile,
    noisy_profile,
)
from lit_blind.physics import add_noise, blur
from lit_blind.priors import GaussianMixturePrior, GaussianPrior, Prior

D = torch.float64


def test_dense_spectrum_equals_closed_form(gen):
    prior = GaussianPrior()
    x = torch.rand(1, 1, 7, 5, generator=gen, dtype=D)
    res = hessian_spectrum(prior, x, method="dense")
    exact = (0.01**2 / (prior.spectrum(7, 5) + 0.01**2)).flatten().sort().values
    torch.testing.assert_close(res.singular_values, exact, rtol=1e-10, atol=1e-14)
    assert res.products == 35


def test_dense_spectrum_of_mixture_uses_autograd_path(gen):
    """The mixture's exact hvp and the generic autograd products (JVP as VJP of VJP) agree."""
    from lit_blind.landscape import _Operator

    means = torch.rand(3, 1, 4, 5, generator=gen, dtype=D)
    prior = GaussianMixturePrior(means, std=0.05)
    x = means[:1] + 0.03 * torch.randn(1, 1, 4, 5, generator=gen, dtype=D)
    op = _Operator(prior, x, 0.01)
    v = torch.randn(3, 20, generator=gen, dtype=D)
    exact = op.matmat(v)
    op.symmetric = False
    torch.testing.assert_close(op.matmat(v), exact)
    torch.testing.assert_close(op.rmatmat(v), exact)  # A is symmetric for an exact prior


def test_dense_matrix_by_batched_vjps_equals_column_products(gen, tiny_unet_prior):
    """The dense mode's rows J_Dᵀe_i (one forward, vmapped backward) equal the columns A e_i of ``matmat``
    (double backward per direction), on the mixture and on a float32 UNet."""
    from lit_blind.landscape import _Operator

    means = torch.rand(3, 1, 4, 5, generator=gen, dtype=D)
    mixture = GaussianMixturePrior(means, std=0.05)
    for prior, x in (
        (mixture, means[:1] + 0.03 * torch.randn(1, 1, 4, 5, generator=gen, dtype=D)),
        (tiny_unet_prior, torch.rand(1, 1, 8, 8, generator=gen, dtype=D)),
    ):
        op = _Operator(prior, x, 0.05)
        op.symmetric = False
        eye = torch.eye(op.d, dtype=D)
        columns = op.matmat(eye).T
        torch.testing.assert_close(op.dense(chunk=7), columns, rtol=0, atol=1e-5)


class _ManifoldPrior(Prior):
    """N(0, s²I + U diag(b) Uᵀ): m directions (the "manifold") with huge variance b, exact hvp. The Hessian
    σ²∇²q has m eigenvalues σ²/(s² + b + σ²) and d − m equal to σ²/(s² + σ²): a known count, a clear gap."""

    sigma_range_strict = False
    has_hvp = True

    def __init__(self, u, s=0.1, b=1e3):
        super().__init__()
        self.u, self.s2, self.b = u, s**2, b
        self.channels, self.image_size = 1, (16, 16)

    def hvp(self, x, v, sigma):
        var = self.s2 + float(sigma) ** 2
        coef = (v.flatten(1) @ self.u) * (self.b / (var * (var + self.b)))
        return v / var - (coef @ self.u.T).reshape(v.shape)

    def _score(self, x, sigma):
        return -self.hvp(x, x, sigma)


def test_block_method_counts_small_singular_values_exactly(gen):
    m = 5
    u, _ = torch.linalg.qr(torch.randn(256, m, generator=gen, dtype=D))
    prior = _ManifoldPrior(u)
    x = torch.rand(1, 1, 16, 16, generator=gen, dtype=D)
    res = hessian_spectrum(prior, x, method="block", k=m + 3, threshold=1e-5)
    assert res.dimension == m and res.exact
    assert res.products < 0.5 * 256
    dense = hessian_spectrum(prior, x, method="dense", threshold=1e-5)
    assert dense.dimension == m
    torch.testing.assert_close(res.singular_values, dense.singular_values[: m + 3], rtol=1e-5, atol=1e-9)


def test_block_method_on_a_float32_network_runs_a_float64_copy(gen, tiny_unet_prior):
    """The Gram operator squares small singular values: the block mode evaluates a float64 copy of a
    float32 network (the prior itself is left as it is) and matches the dense spectrum's low end."""
    x = torch.rand(1, 1, 8, 8, generator=gen, dtype=D)
    dense = hessian_spectrum(tiny_unet_prior, x, sigma_eps=0.1)
    block = hessian_spectrum(tiny_unet_prior, x, sigma_eps=0.1, method="block", k=4, maxiter=200)
    assert next(tiny_unet_prior.parameters()).dtype == torch.float32
    torch.testing.assert_close(block.singular_values, dense.singular_values[:4], rtol=1e-4, atol=1e-6)


def test_mixture_mean_is_found_and_certified_strict_local_minimizer(gen):
    means = torch.rand(3, 1, 8, 8, generator=gen, dtype=D)
    prior = GaussianMixturePrior(means, std=0.01)
    x0 = means[1:2] + 0.02 * torch.randn(1, 1, 8, 8, generator=gen, dtype=D)
    res = find_critical_point(prior, x0, steps=3000, record_every=1000, potential_fn=lambda x: -prior.log_prob(x, 0.01))
    assert (res.x - means[1:2]).abs().max() < 1e-6 and res.grad_norm.item() < 1e-3
    assert res.steps == [0, 1000, 2000, 3000] and res.potentials[-1] < res.potentials[0]
    out = check_local_minimizer(prior, res.x, torch.tensor([[1.0]]), family("gaussian", size=5))
    assert out["strict_local_minimizer"] and out["min_eig_hessian_l"] > 0 and out["cond11_min_sv_J"] > 0


def test_conditions_fail_by_construction():
    """A constant image: every sum-one kernel leaves it unchanged, so J(θ̄) = 0 and (11) fails."""
    c = torch.full((1, 1, 8, 8), 0.5, dtype=D)
    prior = GaussianMixturePrior(c, std=0.01)
    out = check_local_minimizer(prior, c, torch.tensor([[1.0]]), family("gaussian", size=5))
    assert out["cond11_min_sv_J"] < 1e-12 and not out["strict_local_minimizer"]


def test_noiseless_profile_of_gaussian_prior_is_minimal_at_the_dirac(gen):
    prior = GaussianPrior()
    x = torch.rand(1, 1, 24, 24, generator=gen, dtype=D)
    thetas = [0.5 * i for i in range(11)]
    for name in ("gaussian", "motion", "defocus"):
        prof = noiseless_profile(lambda z: -prior.log_prob(z, 0.01), x, family(name, size=15), thetas, theta_bar=2.0)
        assert prof.argmin == 0.0, (name, prof.values)
        assert prof.lam is not None and prof.lam > 0


def test_noisy_profile_runs_and_prefers_small_kernels_at_high_noise(gen):
    prior = GaussianPrior()
    x = torch.rand(1, 1, 24, 24, generator=gen, dtype=D)
    fam = family("gaussian", size=15)
    y = add_noise(blur(x, fam(torch.tensor([[2.0]], dtype=D))), 0.2, gen)
    prof = noisy_profile(
        prior, lambda z: -prior.log_prob(z, 0.01), y, fam, [0.0, 1.0, 2.0, 3.0], 2.0, sigma_y=0.2, iterations=50
    )
    assert len(prof.values) == 4 and all(torch.isfinite(torch.tensor(prof.values)))
    assert prof.argmin == 0.0  # Theorem 5: at high noise the no-blur solution wins


def test_noisy_profile_error_bars_are_sigma_y_squared_times_the_potentials(gen):
    """A PotentialResult from potential_fn: the profile keeps the standard error of the start it keeps, times σ_y²."""
    from lit_blind.likelihood import PotentialResult

    prior = GaussianPrior()
    x = torch.rand(1, 1, 24, 24, generator=gen, dtype=D)
    fam = family("gaussian", size=15)
    y = add_noise(blur(x, fam(torch.tensor([[2.0]], dtype=D))), 0.1, gen)

    def q(z):
        v = -prior.log_prob(z, 0.01).double()
        return PotentialResult(v, torch.zeros_like(v), torch.full_like(v, 3.0), v[:, None], 0.01)

    args = (y, fam, [0.0, 1.0, 2.0], 2.0)
    prof = noisy_profile(prior, q, *args, sigma_y=0.1, iterations=5)
    plain = noisy_profile(prior, lambda z: q(z).value, *args, sigma_y=0.1, iterations=5)
    assert prof.values == plain.values and plain.stderr is None
    torch.testing.assert_close(torch.tensor(prof.stderr, dtype=D), torch.full((3,), 0.1**2 * 3.0, dtype=D))


def test_profile_probe_reports_the_probe_spread(tmp_path):
    """n_probes Hutchinson probes: every noisy-profile row carries a positive, finite standard error per θ."""
    _, out = _landscape_run(
        tmp_path,
        "profile_noisy",
        "--model.init_args.prior",
        "{class_path: lit_blind.priors.GaussianPrior}",
        "--model.init_args.probe.init_args.exact",
        "false",
        "--model.init_args.probe.init_args.n_probes",
        "3",
        "--model.init_args.probe.init_args.families",
        "[gaussian]",
        "--model.init_args.probe.init_args.thetas",
        "[1.5, 2.5]",
        "--model.init_args.probe.init_args.kernel_size",
        "7",
        "--model.init_args.probe.init_args.sigma_ys",
        "[0.05]",
        "--model.init_args.probe.init_args.momentum_steps",
        "3",
        "--data.init_args.noise",
        "0",
    )
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and len(rows[0]["stderr"]) == 2
    assert all(0 < s < float("inf") for s in rows[0]["stderr"])


def _landscape_run(tmp_path, config, *extra):
    from pathlib import Path

    from lit_blind.cli import run_lightning_cli

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / config
    run_lightning_cli(
        [
            "test",
            "--config",
            str(root / "configs/experiments" / f"{config}.yaml"),
            "--config",
            str(root / "configs/trainer/cpu_smoke.yaml"),
            "--model.init_args.output_dir",
            str(out),
            "--model.init_args.prior",
            '{"class_path": "lit_blind.priors.GaussianPrior"}',
            "--data",
            '{"class_path": "lit_blind.data.ImageDataModule", "init_args": {"embedded": ["camera"], "mnist": null, "limit": null, "scale": 32, "size": 12, "noise": 1, "noise_size": 12}}',
            *extra,
        ]
    )
    return json.loads((out / "summary.json").read_text()), out


def test_critical_points_config_smoke(tmp_path):
    summary, out = _landscape_run(
        tmp_path,
        "critical_points",
        "--model.init_args.probe.init_args.steps",
        "200",
        "--model.init_args.probe.init_args.exact",
        "true",
    )
    assert set(summary["groups"]) == {"images", "noise"}
    assert all(g["mean_dq"] > 0 for g in summary["groups"].values())  # descent lowers q
    assert (
        len(list((out / "critical_points").glob("*.pt"))) == 2
        and (out / "figures" / "critical_points.png").is_file()
        and (out / "figures" / "critical_points_grid.png").is_file()
    )


def test_hessian_spectrum_config_smoke(tmp_path):
    summary, _ = _landscape_run(tmp_path, "hessian_spectrum", "--model.init_args.probe.init_args.descent_steps", "0")
    assert set(summary["dimension_per_point"]) == {"camera", "noise_000"} and summary["mean_products"] == 144


def test_profile_configs_smoke(tmp_path):
    small = [
        "--model.init_args.probe.init_args.kernel_size",
        "5",
        "--model.init_args.probe.init_args.families",
        "[gaussian]",
    ]
    small += [
        "--model.init_args.probe.init_args.thetas",
        "[0.0, 1.0, 2.0]",
        "--model.init_args.probe.init_args.theta_bar",
        "1.0",
    ]
    small += ["--model.init_args.probe.init_args.exact", "true"]
    summary, _ = _landscape_run(tmp_path, "profile_noiseless", *small)
    assert all(c["argmin"] == 0.0 for c in summary["cases"])  # Theorem 1 under the Gaussian prior
    summary, _ = _landscape_run(
        tmp_path, "profile_noisy", *small, "--model.init_args.probe.init_args.momentum_steps", "20"
    )
    assert len(summary["cases"]) == 2 * 3


def test_hessian_probe_reads_saved_critical_points(tmp_path, gen):
    from lit_blind.probes import HessianSpectrumProbe

    means = torch.rand(3, 1, 4, 4, generator=gen, dtype=D)
    prior = GaussianMixturePrior(means, std=0.05)
    point = means[1:2] + 0.01 * torch.randn(1, 1, 4, 4, generator=gen, dtype=D)
    torch.save({"image_id": "img", "critical_point": point}, tmp_path / "img.pt")
    probe = HessianSpectrumProbe(points=str(tmp_path))
    (row,) = probe.run(prior, torch.zeros(1, 1, 4, 4, dtype=D), "img", probe.row_keys("img"))
    expected = hessian_spectrum(prior, point).singular_values
    torch.testing.assert_close(torch.tensor(row["singular_values"], dtype=D), expected)
    with pytest.raises(ValueError, match="no critical point for image 'other'"):
        list(probe.run(prior, point, "other", probe.row_keys("other")))
    with pytest.raises(ValueError, match="points must be a folder"):
        HessianSpectrumProbe(points=str(tmp_path / "missing"))


def test_profile_figure_gives_each_image_and_noise_level_one_colour_in_every_panel():
    """Rows arrive in completion order, which differs between families: the colour of a curve must follow its
    (image, σ_y), not its position, or the one legend misreads the other panels."""
    from lit_blind.probes import ProfileProbe

    def row(image, family, s):
        return {"image_id": image, "family": family, "sigma_y": s, "thetas": [0.0, 1.0], "values": [1.0, 0.0]}

    rows = [row("moon", "gaussian", 0.1), row("camera", "gaussian", 0.01), row("camera", "motion", 0.01)]
    rows.append(row("moon", "motion", 0.1))
    fig = ProfileProbe(families=("gaussian", "motion")).figures(rows)["profiles"]
    per_panel = [{bar.get_label(): bar.lines[0].get_color() for bar in ax.containers} for ax in fig.axes]
    assert per_panel[0] == per_panel[1] and len(set(per_panel[0].values())) == 2
