"""``PriorEvaluationModule``: runs an injected probe over a dataset of images with ``lit-blind test``.

Resumable and multi-process: rows go to ``<output_dir>/results.jsonl`` as soon as they are done and a
rerun skips them; under DDP image ``index`` is handled only by rank ``index % world_size``, which gives
every image to exactly one process, also with the duplicates that Lightning's ``DistributedSampler``
pads the last batch with. Rank 0 writes ``summary.json``, ``figures/*.png`` and TensorBoard figures
after a barrier. Gradients are enabled inside the step whatever ``trainer.inference_mode`` says (the
potential needs VJPs); ``inference_mode: false`` in the configs avoids the extra copy.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import torch

from lit_blind.priors import Prior
from lit_blind.probes import Probe
from lit_blind.results import ResultsFile, write_json


class PriorEvaluationModule(pl.LightningModule):
    """Evaluate ``probe`` on every test image under ``prior``; outputs under ``output_dir`` (DESIGN.md §4)."""

    def __init__(self, prior: Prior, probe: Probe, output_dir: str = "outputs/evaluation") -> None:
        super().__init__()
        self.prior = prior
        self.probe = probe
        self.output_dir = Path(output_dir)
        self._grid_logged = False

    def on_test_start(self) -> None:
        self.results = ResultsFile(self.output_dir, key=self.probe.key)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        rank, world = self.global_rank, self.trainer.world_size
        for j in range(batch["image"].shape[0]):
            index = int(batch["index"][j])
            if index % world != rank:  # another process owns it (or it is a sampler's padding duplicate)
                continue
            image_id = str(batch["image_id"][j])
            with torch.inference_mode(False), torch.enable_grad():
                x = batch["image"][j : j + 1].clone()
                item = {
                    k: v[j : j + 1]
                    for k, v in batch.items()
                    if k not in ("image", "image_id", "index") and hasattr(v, "shape")
                }
                rows = self.probe.run(self.prior, x, image_id, self.results, item=item)
                grid = None if self._grid_logged else self.probe.image_grid(x)
            self._log_rows(rows, grid, image_id)

    def _log_rows(self, rows: list[dict], grid, image_id: str) -> None:
        exp = getattr(self.logger, "experiment", None)
        if exp is None or not hasattr(exp, "add_scalar"):
            return
        for row in rows:
            for tag, value, step in self.probe.scalars(row):
                exp.add_scalar(tag, value, step)
        if grid is not None:
            import torchvision

            exp.add_image(f"inputs/{image_id}", torchvision.utils.make_grid(grid.cpu(), nrow=11), 0)
            self._grid_logged = True

    def on_test_end(self) -> None:
        self.trainer.strategy.barrier()
        if not self.trainer.is_global_zero:
            return
        rows = self.results.rows()
        summary = {"probe": type(self.probe).__name__, "prior": type(self.prior).__name__, "rows": len(rows)}
        summary.update(self.probe.summarize(rows))
        write_json(self.output_dir / "summary.json", summary)
        figures = self.probe.figures(rows)
        exp = getattr(self.logger, "experiment", None)
        for name, fig in figures.items():
            (self.output_dir / "figures").mkdir(parents=True, exist_ok=True)
            fig.savefig(self.output_dir / "figures" / f"{name}.png", dpi=120)
            if exp is not None and hasattr(exp, "add_figure"):
                exp.add_figure(name, fig, 0)
        print(json.dumps(summary, indent=2))
