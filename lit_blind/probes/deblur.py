"""The deblurring probe: blind deconvolution against ground truth (Levin et al. 2009 protocol)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from lit_blind._checks import check_choice
from lit_blind.api import check_algorithm_settings, deblur
from lit_blind.io import write_image
from lit_blind.kernels import dirac
from lit_blind.metrics import error_ratio, kernel_error, psnr
from lit_blind.priors import Prior
from lit_blind.probes.base import Probe, hardware


class DeblurProbe(Probe):
    """Blind deconvolution of each image against its ground truth (Levin et al. 2009 protocol).

    The item must carry ``sharp`` (1, C, H', W') and ``kernel`` (1, 1, k, k, true convolution). For each
    init, :func:`~lit_blind.api.deblur` runs with the given settings (Algorithms 1–2: those left None from
    ``preset``, ``"fast"`` by default; EM: ``em_options``); the row holds the Levin error ratio
    (:func:`~lit_blind.metrics.error_ratio`, same non-blind solver for both kernels), the kernel error, the
    PSNR of the estimate, its kernel error to the Dirac (the no-blur solution), score evaluations, the blind
    method's own seconds (``deblur_seconds``) and the seconds of the whole row (``seconds``: the method, the error
    ratio's two non-blind solves and the saved estimates; the only time rows carried before the eighteenth
    session); an EM row also the precision its prior's network ran at (``precision``, since the twenty-fifth
    session: ``em_options={"precision": "auto"}``, the default, depends on the hardware).
    The estimates are kept beside ``results.jsonl`` (``estimates/<image_id>_<init>_kernel.npy`` and
    ``..._image.png``), so that a row can be re-scored without rerunning the blind method.

    Inits ``"large"`` and ``"small"`` are the paper's two initialisations; ``"both"`` (EM only, the engine's default)
    runs the EM from each and keeps the sharper result (:func:`~lit_blind.marginal.marginal_em`).
    Init ``"oracle"`` (a diagnostic, not a method) starts from the ground-truth kernel, centred in
    ``kernel_size`` (Algorithms 1–2: θ₀; EM: ``init``, resized to the coarsest level of its pyramid — with
    ``em_options={"min_kernel": kernel_size}`` the finest level alone): whether the algorithm keeps it tells an
    objective that prefers another kernel from an optimiser that cannot reach the right one.
    """

    key = ("image_id", "init")
    selects = ("inits",)

    def __init__(
        self,
        inits: Sequence[str] = ("large", "small"),
        algorithm: str = "alternating",
        kernel_size: int = 31,
        boundary: str = "valid",
        sigma_y: float | None = None,
        K: int | None = None,
        K_x: int | None = None,
        gamma_x: float | None = None,
        gamma_theta: float | str | None = None,
        theta_steps: int | None = None,
        theta_start: int | None = None,
        R: int | None = None,
        sigma_denoiser: float | None = None,
        scales: int | None = None,
        preset: str | None = None,
        em_options: dict | None = None,
    ) -> None:
        for init in inits:
            check_choice("init", init, ("large", "small", "both", "oracle"))
        if "oracle" in inits and scales not in (None, 1):
            raise ValueError(f"init 'oracle' starts the finest scale: it needs scales=1, got scales={scales}")
        self.inits = list(inits)
        paper = dict(sigma_y=sigma_y, K=K, K_x=K_x, gamma_x=gamma_x, gamma_theta=gamma_theta, R=R)
        paper |= dict(theta_steps=theta_steps, theta_start=theta_start, sigma_denoiser=sigma_denoiser)
        paper |= dict(scales=scales, preset=preset)
        check_algorithm_settings(algorithm, paper, em_options)  # deblur's own check, before any image
        if algorithm != "em":
            paper["preset"] = preset or "fast"
        self.kw = dict(algorithm=algorithm, kernel_size=kernel_size, boundary=boundary, em_options=em_options, **paper)

    def row_keys(self, image_id: str) -> list[dict]:
        return [{"image_id": image_id, "init": init} for init in self.inits]

    def run(self, prior: Prior, x: Tensor, image_id: str, todo: list[dict], item: dict | None = None) -> Iterator[dict]:
        if item is None or "sharp" not in item or "kernel" not in item:
            raise ValueError("DeblurProbe needs items with 'sharp' and 'kernel' (e.g. LevinDataModule)")
        sharp, h_true = item["sharp"].double(), item["kernel"].double()
        estimates = self._estimates()
        np.save(estimates / f"{image_id}_true_kernel.npy", h_true[0, 0].cpu().numpy())
        for key in todo:
            init, t0 = key["init"], time.perf_counter()
            if init == "oracle":
                p = (self.kw["kernel_size"] - h_true.shape[-1]) // 2
                if p < 0:
                    raise ValueError(
                        f"kernel_size must hold the true kernel ({h_true.shape[-1]}), got {self.kw['kernel_size']}"
                    )
                h0 = torch.nn.functional.pad(h_true, (p,) * 4)
                start = {"init": h0} if self.kw["algorithm"] == "em" else {"theta0": h0.flatten(1)}
                res = deblur(x.double(), prior, **start, **self.kw)
            else:
                res = deblur(x.double(), prior, init=init, **self.kw)
            method_seconds = time.perf_counter() - t0
            c = self.kw["kernel_size"] // 2
            est = res.image[..., c:-c, c:-c] if self.kw["boundary"] == "valid" else res.image
            np.save(estimates / f"{image_id}_{init}_kernel.npy", res.kernel[0, 0].cpu().numpy())
            write_image(estimates / f"{image_id}_{init}_image.png", est)
            yield {
                "image_id": image_id,
                "init": init,
                "error_ratio": error_ratio(x.double(), sharp, res.kernel, h_true),
                "kernel_error": kernel_error(res.kernel, h_true),
                "no_blur_distance": kernel_error(res.kernel, dirac(res.kernel.shape[-1], torch.float64)),
                "psnr": psnr(est, sharp),
                "score_evals": res.history["score_evals"][-1],
                "deblur_seconds": method_seconds,
                "seconds": time.perf_counter() - t0,
                "device": hardware(x.device),
            } | ({"precision": res.history["precision"]} if "precision" in res.history else {})  # EM: the network's

    def _estimates(self) -> Path:
        if self.output_dir is None:
            raise ValueError("output_dir must be set before run (PriorEvaluationModule sets it), got None")
        folder = Path(self.output_dir) / "estimates"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

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
            if all("deblur_seconds" in row for row in r):  # rows before the eighteenth session lack it
                out[init]["deblur_seconds_per_image"] = sum(row["deblur_seconds"] for row in r) / n
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
        """True and estimated kernels of the first ``n`` images by id (not by the order in which parallel workers
        finished them), one column per image."""
        import matplotlib.pyplot as plt

        if self.output_dir is None or not (Path(self.output_dir) / "estimates").is_dir():
            return {}
        ids = sorted({r["image_id"] for r in rows if "error_ratio" in r})[:n]
        names = ["true", *self.inits]
        fig, axes = plt.subplots(len(names), len(ids), figsize=(1.3 * len(ids), 1.4 * len(names)), squeeze=False)
        for j, image_id in enumerate(ids):
            for i, name in enumerate(names):
                file = Path(self.output_dir) / "estimates" / f"{image_id}_{name}_kernel.npy"
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
