"""``BlindDeconvModule``: Algorithms 1 and 2 as a resumable ``lit-blind fit`` (paper §5, app. B).

One training step is one outer iteration of :class:`lit_blind.deconv.OuterLoop` — the one engine that
``deblur`` and the command line also run — for a whole batch of independent problems (image × kernel × init
from ``BlurProblemsDataModule``), so ``global_step`` counts outer iterations and ``max_steps`` = K. Settings
left None come from ``preset`` (:data:`lit_blind.deconv.PRESETS`, ``"paper"`` by default). x, θ and the
Armijo step size are parameters and buffers, hence in every checkpoint: ``--ckpt_path`` resumes exactly.
Run it in a single process (the problems are one batch).
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import nn

from lit_blind._checks import check_choice
from lit_blind.deconv import IMAGE_STEPS, PRESETS, outer_loop, x_init
from lit_blind.io import write_image
from lit_blind.kernels import KernelFamily, as_family, initial_theta
from lit_blind.metrics import kernel_error, psnr
from lit_blind.physics import data_fidelity
from lit_blind.priors import Prior
from lit_blind.results import ResultsFile, write_json


class BlindDeconvModule(pl.LightningModule):
    """Blind deconvolution of a batch of problems; outputs under ``output_dir`` (DESIGN.md §4).

    ``family``: a name (built at ``kernel_size``, 31 when None) or a :class:`~lit_blind.kernels.KernelFamily`
    (YAML ``class_path``; its size must equal ``kernel_size`` when that is given), as everywhere a family is
    named (:func:`~lit_blind.kernels.as_family`)."""

    def __init__(
        self,
        prior: Prior,
        family: str | KernelFamily,
        kernel_size: int | None = None,
        sigma_y: float | None = None,
        algorithm: str = "alternating",
        K_x: int | None = None,
        gamma_x: float | None = None,
        gamma_theta: float | str | None = None,
        theta_steps: int | None = None,
        theta_start: int | None = None,
        R: int | None = None,
        boundary: str = "circular",
        sigma_denoiser: float | None = None,
        preset: str = "paper",
        eps_large: float = 0.15,
        eps_small: float = -0.1,
        log_every: int = 10,
        output_dir: str = "outputs/blind_deconv",
    ) -> None:
        super().__init__()
        check_choice("algorithm", algorithm, tuple(IMAGE_STEPS))
        check_choice("preset", preset, tuple(PRESETS))
        self.automatic_optimization = False
        size = kernel_size if kernel_size is not None else family.size if isinstance(family, KernelFamily) else 31
        family = as_family(family, size)
        self.prior, self.family, self.algorithm, self.preset = prior, family, algorithm, preset
        self.settings = dict(sigma_y=sigma_y, K_x=K_x, gamma_x=gamma_x, gamma_theta=gamma_theta, R=R)
        self.settings |= dict(theta_steps=theta_steps, theta_start=theta_start, boundary=boundary)
        self.sigma_denoiser = sigma_denoiser
        self.eps_large, self.eps_small, self.log_every = eps_large, eps_small, log_every
        self.output_dir = Path(output_dir)

    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule
        dm.setup(stage)
        self.problems = dm.problems
        y = self.problems["y"]
        thetas = []
        for i, init in enumerate(self.problems["inits"]):
            ref = None if self.problems["theta_true"] is None else self.problems["theta_true"][i]
            thetas.append(initial_theta(self.family, init, ref, self.eps_large, self.eps_small))
        self.loop = outer_loop(
            self.algorithm, y, self.prior, self.family, torch.cat(thetas), preset_name=self.preset, batch=True,
            sigma_aux=self.sigma_denoiser, **self.settings,
        )  # fmt: skip
        self.x = nn.Parameter(x_init(y, self.family.size, self.settings["boundary"]), requires_grad=False)
        self.theta = nn.Parameter(self.loop.theta.clone(), requires_grad=False)
        self.register_buffer("theta_gamma", self.loop.theta_step.gamma.clone())
        self.register_buffer("y", y.clone(), persistent=False)

    def configure_optimizers(self):
        # the engine steps θ itself; under manual optimisation global_step counts optimizer steps, so an
        # optimizer with nothing to update (no gradients, lr 0) counts the outer iterations
        return torch.optim.SGD([self.theta], lr=0.0)

    def training_step(self, batch, batch_idx: int) -> None:
        loop = self.loop  # its state from the parameters: exact after a resume from a checkpoint
        loop.k, loop.x, loop.theta = self.global_step, self.x.data, self.theta.data
        loop.theta_step.gamma = self.theta_gamma.clone()
        info = loop.step()
        self.x.data, self.theta.data = loop.x, loop.theta
        self.theta_gamma.copy_(loop.theta_step.gamma)
        self.optimizers().step()
        with torch.no_grad():
            f = data_fidelity(loop.x, self.y, self.family(loop.theta).to(self.y.dtype), self.settings["boundary"])
        self.log("train/data_fidelity", f.mean(), prog_bar=True)
        self._log_problems(info["iteration"], info["kernel"], f)

    def _log_problems(self, k: int, h, f) -> None:
        exp = getattr(self.logger, "experiment", None)
        if exp is None or not hasattr(exp, "add_scalar"):
            return
        for i, pid in enumerate(self.problems["ids"]):
            exp.add_scalar(f"data_fidelity/{pid}", f[i].item(), k)
            if self.problems["h_true"] is not None:
                exp.add_scalar(f"kernel_error/{pid}", kernel_error(h[i : i + 1], self.problems["h_true"][i]), k)
        if k % self.log_every == 0:
            import torchvision

            exp.add_image("kernels", torchvision.utils.make_grid((h / h.amax((-2, -1), keepdim=True)).float().cpu()), k)
            exp.add_image("images", torchvision.utils.make_grid(self.x.data.clamp(0, 1).float().cpu()), k)

    def on_train_end(self) -> None:
        if not self.trainer.is_global_zero:
            return

        results = ResultsFile(self.output_dir, key=("problem",))
        h = self.family(self.theta).detach()
        rows = []
        for i, pid in enumerate(self.problems["ids"]):
            row = {"problem": pid, "init": self.problems["inits"][i], "iterations": self.global_step}
            row["theta"] = self.theta[i].tolist() if self.theta.shape[1] <= 16 else None
            if self.problems["h_true"] is not None:
                row["kernel_error"] = kernel_error(h[i : i + 1], self.problems["h_true"][i])
                row["psnr"] = psnr(self.x.data[i : i + 1], self.problems["x_true"][i : i + 1])
            safe = pid.replace("/", "_").replace("[", "").replace("]", "").replace(", ", "_")
            write_image(self.output_dir / "images" / f"{safe}.png", self.x.data[i : i + 1].float())
            write_image(self.output_dir / "kernels" / f"{safe}.png", (h[i : i + 1, 0] / h[i].max()).float())
            if not results.done(row):
                results.append(row)
            rows.append(row)
        summary = {"algorithm": self.algorithm, "preset": self.preset, "family": type(self.family).__name__}
        summary["problems"] = rows
        for init in ("large", "small"):
            errs = [r["kernel_error"] for r in rows if r["init"] == init and "kernel_error" in r]
            if errs:
                summary[f"mean_kernel_error_{init}"] = sum(errs) / len(errs)
        write_json(self.output_dir / "summary.json", summary)
