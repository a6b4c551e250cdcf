"""``lit-blind fit|validate|test|predict``: LightningCLI over any LightningModule / DataModule named by
``class_path`` in the YAML configs of ``configs/``."""

from __future__ import annotations

import importlib
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback


class SaveConfigToOutputDir(SaveConfigCallback):
    """Write ``config.yaml`` (as run) into the module's ``output_dir`` when it has one, else into the logger's
    directory; a run with neither writes none (Lightning's default would drop it in the working directory)."""

    def save_config(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        out = getattr(pl_module, "output_dir", None)
        if out is None and trainer.logger is not None:
            out = trainer.logger.log_dir
        if out is not None and trainer.is_global_zero:
            Path(out).mkdir(parents=True, exist_ok=True)
            self.parser.save(self.config, Path(out) / self.config_filename, skip_none=False, overwrite=True)


class LitBlindCLI(LightningCLI):
    """LightningCLI; ``test`` of a ``PriorEvaluationModule`` runs without Lightning's ``DistributedSampler``:
    the module deals out the images still to do itself, which keeps every process busy in a resumed run."""

    def before_instantiate_classes(self) -> None:
        from lit_blind.modules import PriorEvaluationModule

        if self.subcommand != "test":
            return
        config = self.config["test"]
        module, _, name = str(config.model.class_path).rpartition(".")
        if module and issubclass(getattr(importlib.import_module(module), name), PriorEvaluationModule):
            config.trainer.use_distributed_sampler = False


def run_lightning_cli(args: list[str] | None) -> LightningCLI:
    """LightningCLI on ``args`` (``None``: the command line)."""
    return LitBlindCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=SaveConfigToOutputDir,
        save_config_kwargs={"overwrite": True, "save_to_log_dir": False},
        args=args,
    )
