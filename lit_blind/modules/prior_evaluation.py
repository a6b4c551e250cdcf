"""``PriorEvaluationModule``: runs an injected probe over a dataset of images with ``lit-blind test``.

Resumable and multi-process: rows go to ``<output_dir>/results.jsonl`` as soon as the probe yields them, a
rerun runs a probe only on the row keys still missing, and a failing input (a non-finite score, a
floating-point error) becomes an ``error`` row for each of its missing keys instead of ending the run
(:mod:`lit_blind.probes.base`). Under DDP every image goes to exactly one process. When every process sees the whole
test set (``trainer.use_distributed_sampler: false``, which ``lit-blind test`` sets for this module) the
images that still miss a row (``Probe.row_keys``) are dealt out in turn, so a resumed run keeps every
process busy; with Lightning's ``DistributedSampler`` rank ``index % world_size`` takes image ``index``
(the sampler's own split; it also drops the duplicates the sampler pads the last batch with), which can
leave one process with all the remaining work of a resumed run. Rank 0 writes ``summary.json``,
``figures/*.png`` and TensorBoard figures after a barrier. Gradients are enabled inside the step
whatever ``trainer.inference_mode`` says (the potential needs VJPs); ``inference_mode: false`` in the
configs avoids the extra copy.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, DistributedSampler

from lit_blind.priors import Prior
from lit_blind.probes import Probe
from lit_blind.probes.base import json_settings
from lit_blind.results import ResultsFile, write_json

INPUT_ERRORS = (FloatingPointError,)  # NonFiniteScoreError included: failures of one input, not of the run


class PriorEvaluationModule(pl.LightningModule):
    """Evaluate ``probe`` on every test image under ``prior``; outputs under ``output_dir`` (DESIGN.md §4)."""

    def __init__(self, prior: Prior, probe: Probe, output_dir: str = "outputs/evaluation") -> None:
        super().__init__()
        self.prior = prior
        self.probe = probe
        self.output_dir = Path(output_dir)
        self._grid_logged = False

    def run_settings(self) -> dict:
        """What a resumed run must share with the run that wrote ``output_dir``: the prior (its class and
        JSON-representable attributes, e.g. a loaded prior's spec and σ range) and the probe (its class and
        :meth:`~lit_blind.probes.Probe.settings`)."""
        return {
            "prior": {"class": type(self.prior).__name__} | json_settings(self.prior, skip={"training"}),
            "probe": {"class": type(self.probe).__name__} | self.probe.settings(),
        }

    def _check_resume(self) -> None:
        """Refuse to add rows to a folder written under another prior or other probe settings (its rows would be
        mixed with this run's in the summary); record this run's settings in ``run.json`` otherwise."""
        path, mine = self.output_dir / "run.json", self.run_settings()
        if path.is_file():
            theirs = json.loads(path.read_text())
            if theirs != mine:
                diff = sorted(
                    f"{part}.{k}" for part in mine for k in {*mine[part], *theirs.get(part, {})}
                    if mine[part].get(k) != theirs.get(part, {}).get(k)
                )  # fmt: skip
                raise ValueError(
                    f"output_dir {self.output_dir} holds the results of another run ({', '.join(diff)} differ, "
                    f"see its run.json): resume it with the same prior and probe settings, or choose a new output_dir "
                    "(--model.init_args.output_dir)"
                )
        elif self.trainer.is_global_zero:
            write_json(path, mine)

    def on_test_start(self) -> None:
        self._check_resume()
        self.results = ResultsFile(self.output_dir, key=self.probe.key)
        if self.probe.output_dir is None:
            self.probe.output_dir = self.output_dir
        self._owner = self._deal_images()
        self.trainer.strategy.barrier()  # every process has read results.jsonl before any appends to it

    def _deal_images(self) -> dict[int, int]:
        """Image index → the rank that runs it: the images with a row still missing, in turn, when every
        process iterates over the whole test set; empty (rank ``index % world_size``) otherwise."""
        world, loader = self.trainer.world_size, self.trainer.test_dataloaders
        if world == 1 or not isinstance(loader, DataLoader) or isinstance(loader.sampler, DistributedSampler):
            return {}
        items = (loader.dataset[i] for i in range(len(loader.dataset)))
        todo = [
            int(item["index"])
            for item in items
            if any(not self.results.done(k) for k in self.probe.row_keys(str(item["image_id"])))
        ]
        return {index: n % world for n, index in enumerate(todo)}

    def test_step(self, batch: dict, batch_idx: int) -> None:
        rank, world = self.global_rank, self.trainer.world_size
        for j in range(batch["image"].shape[0]):
            index = int(batch["index"][j])
            if self._owner.get(index, index % world) != rank:  # another process owns it (or a padding duplicate)
                continue
            image_id = str(batch["image_id"][j])
            with torch.inference_mode(False), torch.enable_grad():
                x = batch["image"][j : j + 1].clone()
                item = {
                    k: v[j : j + 1]
                    for k, v in batch.items()
                    if k not in ("image", "image_id", "index") and hasattr(v, "shape")
                }
                rows = self._run_probe(x, image_id, item)
                grid = None if self._grid_logged or not rows else self.probe.image_grid(x)
            self._log_rows(rows, grid, image_id)

    def _run_probe(self, x: torch.Tensor, image_id: str, item: dict) -> list[dict]:
        """The probe on the keys of ``image_id`` still missing; each row appended as soon as it is yielded;
        a failing input leaves an ``error`` row for each key it did not finish."""
        todo = [key for key in self.probe.row_keys(image_id) if not self.results.done(key)]
        rows: list[dict] = []
        if not todo:
            return rows
        try:
            for row in self.probe.run(self.prior, x, image_id, todo, item=item):
                if not self.results.done(row):
                    self.results.append(row)
                    rows.append(row)
        except INPUT_ERRORS as err:
            for key in todo:
                if not self.results.done(key):
                    row = key | {"error": f"{type(err).__name__}: {err}"}
                    self.results.append(row)
                    rows.append(row)
        return rows

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
