"""Likelihood probes (paper §2.3, Table 1).

* :class:`BlurLikelihoodProbe` — Figs. 6–8: q(h_θ ⋆ x) for 1-D blur families on a θ grid.
* :class:`TimingProbe` — Table 1: seconds per model evaluation and per potential evaluation.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from lit_blind._checks import check_choice
from lit_blind.kernels import KernelFamily, families_by_name
from lit_blind.likelihood import SOLVERS, NonFiniteScoreError, potential, rademacher
from lit_blind.physics import blur
from lit_blind.priors import Prior
from lit_blind.probes.base import Probe, hardware, image_generator, synchronize


class BlurLikelihoodProbe(Probe):
    r"""q(h_θ ⋆ x) for each family and θ (paper §2.3): does blur make images more likely?

    All (family, θ) inputs of one image share the same Hutchinson probes (common random numbers), so the
    curve θ ↦ q(h_θ ⋆ x) − q(x) carries far less noise than each value. θ = 0 (h₀ = δ) is evaluated once
    per image and written for every family. ``families``: names or :class:`~lit_blind.kernels.KernelFamily`
    instances (YAML ``class_path``), built or checked at ``kernel_size``. Solver options as :func:`~lit_blind.likelihood.potential`
    (``divergence``: ``hutchinson`` or ``hutchinson-fd``).

    Rows: ``{image_id, family, theta, potential, stderr, nfe, seconds, sigma_eps}``.
    """

    key = ("image_id", "family", "theta")
    selects = ("families", "thetas")

    def __init__(
        self,
        families: Sequence[str | KernelFamily] = ("gaussian", "motion", "airy", "defocus"),
        thetas: Sequence[float] = tuple(0.5 * i for i in range(11)),
        kernel_size: int = 31,
        boundary: str = "circular",
        solver: str = "dopri5",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        steps: int = 32,
        divergence: str = "hutchinson",
        n_probes: int = 1,
        sigma_eps: float | None = None,
        batch_size: int | None = None,
        seed: int = 0,
    ) -> None:
        self.families = families_by_name(families, kernel_size)
        self.thetas = [float(t) for t in thetas]
        if not self.thetas or sorted(self.thetas) != self.thetas:
            raise ValueError(f"thetas must be a non-empty increasing list, got {list(thetas)}")
        for fam in self.families.values():  # range errors now, not after hours of work
            fam.check_theta(torch.tensor(self.thetas, dtype=torch.float64)[:, None])
        self.boundary = check_choice("boundary", boundary, ("circular",))  # the paper's setting (§2.3)
        check_choice("solver", solver, SOLVERS)
        check_choice("divergence", divergence, ("hutchinson", "hutchinson-fd"))
        self.solver_kw = dict(
            solver=solver, rtol=rtol, atol=atol, steps=steps, sigma_eps=sigma_eps, divergence=divergence
        )
        self.n_probes, self.batch_size, self.seed = int(n_probes), batch_size, int(seed)

    def blurred(self, x: Tensor) -> tuple[list[tuple[str, float]], Tensor]:
        """Every (family, θ) input of one image ``(1, C, H, W)``; θ = 0 appears once, as ("*", 0)."""
        units, images = [], []
        if self.thetas[0] == 0.0:
            units.append(("*", 0.0))
            images.append(x)
        thetas = [t for t in self.thetas if t != 0.0]
        for name, fam in self.families.items():
            if not thetas:
                continue
            h = fam(torch.tensor(thetas, dtype=x.dtype, device=x.device)[:, None])
            images.append(blur(x, h, self.boundary))
            units.extend((name, t) for t in thetas)
        return units, torch.cat(images)

    def row_keys(self, image_id: str) -> list[dict]:
        return [{"image_id": image_id, "family": f, "theta": t} for f in self.families for t in self.thetas]

    def run(self, prior: Prior, x: Tensor, image_id: str, todo: list[dict], item: dict | None = None) -> Iterator[dict]:
        x = prior.check_input(x.to(torch.float64))
        units, images = self.blurred(x)
        missing = {(k["family"], k["theta"]) for k in todo}
        chunks = self._chunks(
            [i for i, (name, t) in enumerate(units) if any((f, t) in missing for f in self._names(name))]
        )
        gen = image_generator(self.seed, image_id)
        probes = rademacher((self.n_probes, 1, *x.shape[1:]), gen, device=x.device)
        for chunk in chunks:
            yield from self._evaluate(prior, images, units, chunk, probes, image_id)

    def _names(self, name: str) -> list[str]:
        return list(self.families) if name == "*" else [name]

    def _chunks(self, todo: list[int]) -> list[list[int]]:
        n = len(todo) if self.batch_size is None else int(self.batch_size)
        return [todo[i : i + n] for i in range(0, len(todo), n)]

    def _evaluate(self, prior, images, units, chunk, probes, image_id) -> Iterator[dict]:
        """Rows of one batch of inputs; a failing batch is retried input by input, so that only the input
        that fails gets error rows (finer than the module's per-image error rows)."""
        t0 = time.perf_counter()
        try:
            res = potential(prior, images[chunk], probes=probes, **self.solver_kw)
        except (NonFiniteScoreError, FloatingPointError) as err:
            if len(chunk) > 1:
                for i in chunk:
                    yield from self._evaluate(prior, images, units, [i], probes, image_id)
                return
            name, theta = units[chunk[0]]
            for f in self._names(name):
                yield {"image_id": image_id, "family": f, "theta": theta, "error": f"{type(err).__name__}: {err}"}
            return
        seconds = (time.perf_counter() - t0) / len(chunk)
        for j, i in enumerate(chunk):
            name, theta = units[i]
            for f in self._names(name):
                yield {
                    "image_id": image_id,
                    "family": f,
                    "theta": theta,
                    "potential": res.value[j].item(),
                    "stderr": None if res.stderr is None else res.stderr[j].item(),
                    "nfe": int(res.nfe[j]),
                    "seconds": seconds,
                    "sigma_eps": res.sigma_eps,
                }

    def summarize(self, rows: list[dict]) -> dict:
        """Per family: fractions of images whose curve decreases / increases strictly, mean q(x) − q(h_θmax ⋆ x),
        and the mean ± std of q(h_θ ⋆ x) − q(x) over images."""
        out: dict = {"thetas": self.thetas, "families": {}}
        for name in self.families:
            curves = self.curves(rows, name)
            if not curves:
                continue
            rel = torch.tensor(
                [[c[t] - c[self.thetas[0]] for t in self.thetas] for c in curves.values()],
                dtype=torch.float64,
            )
            steps = [torch.tensor([c[t] for t in self.thetas]).diff() for c in curves.values()]
            out["families"][name] = {
                "images": len(curves),
                "fraction_strictly_decreasing": sum(bool((d < 0).all()) for d in steps) / len(steps),
                "fraction_strictly_increasing": sum(bool((d > 0).all()) for d in steps) / len(steps),
                "mean_decrease_q0_minus_qmax": (-rel[:, -1]).mean().item(),
                "mean_curve": rel.mean(0).tolist(),
                "std_curve": rel.std(0, unbiased=False).tolist(),
            }
        out["failed_rows"] = sum(1 for r in rows if "error" in r)
        return out

    def scalars(self, row: dict) -> list[tuple[str, float, int]]:
        if "potential" not in row:
            return []
        step = self.thetas.index(row["theta"]) if row["theta"] in self.thetas else 0
        return [(f"potential/{row['family']}/{row['image_id']}", row["potential"], step)]

    def image_grid(self, x: Tensor) -> Tensor:
        """The blurred inputs of one image, θ = 0 first, then each family's θ grid."""
        return self.blurred(x.to(torch.float64))[1].float().clamp(0, 1)

    def figures(self, rows: list[dict]) -> dict:
        """``blur_likelihood``: mean ± std of q(h_θ ⋆ x) − q(x) per family (Fig. 7), every image's curve of it,
        and the curves of the first image (Fig. 6)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        summary = self.summarize(rows)["families"]
        if not summary:
            return {}
        fig, (ax0, ax2, ax1) = plt.subplots(1, 3, figsize=(15, 4))
        th = torch.tensor(self.thetas)
        for k, (name, s) in enumerate(summary.items()):
            m, sd = torch.tensor(s["mean_curve"]), torch.tensor(s["std_curve"])
            ax0.plot(th, m, label=f"{name} ({s['images']} images)")
            ax0.fill_between(th, m - sd, m + sd, alpha=0.2)
            for c in self.curves(rows, name).values():
                ax2.plot(th, [c[t] - c[self.thetas[0]] for t in self.thetas], color=f"C{k}", lw=0.6, alpha=0.6)
        first = sorted({r["image_id"] for r in rows if "potential" in r})[0]
        for name in summary:
            c = self.curves(rows, name).get(first)
            if c is not None:
                ax1.plot(th, [c[t] for t in self.thetas], "o-", ms=3, label=name)
        ax0.set(xlabel="θ (px)", ylabel="q(h_θ ⋆ x) − q(x)  [nats]", title="mean ± std over images")
        ax2.set(xlabel="θ (px)", ylabel="q(h_θ ⋆ x) − q(x)  [nats]", title="every image (colour: family)")
        ax1.set(xlabel="θ (px)", ylabel="q(h_θ ⋆ x)  [nats]", title=f"image {first}")
        ax0.legend()
        ax1.legend()
        fig.tight_layout()
        return {"blur_likelihood": fig}

    def curves(self, rows: list[dict], name: str) -> dict[str, dict[float, float]]:
        """{image_id: {θ: q}} for images with a complete, error-free curve of family ``name``."""
        by_image: dict[str, dict[float, float]] = {}
        for r in rows:
            if r.get("family") == name and "potential" in r:
                by_image.setdefault(r["image_id"], {})[round(r["theta"], 10)] = r["potential"]
        grid = [round(t, 10) for t in self.thetas]
        return {i: {t: c[round(t, 10)] for t in self.thetas} for i, c in by_image.items() if all(g in c for g in grid)}


class TimingProbe(Probe):
    """Table 1: model-evaluation and potential-evaluation seconds per image on this hardware.

    Rows: ``{image_id, model_eval_seconds, potential_seconds, nfe, device}``; ``model_eval_seconds`` is the
    median over ``repeats`` score evaluations (after one warm-up). ``divergence``: the Hutchinson estimator's
    VJP (``hutchinson``) or forward difference (``hutchinson-fd``), see :func:`~lit_blind.likelihood.potential`.
    """

    key = ("image_id",)

    def __init__(
        self,
        solver: str = "dopri5",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        steps: int = 32,
        divergence: str = "hutchinson",
        repeats: int = 5,
        sigma_eps: float | None = None,
        seed: int = 0,
    ) -> None:
        check_choice("solver", solver, SOLVERS)
        check_choice("divergence", divergence, ("hutchinson", "hutchinson-fd"))
        self.solver_kw = dict(
            solver=solver, rtol=rtol, atol=atol, steps=steps, sigma_eps=sigma_eps, divergence=divergence
        )
        self.repeats, self.seed = int(repeats), int(seed)

    def run(self, prior: Prior, x: Tensor, image_id: str, todo: list[dict], item: dict | None = None) -> Iterator[dict]:
        x = prior.check_input(x)
        sigma = torch.full(
            (1,), prior.sigma_min if self.solver_kw["sigma_eps"] is None else self.solver_kw["sigma_eps"]
        )
        with torch.no_grad():
            prior.score(x, sigma.to(x))  # warm-up
            times = []
            for _ in range(self.repeats):
                synchronize(x.device)
                t0 = time.perf_counter()
                prior.score(x, sigma.to(x))
                synchronize(x.device)
                times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        res = potential(prior, x, generator=image_generator(self.seed, image_id), **self.solver_kw)
        synchronize(x.device)
        yield {
            "image_id": image_id,
            "model_eval_seconds": sorted(times)[len(times) // 2],
            "potential_seconds": time.perf_counter() - t0,
            "nfe": int(res.nfe[0]),
            "device": hardware(x.device),
        }

    def summarize(self, rows: list[dict]) -> dict:
        ok = [r for r in rows if "model_eval_seconds" in r]
        if not ok:
            return {"images": 0}
        n = len(ok)
        return {
            "images": n,
            "device": ok[0]["device"],
            "solver": self.solver_kw["solver"],
            "model_eval_seconds_per_image": sum(r["model_eval_seconds"] for r in ok) / n,
            "potential_seconds_per_image": sum(r["potential_seconds"] for r in ok) / n,
            "mean_nfe": sum(r["nfe"] for r in ok) / n,
        }
