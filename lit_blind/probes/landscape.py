"""Landscape probes (paper §2.2, §4; Figs. 1–4, 9, 10).

* :class:`CriticalPointProbe` — gradient descent to a critical point from each image; rows with the
  relative distance ‖x − x̄‖/‖x̄‖, q(x) − q(x̄), ‖∇q(x̄)‖ and q along iterations; the points are saved.
* :class:`HessianSpectrumProbe` — singular values of σ_ε²∇²q at each image (or at its critical point) and
  the intrinsic dimension #{σ_i < threshold}.
* :class:`ProfileProbe` — noise-free (``sigma_ys`` empty) or noisy posterior profiles ℓ(θ) per family.

Images are grouped by the prefix of their id (``noise_*``, ``mnist_*``; others: ``images``) in the summaries.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import Tensor

from lit_blind._checks import check_choice
from lit_blind.kernels import KernelFamily, families_by_name
from lit_blind.landscape import find_critical_point, hessian_spectrum, noiseless_profile, noisy_profile
from lit_blind.likelihood import DIVERGENCES, PotentialResult, potential, rademacher
from lit_blind.physics import add_noise, blur
from lit_blind.priors import Prior
from lit_blind.probes.base import Probe, image_generator


def group_of(image_id: str) -> str:
    head = image_id.split("_")[0]
    return head if head in ("noise", "mnist") else "images"


class _Potential:
    """q on a batch with probes shared by the batch (common random numbers), reproducible per image."""

    def __init__(
        self,
        prior: Prior,
        image_id: str,
        seed: int,
        solver: str,
        rtol: float,
        steps: int,
        exact: bool,
        n_probes: int = 1,
        divergence: str = "hutchinson",
    ) -> None:
        self.prior, self.exact, self.n_probes = prior, exact, int(n_probes)
        self.kw = dict(solver=solver, rtol=rtol, atol=rtol, steps=steps, divergence=divergence)
        self.gen_args = (seed, image_id)

    def __call__(self, x: Tensor) -> Tensor:
        return self.result(x).value

    def result(self, x: Tensor) -> PotentialResult:
        """The potential with its standard error over the probes (None for one probe or an exact prior)."""
        if self.exact and self.prior.has_log_prob:
            v = -self.prior.log_prob(x, self.prior.sigma_min).double()
            return PotentialResult(v, torch.zeros_like(v), None, v[:, None], self.prior.sigma_min)
        u = rademacher((self.n_probes, 1, *x.shape[1:]), image_generator(*self.gen_args), device=x.device)
        return potential(self.prior, x, probes=u, **self.kw)


class CriticalPointProbe(Probe):
    """§2.2, Figs. 1–3: x̄ = lim of x ← x − η(x − D(x, σ_ε)) from each image."""

    key = ("image_id",)

    def __init__(
        self,
        eta: float = 0.02,
        steps: int = 10_000,
        record_every: int = 1000,
        solver: str = "dopri5",
        rtol: float = 1e-5,
        ode_steps: int = 32,
        exact: bool = True,
        seed: int = 0,
        save_points: bool = True,
        output_dir: str | None = None,
    ) -> None:
        self.eta, self.steps, self.record_every = eta, int(steps), int(record_every)
        self.solver, self.rtol, self.ode_steps, self.exact, self.seed = solver, rtol, ode_steps, exact, seed
        self.save_points, self.output_dir = save_points, output_dir  # None: the module's output_dir

    def run(self, prior: Prior, x: Tensor, image_id: str, todo: list[dict], item: dict | None = None) -> Iterator[dict]:
        q = _Potential(prior, image_id, self.seed, self.solver, self.rtol, self.ode_steps, self.exact)
        x = x.to(torch.float64)
        res = find_critical_point(
            prior, x, eta=self.eta, steps=self.steps, record_every=self.record_every, potential_fn=q
        )
        pots = [float(p[0]) for p in res.potentials]
        row = {
            "image_id": image_id,
            "group": group_of(image_id),
            "rel_distance": ((x - res.x).norm() / res.x.norm()).item(),
            "q_start": pots[0],
            "q_critical": pots[-1],
            "dq": pots[0] - pots[-1],
            "grad_norm": res.grad_norm.item(),
            "steps": res.steps,
            "potentials": pots,
        }
        if self.save_points:
            folder = self._folder()
            folder.mkdir(parents=True, exist_ok=True)
            torch.save(
                {"image_id": image_id, "start": x.cpu(), "critical_point": res.x.cpu()}, folder / f"{image_id}.pt"
            )
        yield row

    def _folder(self) -> Path:
        if self.output_dir is None:
            raise ValueError("output_dir must be set before run (PriorEvaluationModule sets it), got None")
        return Path(self.output_dir) / "critical_points"

    def summarize(self, rows: list[dict]) -> dict:
        out: dict = {}
        for g in sorted({r["group"] for r in rows if "rel_distance" in r}):
            rs = [r for r in rows if r.get("group") == g and "rel_distance" in r]
            n = len(rs)
            out[g] = {
                "points": n,
                "mean_rel_distance": sum(r["rel_distance"] for r in rs) / n,
                "mean_dq": sum(r["dq"] for r in rs) / n,
                "max_grad_norm": max(r["grad_norm"] for r in rs),
            }
        return {"groups": out}

    def figures(self, rows: list[dict]) -> dict:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = [r for r in rows if "rel_distance" in r]
        if not rows:
            return {}
        groups = sorted({r["group"] for r in rows})
        fig, (a0, a1, a2) = plt.subplots(1, 3, figsize=(13, 3.8))
        a0.boxplot([[r["rel_distance"] for r in rows if r["group"] == g] for g in groups], tick_labels=groups)
        a0.set_title("‖x − x̄‖ / ‖x̄‖")
        a1.boxplot([[r["dq"] for r in rows if r["group"] == g] for g in groups], tick_labels=groups)
        a1.set_title("q(x) − q(x̄)  [nats]")
        for r in rows:
            a2.plot(r["steps"], r["potentials"], alpha=0.6)
        a2.set(xlabel="iteration", ylabel="q [nats]", title="potential along the descent")
        fig.tight_layout()
        return {"critical_points": fig, **self._grid(rows)}

    def _grid(self, rows: list[dict], n: int = 12) -> dict:
        """Fig. 1: starts (top) and the critical points reached (bottom) of the first ``n`` saved points."""
        import matplotlib.pyplot as plt

        folder = self._folder() if self.output_dir is not None else None
        files = [folder / f"{r['image_id']}.pt" for r in rows[:n]] if folder is not None else []
        files = [f for f in files if f.is_file()]
        if not files:
            return {}
        fig, axes = plt.subplots(2, len(files), figsize=(1.2 * len(files), 2.7), squeeze=False)
        for j, file in enumerate(files):
            saved = torch.load(file, weights_only=True)
            for i, key in enumerate(("start", "critical_point")):
                img = saved[key][0].float().clamp(0, 1)
                axes[i, j].imshow(img.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)
                axes[i, j].set_xticks([]), axes[i, j].set_yticks([])
            axes[0, j].set_title(saved["image_id"].replace("mnist_test_", "mnist "), fontsize=7)
        axes[0, 0].set_ylabel("start"), axes[1, 0].set_ylabel("critical point")
        fig.tight_layout()
        return {"critical_points_grid": fig}


class HessianSpectrumProbe(Probe):
    """Fig. 4: spectrum of σ_ε²∇²q and intrinsic dimension at each image (after ``descent_steps`` of
    critical-point descent, 0 = at the image itself), or at the critical point that
    :class:`CriticalPointProbe` saved for the image in ``points`` (its ``critical_points/`` folder)."""

    key = ("image_id",)

    def __init__(
        self,
        method: str = "dense",
        k: int = 32,
        threshold: float = 1e-5,
        descent_steps: int = 0,
        eta: float = 0.02,
        points: str | None = None,
    ) -> None:
        if points is not None and descent_steps:
            raise ValueError(f"give points or descent_steps, not both, got {points!r} and {descent_steps}")
        if points is not None and not Path(points).is_dir():
            raise ValueError(f"points must be a folder of critical points (*.pt), got {points!r}")
        self.method, self.k, self.threshold = method, int(k), float(threshold)
        self.descent_steps, self.eta, self.points = int(descent_steps), eta, points

    def run(self, prior: Prior, x: Tensor, image_id: str, todo: list[dict], item: dict | None = None) -> Iterator[dict]:
        x = x.to(torch.float64)
        if self.points is not None:
            file = Path(self.points) / f"{image_id}.pt"
            if not file.is_file():
                raise ValueError(f"points has no critical point for image {image_id!r}: {file} is missing")
            x = torch.load(file, weights_only=True)["critical_point"].to(x.device, torch.float64)
        if self.descent_steps:
            x = find_critical_point(prior, x, eta=self.eta, steps=self.descent_steps).x
        res = hessian_spectrum(prior, x, method=self.method, k=self.k, threshold=self.threshold)
        row = {
            "image_id": image_id,
            "group": group_of(image_id),
            "dimension": res.dimension,
            "exact": res.exact,
            "products": res.products,
            "singular_values": res.singular_values.tolist(),
        }
        yield row

    def summarize(self, rows: list[dict]) -> dict:
        rows = [r for r in rows if "dimension" in r]
        if not rows:
            return {}
        n = min(len(r["singular_values"]) for r in rows)
        mean = torch.tensor([r["singular_values"][:n] for r in rows], dtype=torch.float64).mean(0)
        return {
            "threshold": self.threshold,
            "dimension_per_point": {r["image_id"]: r["dimension"] for r in rows},
            "dimension_of_mean_spectrum": int((mean < self.threshold).sum()),
            "mean_products": sum(r["products"] for r in rows) / len(rows),
        }

    def figures(self, rows: list[dict]) -> dict:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = [r for r in rows if "singular_values" in r]
        if not rows:
            return {}
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        for r in rows:
            ax.semilogy(r["singular_values"], alpha=0.6)
        ax.axhline(self.threshold, color="k", ls="--", lw=0.8)
        ax.set(xlabel="index (ascending)", ylabel="singular value of σ²∇²q", title="Hessian spectra")
        fig.tight_layout()
        return {"hessian_spectra": fig}


class ProfileProbe(Probe):
    """§4, Figs. 9–10: ℓ(θ) around θ̄ for each family; noise-free when ``sigma_ys`` is empty, else the noisy
    profile for each σ_y (momentum descent, eq. 15). ``descent_steps`` > 0 first moves x̄ to a critical point.
    ``families``: names or :class:`~lit_blind.kernels.KernelFamily` instances (YAML ``class_path``) at
    ``kernel_size``. ``n_probes`` Hutchinson probes per potential (shared by every θ): on a noisy profile
    their standard error times σ_y² is the row's ``stderr`` and the figure's error bars; ``divergence`` as in
    :func:`~lit_blind.likelihood.potential`."""

    key = ("image_id", "family", "sigma_y")
    selects = ("families", "sigma_ys")

    def __init__(
        self,
        families: Sequence[str | KernelFamily] = ("gaussian", "motion", "airy", "defocus"),
        thetas: Sequence[float] = tuple(0.5 * i for i in range(11)),
        theta_bar: float = 2.5,
        kernel_size: int = 31,
        sigma_ys: Sequence[float] = (),
        momentum_steps: int = 200,
        step: float = 0.5,
        momentum: float = 0.9,
        descent_steps: int = 0,
        eta: float = 0.02,
        solver: str = "dopri5",
        rtol: float = 1e-5,
        ode_steps: int = 32,
        exact: bool = True,
        seed: int = 0,
        n_probes: int = 1,
        divergence: str = "hutchinson",
    ) -> None:
        if int(n_probes) != n_probes or n_probes < 1:
            raise ValueError(f"n_probes must be a positive integer, got {n_probes!r}")
        check_choice("divergence", divergence, DIVERGENCES)
        self.families = families_by_name(families, kernel_size)
        self.n_probes, self.divergence = int(n_probes), divergence
        self.thetas, self.theta_bar = [float(t) for t in thetas], float(theta_bar)
        self.sigma_ys = [float(s) for s in sigma_ys]
        self.momentum_steps, self.step, self.momentum = int(momentum_steps), step, momentum
        self.descent_steps, self.eta = int(descent_steps), eta
        self.solver, self.rtol, self.ode_steps, self.exact, self.seed = solver, rtol, ode_steps, exact, seed

    def row_keys(self, image_id: str) -> list[dict]:
        return [
            {"image_id": image_id, "family": name, "sigma_y": s}
            for name in self.families
            for s in self.sigma_ys or [0.0]
        ]

    def run(self, prior: Prior, x: Tensor, image_id: str, todo: list[dict], item: dict | None = None) -> Iterator[dict]:
        x = x.to(torch.float64)
        if self.descent_steps:
            x = find_critical_point(prior, x, eta=self.eta, steps=self.descent_steps).x
        q = _Potential(
            prior, image_id, self.seed, self.solver, self.rtol, self.ode_steps, self.exact,
            self.n_probes, self.divergence,
        )  # fmt: skip
        for key in todo:
            fam, sigma_y = self.families[key["family"]], key["sigma_y"]
            if sigma_y == 0.0:
                prof = noiseless_profile(q, x, fam, self.thetas, self.theta_bar)
            else:
                h = fam(torch.tensor([[self.theta_bar]], dtype=torch.float64))
                y = add_noise(blur(x, h), sigma_y, image_generator(self.seed, image_id))
                prof = noisy_profile(
                    prior, q.result, y, fam, self.thetas, self.theta_bar, sigma_y=sigma_y,
                    step=self.step, momentum=self.momentum, iterations=self.momentum_steps,
                )  # fmt: skip
            row = key | {
                "thetas": prof.thetas,
                "values": prof.values,
                "lambda": prof.lam,
                "argmin": prof.argmin,
                "local_min_near_truth": prof.local_min_near_truth,
                "depth": prof.depth,
                "stderr": prof.stderr,
            }
            yield row

    def summarize(self, rows: list[dict]) -> dict:
        return {
            "theta_bar": self.theta_bar,
            "cases": [
                {
                    k: r[k]
                    for k in ("image_id", "family", "sigma_y", "argmin", "local_min_near_truth", "depth", "lambda")
                }
                for r in rows
                if "values" in r
            ],
        }

    def figures(self, rows: list[dict]) -> dict:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.lines import Line2D

        rows = [r for r in rows if "values" in r]
        if not rows:
            return {}
        names = list(self.families)
        rows = sorted(rows, key=lambda r: (r["image_id"], r["sigma_y"]))

        def label_of(r: dict) -> str:
            return f"{r['image_id']} σy={r['sigma_y']}"

        # one colour per (image, σ_y) in every panel, so that the first panel's legend holds for all
        colours = {label: f"C{i % 10}" for i, label in enumerate(dict.fromkeys(map(label_of, rows)))}
        fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.4), squeeze=False)
        for ax, name in zip(axes[0], names, strict=True):
            for r in rows:
                if r["family"] == name:
                    v = torch.tensor(r["values"])
                    label = label_of(r)
                    ax.errorbar(
                        r["thetas"], v - v.min(), yerr=r.get("stderr"), capsize=2, label=label, color=colours[label]
                    )
            ax.axvline(self.theta_bar, color="k", ls="--", lw=0.8)
            ax.set(title=name, xlabel="θ", ylabel="ℓ(θ) − min")
        axes[0][0].legend(handles=[Line2D([], [], color=c, label=label) for label, c in colours.items()], fontsize=6)
        fig.tight_layout()
        return {"profiles": fig}
