"""Probes: what ``PriorEvaluationModule`` runs on each image (no Lightning here).

A probe takes a prior, one image and its id, and a :class:`~lit_blind.results.ResultsFile`; it appends one
row per finished unit of work, skipping rows already present (resumable), and recording an ``error``
instead of a number when a unit fails. ``summarize(rows)`` turns all rows into the headline numbers.

* :class:`BlurLikelihoodProbe` — §2.3, Figs. 6–8: q(h_θ ⋆ x) for 1-D blur families on a θ grid.
* :class:`TimingProbe` — Table 1: seconds per model evaluation and per potential evaluation.
"""

from __future__ import annotations

import os
import platform
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from lit_blind._checks import check_choice
from lit_blind.kernels import family
from lit_blind.likelihood import SOLVERS, NonFiniteScoreError, potential, rademacher
from lit_blind.physics import blur
from lit_blind.priors import Prior
from lit_blind.results import ResultsFile


class Probe:
    """What ``PriorEvaluationModule`` runs per image: ``run`` appends rows, ``summarize`` reduces them.

    ``key`` names the fields that identify a row (for resuming) and ``row_keys`` the keys of the rows one
    image produces (a multi-process run deals out only the images with a row still missing); ``item``
    carries the other fields of the dataset item (e.g. a ground-truth kernel); ``figures`` returns
    matplotlib figures made from all rows; ``image_grid`` the inputs worth showing for one image.
    """

    key: tuple[str, ...] = ("image_id",)

    def row_keys(self, image_id: str) -> list[dict]:
        return [{"image_id": image_id}]

    def run(self, prior: Prior, x: Tensor, image_id: str, results: ResultsFile, item: dict | None = None) -> list[dict]:
        raise NotImplementedError

    def summarize(self, rows: list[dict]) -> dict:
        raise NotImplementedError

    def figures(self, rows: list[dict]) -> dict:
        return {}

    def image_grid(self, x: Tensor) -> Tensor | None:
        return None

    def scalars(self, row: dict) -> list[tuple[str, float, int]]:
        return []


def image_generator(seed: int, image_id: str) -> torch.Generator:
    """A generator that depends only on (seed, image id): probes are reproducible per image, whatever
    the batch, the process or the order of evaluation."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + zlib.crc32(image_id.encode())) % 2**63)


class BlurLikelihoodProbe(Probe):
    r"""q(h_θ ⋆ x) for each family and θ (paper §2.3): does blur make images more likely?

    All (family, θ) inputs of one image share the same Hutchinson probes (common random numbers), so the
    curve θ ↦ q(h_θ ⋆ x) − q(x) carries far less noise than each value. θ = 0 (h₀ = δ) is evaluated once
    per image and written for every family.

    Rows: ``{image_id, family, theta, potential, stderr, nfe, seconds, sigma_eps}``.
    """

    key = ("image_id", "family", "theta")

    def __init__(
        self,
        families: Sequence[str] = ("gaussian", "motion", "airy", "defocus"),
        thetas: Sequence[float] = tuple(0.5 * i for i in range(11)),
        kernel_size: int = 31,
        boundary: str = "circular",
        solver: str = "dopri5",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        steps: int = 32,
        n_probes: int = 1,
        sigma_eps: float | None = None,
        batch_size: int | None = None,
        seed: int = 0,
    ) -> None:
        self.families = {name: family(name, size=kernel_size) for name in families}
        self.thetas = [float(t) for t in thetas]
        if not self.thetas or sorted(self.thetas) != self.thetas:
            raise ValueError(f"thetas must be a non-empty increasing list, got {list(thetas)}")
        for fam in self.families.values():  # range errors now, not after hours of work
            fam.check_theta(torch.tensor(self.thetas, dtype=torch.float64)[:, None])
        self.boundary = check_choice("boundary", boundary, ("circular",))  # the paper's setting (§2.3)
        check_choice("solver", solver, SOLVERS)
        self.solver_kw = dict(solver=solver, rtol=rtol, atol=atol, steps=steps, sigma_eps=sigma_eps)
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

    def run(self, prior: Prior, x: Tensor, image_id: str, results: ResultsFile, item: dict | None = None) -> list[dict]:
        x = prior.check_input(x.to(torch.float64))
        units, images = self.blurred(x)
        todo = [
            i
            for i, (name, t) in enumerate(units)
            if any(not results.done({"image_id": image_id, "family": f, "theta": t}) for f in self._names(name))
        ]
        if not todo:
            return []
        gen = image_generator(self.seed, image_id)
        probes = rademacher((self.n_probes, 1, *x.shape[1:]), gen, device=x.device)
        rows = []
        for chunk in self._chunks(todo):
            rows += self._evaluate(prior, images, units, chunk, probes, image_id, results)
        return rows

    def _names(self, name: str) -> list[str]:
        return list(self.families) if name == "*" else [name]

    def _chunks(self, todo: list[int]) -> list[list[int]]:
        n = len(todo) if self.batch_size is None else int(self.batch_size)
        return [todo[i : i + n] for i in range(0, len(todo), n)]

    def _evaluate(self, prior, images, units, chunk, probes, image_id, results) -> list[dict]:
        t0 = time.perf_counter()
        try:
            res = potential(prior, images[chunk], probes=probes, **self.solver_kw)
        except (NonFiniteScoreError, FloatingPointError) as err:
            if len(chunk) > 1:  # isolate the failing input(s)
                return [r for i in chunk for r in self._evaluate(prior, images, units, [i], probes, image_id, results)]
            rows = [
                {
                    "image_id": image_id,
                    "family": f,
                    "theta": units[chunk[0]][1],
                    "error": f"{type(err).__name__}: {err}",
                }
                for f in self._names(units[chunk[0]][0])
            ]
            results.extend(rows)
            return rows
        seconds = (time.perf_counter() - t0) / len(chunk)
        rows = []
        for j, i in enumerate(chunk):
            name, theta = units[i]
            for f in self._names(name):
                row = {
                    "image_id": image_id,
                    "family": f,
                    "theta": theta,
                    "potential": res.value[j].item(),
                    "stderr": None if res.stderr is None else res.stderr[j].item(),
                    "nfe": int(res.nfe[j]),
                    "seconds": seconds,
                    "sigma_eps": res.sigma_eps,
                }
                if not results.done(row):
                    results.append(row)
                    rows.append(row)
        return rows

    def summarize(self, rows: list[dict]) -> dict:
        """Per family: fraction of images whose curve decreases strictly, mean q(x) − q(h_θmax ⋆ x), and the
        mean ± std of q(h_θ ⋆ x) − q(x) over images."""
        out: dict = {"thetas": self.thetas, "families": {}}
        for name in self.families:
            curves = self.curves(rows, name)
            if not curves:
                continue
            rel = torch.tensor(
                [[c[t] - c[self.thetas[0]] for t in self.thetas] for c in curves.values()],
                dtype=torch.float64,
            )
            dec = [(torch.tensor([c[t] for t in self.thetas]).diff() < 0).all().item() for c in curves.values()]
            out["families"][name] = {
                "images": len(curves),
                "fraction_strictly_decreasing": sum(dec) / len(dec),
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
        """``blur_likelihood``: mean ± std of q(h_θ ⋆ x) − q(x) per family (Fig. 7) and the curves of the
        first image (Fig. 6)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        summary = self.summarize(rows)["families"]
        if not summary:
            return {}
        fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 4))
        th = torch.tensor(self.thetas)
        for name, s in summary.items():
            m, sd = torch.tensor(s["mean_curve"]), torch.tensor(s["std_curve"])
            ax0.plot(th, m, label=f"{name} ({s['images']} images)")
            ax0.fill_between(th, m - sd, m + sd, alpha=0.2)
        first = sorted({r["image_id"] for r in rows if "potential" in r})[0]
        for name in summary:
            c = self.curves(rows, name).get(first)
            if c is not None:
                ax1.plot(th, [c[t] for t in self.thetas], "o-", ms=3, label=name)
        ax0.set(xlabel="θ (px)", ylabel="q(h_θ ⋆ x) − q(x)  [nats]", title="mean ± std over images")
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
    median over ``repeats`` score evaluations (after one warm-up).
    """

    key = ("image_id",)

    def __init__(
        self,
        solver: str = "dopri5",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        steps: int = 32,
        repeats: int = 5,
        sigma_eps: float | None = None,
        seed: int = 0,
    ) -> None:
        check_choice("solver", solver, SOLVERS)
        self.solver_kw = dict(solver=solver, rtol=rtol, atol=atol, steps=steps, sigma_eps=sigma_eps)
        self.repeats, self.seed = int(repeats), int(seed)

    def run(self, prior: Prior, x: Tensor, image_id: str, results: ResultsFile, item: dict | None = None) -> list[dict]:
        if results.done({"image_id": image_id}):
            return []
        x = prior.check_input(x)
        sigma = torch.full(
            (1,), prior.sigma_min if self.solver_kw["sigma_eps"] is None else self.solver_kw["sigma_eps"]
        )
        sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
        with torch.no_grad():
            prior.score(x, sigma.to(x))  # warm-up
            times = []
            for _ in range(self.repeats):
                sync()
                t0 = time.perf_counter()
                prior.score(x, sigma.to(x))
                sync()
                times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        res = potential(prior, x, generator=image_generator(self.seed, image_id), **self.solver_kw)
        sync()
        row = {
            "image_id": image_id,
            "model_eval_seconds": sorted(times)[len(times) // 2],
            "potential_seconds": time.perf_counter() - t0,
            "nfe": int(res.nfe[0]),
            "device": hardware(x.device),
        }
        results.append(row)
        return [row]

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


def hardware(device: torch.device) -> str:
    """A short description of where the computation ran."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return (
        f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
    )


class DeblurProbe(Probe):
    """Blind deconvolution of each image against its ground truth (Levin et al. 2009 protocol).

    The item must carry ``sharp`` (1, C, H', W') and ``kernel`` (1, 1, k, k, true convolution). For each
    init, :func:`~lit_blind.api.deblur` runs with the given settings; the row holds the Levin error ratio
    (:func:`~lit_blind.metrics.error_ratio`, same non-blind solver for both kernels), the kernel error, the
    PSNR of the estimate, its kernel error to the Dirac (the no-blur solution), score evaluations and seconds.
    The estimates are kept beside ``results.jsonl`` (``estimates/<image_id>_<init>_kernel.npy`` and
    ``..._image.png``), so that a row can be re-scored without rerunning the blind method.

    Init ``"oracle"`` (a diagnostic, not a method) starts from the ground-truth kernel, centred in
    ``kernel_size``: whether the algorithm keeps it tells an objective that prefers another kernel from an
    optimiser that cannot reach the right one.
    """

    key = ("image_id", "init")

    def __init__(
        self,
        inits: Sequence[str] = ("large", "small"),
        algorithm: str = "alternating",
        kernel_size: int = 31,
        boundary: str = "valid",
        sigma_y: float = 0.01,
        K: int = 40,
        K_x: int = 10,
        gamma_x: float | None = 0.1,
        gamma_theta: float | str = "armijo",
        theta_steps: int = 5,
        theta_start: int = 0,
        R: int = 100,
        sigma_denoiser: float | None = None,
        scales: int = 1,
        em_options: dict | None = None,
    ) -> None:
        for init in inits:
            check_choice("init", init, ("large", "small", "oracle"))
        check_choice("algorithm", algorithm, ("em", "alternating", "drs"))
        if algorithm == "em" and "oracle" in inits:
            raise ValueError(
                "init 'oracle' starts Algorithm 1/2 from the true kernel; algorithm 'em' has no such start"
            )
        if "oracle" in inits and scales != 1:
            raise ValueError(f"init 'oracle' starts the finest scale: it needs scales=1, got scales={scales}")
        self.inits = list(inits)
        self.kw = dict(
            algorithm=algorithm,
            kernel_size=kernel_size,
            boundary=boundary,
            sigma_y=sigma_y,
            K=K,
            K_x=K_x,
            gamma_x=gamma_x,
            gamma_theta=gamma_theta,
            theta_steps=theta_steps,
            theta_start=theta_start,
            R=R,
            sigma_denoiser=sigma_denoiser,
            scales=scales,
        )
        if algorithm == "em":  # the EM engine has its own schedule: pass only what it reads
            self.kw = dict(algorithm="em", kernel_size=kernel_size, boundary=boundary, em_options=em_options)
        elif em_options:
            raise ValueError(f"em_options apply to algorithm 'em' only, got algorithm={algorithm!r}")
        self._estimates: Path | None = None

    def row_keys(self, image_id: str) -> list[dict]:
        return [{"image_id": image_id, "init": init} for init in self.inits]

    def run(self, prior: Prior, x: Tensor, image_id: str, results: ResultsFile, item: dict | None = None) -> list[dict]:
        from lit_blind.api import deblur
        from lit_blind.io import write_image
        from lit_blind.kernels import dirac
        from lit_blind.metrics import error_ratio, kernel_error, psnr

        if item is None or "sharp" not in item or "kernel" not in item:
            raise ValueError("DeblurProbe needs items with 'sharp' and 'kernel' (e.g. LevinDataModule)")
        sharp, h_true = item["sharp"].double(), item["kernel"].double()
        self._estimates = results.path.parent / "estimates"
        self._estimates.mkdir(parents=True, exist_ok=True)
        np.save(self._estimates / f"{image_id}_true_kernel.npy", h_true[0, 0].cpu().numpy())
        rows = []
        for key in self.row_keys(image_id):
            if results.done(key):
                continue
            init, t0 = key["init"], time.perf_counter()
            if init == "oracle":
                p = (self.kw["kernel_size"] - h_true.shape[-1]) // 2
                if p < 0:
                    raise ValueError(
                        f"kernel_size must hold the true kernel ({h_true.shape[-1]}), got {self.kw['kernel_size']}"
                    )
                res = deblur(x.double(), prior, theta0=torch.nn.functional.pad(h_true, (p,) * 4).flatten(1), **self.kw)
            else:
                res = deblur(x.double(), prior, init=init, **self.kw)
            c = self.kw["kernel_size"] // 2
            est = res.image[..., c:-c, c:-c] if self.kw["boundary"] == "valid" else res.image
            row = {
                "image_id": image_id,
                "init": init,
                "error_ratio": error_ratio(x.double(), sharp, res.kernel, h_true),
                "kernel_error": kernel_error(res.kernel, h_true),
                "no_blur_distance": kernel_error(res.kernel, dirac(res.kernel.shape[-1], torch.float64)),
                "psnr": psnr(est, sharp),
                "score_evals": res.history["score_evals"][-1],
                "seconds": time.perf_counter() - t0,
                "device": hardware(x.device),
            }
            np.save(self._estimates / f"{image_id}_{init}_kernel.npy", res.kernel[0, 0].cpu().numpy())
            write_image(self._estimates / f"{image_id}_{init}_image.png", est)
            results.append(row)
            rows.append(row)
        return rows

    def summarize(self, rows: list[dict]) -> dict:
        out: dict = {}
        for init in self.inits:
            r = [row for row in rows if row.get("init") == init and "error_ratio" in row]
            if not r:
                continue
            n = len(r)
            out[init] = {
                "images": n,
                "success_rate_er_le_3": sum(row["error_ratio"] <= 3 for row in r) / n,
                "mean_error_ratio": sum(row["error_ratio"] for row in r) / n,
                "mean_kernel_error": sum(row["kernel_error"] for row in r) / n,
                "mean_no_blur_distance": sum(row["no_blur_distance"] for row in r) / n,
                "mean_psnr": sum(row["psnr"] for row in r) / n,
                "seconds_per_image": sum(row["seconds"] for row in r) / n,
                "device": r[0]["device"],
            }
        return out

    def figures(self, rows: list[dict]) -> dict:
        """Cumulative histogram of error ratios (Levin et al. 2009, Fig. 4 style), one curve per init."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        bins = [1.5, 2, 2.5, 3, 3.5, 4, 5]
        for init in self.inits:
            er = [row["error_ratio"] for row in rows if row.get("init") == init and "error_ratio" in row]
            if er:
                ax.plot(
                    bins,
                    [sum(e <= b for e in er) / len(er) for b in bins],
                    "o-",
                    label=f"{init} init ({len(er)} images)",
                )
        ax.set(
            xlabel="error ratio",
            ylabel="fraction of images ≤ ratio",
            ylim=(0, 1.05),
            title="Levin 2009 cumulative error ratios",
        )
        ax.legend()
        fig.tight_layout()
        return {"error_ratios": fig, **self._kernel_figure(rows)}

    def _kernel_figure(self, rows: list[dict], n: int = 8) -> dict:
        """True and estimated kernels of the first ``n`` images, one column per image."""
        import matplotlib.pyplot as plt

        if self._estimates is None:
            return {}
        ids = list(dict.fromkeys(r["image_id"] for r in rows if "error_ratio" in r))[:n]
        names = ["true", *self.inits]
        fig, axes = plt.subplots(len(names), len(ids), figsize=(1.3 * len(ids), 1.4 * len(names)), squeeze=False)
        for j, image_id in enumerate(ids):
            for i, name in enumerate(names):
                file = self._estimates / f"{image_id}_{name}_kernel.npy"
                ax = axes[i, j]
                if file.is_file():
                    ax.imshow(np.load(file), cmap="gray")
                ax.set_xticks([]), ax.set_yticks([])
                if j == 0:
                    ax.set_ylabel(name)
                if i == 0:
                    ax.set_title(image_id.replace("_kernel", " k"), fontsize=8)
        fig.tight_layout()
        return {"kernels": fig}
