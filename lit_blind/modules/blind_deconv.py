"""``BlindDeconvModule``: Algorithms 1 and 2 as a resumable ``lit-blind fit`` (paper §5, app. B).

One training step is one outer iteration for a whole batch of independent problems (image × kernel × init
from ``BlurProblemsDataModule``): the image update of :mod:`lit_blind.deconv` (K_x steps, no optimizer), then
one θ step by ``torch.optim.SGD`` at learning rate γ_θ (the paper's gradient step, so ``global_step`` counts
outer iterations and ``max_steps`` = K) followed by the family's projection; x is reset to y every R
iterations. x and θ are parameters, hence in every checkpoint: ``--ckpt_path`` resumes exactly. Run it in a
single process: under DDP the θ gradients of different problems would be averaged.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import nn

from lit_blind.api import initial_theta
from lit_blind.deconv import douglas_rachford_step, proximal_gradient_step, x_init
from lit_blind.io import write_image
from lit_blind.kernels import KernelFamily
from lit_blind.metrics import kernel_error, psnr
from lit_blind.physics import data_fidelity
from lit_blind.priors import Prior
from lit_blind.results import ResultsFile, write_json


class BlindDeconvModule(pl.LightningModule):
    """Blind deconvolution of a batch of problems; outputs under ``output_dir`` (DESIGN.md §4)."""

    def __init__(
        self,
        prior: Prior,
        family: KernelFamily,
        sigma_y: float = 0.01,
        algorithm: str = "alternating",
        K_x: int = 100,
        gamma_x: float | None = None,
        gamma_theta: float = 0.001,
        R: int = 100,
        boundary: str = "circular",
        sigma_denoiser: float | None = None,
        eps_large: float = 0.15,
        eps_small: float = -0.1,
        log_every: int = 10,
        output_dir: str = "outputs/blind_deconv",
    ) -> None:
        super().__init__()
        if algorithm not in ("alternating", "drs"):
            raise ValueError(f"algorithm must be 'alternating' or 'drs', got {algorithm!r}")
        self.automatic_optimization = False
        self.prior, self.family = prior, family
        self.sigma_y, self.algorithm, self.K_x, self.R, self.boundary = sigma_y, algorithm, K_x, R, boundary
        self.gamma_x = (0.01 if algorithm == "alternating" else 1.0) if gamma_x is None else gamma_x
        self.gamma_theta, self.sigma_denoiser = gamma_theta, sigma_denoiser
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
        self.x = nn.Parameter(x_init(y, self.family.size, self.boundary), requires_grad=False)
        self.theta = nn.Parameter(torch.cat(thetas))
        self.register_buffer("y", y.clone(), persistent=False)

    def configure_optimizers(self):
        return torch.optim.SGD([self.theta], lr=self.gamma_theta)

    def training_step(self, batch, batch_idx: int) -> None:
        k = self.global_step
        y = self.y
        if k % self.R == 0:
            self.x.data = x_init(y, self.family.size, self.boundary)
        if self.algorithm == "alternating":
            step = proximal_gradient_step(self.prior, y, self.sigma_y, self.K_x, self.gamma_x, None, self.boundary)
        else:
            step = douglas_rachford_step(
                self.prior, y, self.sigma_y, self.K_x, self.gamma_x, self.sigma_denoiser, self.boundary
            )
        with torch.no_grad():
            h = self.family(self.theta).to(y.dtype)
        self.x.data = step(self.x.data, h)
        opt = self.optimizers()
        opt.zero_grad()
        f = data_fidelity(self.x.data, y, self.family(self.theta), self.boundary)
        self.manual_backward(f.sum())
        opt.step()
        with torch.no_grad():
            self.theta.data = self.family.project(self.theta.data)
        self.log("train/data_fidelity", f.mean(), prog_bar=True)
        self._log_problems(k, h, f)

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
        summary = {"algorithm": self.algorithm, "family": type(self.family).__name__, "problems": rows}
        for init in ("large", "small"):
            errs = [r["kernel_error"] for r in rows if r["init"] == init and "kernel_error" in r]
            if errs:
                summary[f"mean_kernel_error_{init}"] = sum(errs) / len(errs)
        write_json(self.output_dir / "summary.json", summary)
