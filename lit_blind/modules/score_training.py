"""``ScoreTrainingModule``: VE denoising score matching on a diffusers ``UNet2DModel`` (``lit-blind fit``).

Loss (Song et al. 2021, continuous VE, λ(σ) = σ²): σ = σ_min (σ_max/σ_min)^u with u ~ U(0, 1),
z ~ N(0, I), L = E ‖σ s_θ(x + σz, σ) + z‖² (mean over pixels). The UNet takes σ as a float tensor and
outputs the score (Fourier time embedding, output divided by σ inside diffusers). An exponential moving
average of the weights is kept in the checkpoint and used for validation, samples and export.

The EMA is kept by hand rather than by Lightning's ``EMAWeightAveraging`` callback (Lightning 2.6): that
callback applies one fixed decay from its first update, while score models are trained with the warm-up
decay min(decay, (1 + t)/(10 + t)) of score_sde used here (without it the average is dominated by the random
initial weights for ≈ 1/(1 − decay) steps: 1,000 steps at 0.999, a quarter of the small priors' training); it
also swaps the averaged weights into the module for validation instead of keeping the EMA network beside the
trained one, which export and the sample grids use, and the shipped checkpoints store ``ema.*`` weights.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from lit_blind.loading import save_diffusers_ve
from lit_blind.priors import UNetScorePrior
from lit_blind.sampling import sample_ve


class ScoreTrainingModule(pl.LightningModule):
    """Train a VE score network; ``export(dir)`` writes the EMA network in diffusers format."""

    def __init__(
        self,
        unet: nn.Module,
        sigma_min: float = 0.01,
        sigma_max: float = 50.0,
        lr: float = 2e-4,
        ema_decay: float = 0.999,
        warmup_steps: int = 500,
        grad_clip: float = 1.0,
        n_samples: int = 16,
        sample_steps: int = 200,
        output_dir: str | None = None,
    ) -> None:
        super().__init__()
        if not 0 < sigma_min < sigma_max:
            raise ValueError(
                f"sigma_min and sigma_max must satisfy 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}"
            )
        if not 0 <= ema_decay < 1:
            raise ValueError(f"ema_decay must lie in [0, 1), got {ema_decay}")
        self.unet = unet
        self.ema = copy.deepcopy(unet).requires_grad_(False).eval()
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.lr, self.ema_decay, self.warmup_steps, self.grad_clip = lr, ema_decay, warmup_steps, grad_clip
        self.n_samples, self.sample_steps = n_samples, sample_steps
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.save_hyperparameters(ignore=["unet"])

    def ema_prior(self) -> UNetScorePrior:
        return UNetScorePrior(self.ema, self.sigma_min, self.sigma_max)

    def loss(self, net: nn.Module, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Denoising score matching, λ(σ) = σ², σ log-uniform on [σ_min, σ_max]."""
        u = torch.rand(x.shape[0], generator=generator).to(x)
        sigma = self.sigma_min * (self.sigma_max / self.sigma_min) ** u
        z = torch.randn(x.shape, generator=generator).to(x)
        score = net(x + sigma[:, None, None, None] * z, sigma).sample
        return (sigma[:, None, None, None] * score + z).pow(2).flatten(1).mean(1).mean()

    def training_step(self, batch, batch_idx: int) -> Tensor:
        loss = self.loss(self.unet, batch[0])
        self.log("train/loss", loss, prog_bar=True, batch_size=batch[0].shape[0])
        return loss

    def on_before_optimizer_step(self, optimizer) -> None:
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.unet.parameters(), self.grad_clip)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        decay = min(self.ema_decay, (1 + self.global_step) / (10 + self.global_step))
        with torch.no_grad():  # one fused update over all tensors (a launch per tensor dominated on a GPU)
            torch._foreach_lerp_(list(self.ema.parameters()), list(self.unet.parameters()), 1 - decay)
            for e, b in zip(self.ema.buffers(), self.unet.buffers(), strict=True):
                e.copy_(b)

    def validation_step(self, batch, batch_idx: int) -> None:
        gen = torch.Generator().manual_seed(batch_idx)  # the same noise every validation: comparable losses
        loss = self.loss(self.ema, batch[0], gen)
        self.log("val/loss", loss, prog_bar=True, batch_size=batch[0].shape[0])

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or not self.n_samples:
            return
        shape = (self.n_samples, self.ema.config.in_channels, self.ema.config.sample_size, self.ema.config.sample_size)
        x = sample_ve(self.ema_prior(), shape, self.sample_steps, torch.Generator().manual_seed(0), self.device)
        import torchvision

        grid = torchvision.utils.make_grid(x.clamp(0, 1).cpu(), nrow=int(math.sqrt(self.n_samples)))
        exp = getattr(self.logger, "experiment", None)
        if exp is not None and hasattr(exp, "add_image"):
            exp.add_image("samples", grid, self.global_step)
        if self.output_dir is not None and self.trainer.is_global_zero:
            (self.output_dir / "samples").mkdir(parents=True, exist_ok=True)
            torchvision.utils.save_image(grid, self.output_dir / "samples" / f"step{self.global_step:07d}.png")

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.unet.parameters(), lr=self.lr)
        warm = max(1, self.warmup_steps)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warm))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_train_end(self) -> None:
        if self.output_dir is not None and self.trainer.is_global_zero:
            self.export(self.output_dir / "prior")

    def export(self, directory: str | Path) -> None:
        """EMA weights via ``save_pretrained`` (safetensors) plus ``lit_blind_prior.json`` (σ range, units, the
        optimizer steps trained)."""

        save_diffusers_ve(self.ema, directory, self.sigma_min, self.sigma_max, info={"trained_steps": self.global_step})


def export_checkpoint(checkpoint: str | Path, config: str | Path, directory: str | Path) -> None:
    """Export the EMA network of a ``fit`` checkpoint (e.g. an interrupted run's ``last.ckpt``) in diffusers
    format, rebuilding the UNet from the run's ``config.yaml``."""
    import yaml
    from diffusers import UNet2DModel

    cfg = yaml.safe_load(Path(config).read_text())["model"]["init_args"]
    unet = UNet2DModel(**cfg["unet"]["init_args"])
    module = ScoreTrainingModule.load_from_checkpoint(checkpoint, unet=unet, map_location="cpu")
    module.export(directory)
