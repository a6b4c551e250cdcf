"""The probe protocol as PriorEvaluationModule runs it: only missing keys reach a probe, rows land as they
are yielded, a failing input becomes error rows and the run goes on."""

import pytest
import torch

from lit_blind.modules import PriorEvaluationModule
from lit_blind.priors import GaussianPrior
from lit_blind.probes import Probe
from lit_blind.results import ResultsFile


class ThreeRows(Probe):
    """Rows a, b, c per image; image 'bad' fails after its first row."""

    key = ("image_id", "part")

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def row_keys(self, image_id):
        return [{"image_id": image_id, "part": p} for p in "abc"]

    def run(self, prior, x, image_id, todo, item=None):
        self.calls.append([k["part"] for k in todo])
        for n, key in enumerate(todo):
            if image_id == "bad" and n == 1:
                raise FloatingPointError("score is NaN")
            yield key | {"value": float(x.sum())}

    def summarize(self, rows):
        return {}


def _module(tmp_path, probe):
    module = PriorEvaluationModule(GaussianPrior(), probe, str(tmp_path))
    module.results = ResultsFile(tmp_path, key=probe.key)
    return module


def test_only_missing_keys_reach_the_probe_and_failures_become_error_rows(tmp_path):
    probe = ThreeRows()
    module = _module(tmp_path, probe)
    module.results.append({"image_id": "good", "part": "b", "value": -1.0})  # a resumed run
    x = torch.ones(1, 1, 2, 2)
    rows = module._run_probe(x, "good", {})
    assert probe.calls == [["a", "c"]] and [r["part"] for r in rows] == ["a", "c"]
    rows = module._run_probe(x, "bad", {})
    assert [(r["part"], "error" in r) for r in rows] == [("a", False), ("b", True), ("c", True)]
    assert rows[1]["error"] == "FloatingPointError: score is NaN"
    assert module._run_probe(x, "good", {}) == [] and len(probe.calls) == 2  # nothing left: not even called
    stored = ResultsFile(tmp_path, key=probe.key).rows()
    assert len(stored) == 6 and sum("error" in r for r in stored) == 2


def test_a_probe_gets_the_run_folder(tmp_path):
    from types import SimpleNamespace

    from lit_blind.probes import CriticalPointProbe

    probe = CriticalPointProbe(steps=2, record_every=1, exact=True)
    module = PriorEvaluationModule(GaussianPrior(), probe, str(tmp_path))
    module._trainer = SimpleNamespace(
        world_size=1, test_dataloaders=None, is_global_zero=True, strategy=SimpleNamespace(barrier=lambda: None)
    )
    module.on_test_start()
    assert probe.output_dir == tmp_path
    (row,) = module._run_probe(torch.full((1, 1, 4, 4), 0.5, dtype=torch.float64), "img", {})
    assert (tmp_path / "critical_points" / "img.pt").is_file() and row["grad_norm"] >= 0


def test_oracle_init_starts_from_the_true_kernel(tmp_path, shared_data):
    from lit_blind.data import LevinDataModule
    from lit_blind.loading import load_prior
    from lit_blind.priors import native_bf16
    from lit_blind.probes import DeblurProbe

    with pytest.raises(ValueError, match="scales=1"):
        DeblurProbe(inits=["oracle"], scales=2)
    dm = LevinDataModule(root=str(shared_data / "levin09"), images=[1], kernels=[3])
    dm.setup()
    item = dm.items[0]
    prior = load_prior("natural-gray-small")
    extra = {"sharp": item["sharp"][None], "kernel": item["kernel"][None]}
    held = DeblurProbe(inits=["oracle"], K=1, K_x=1, theta_start=1)  # the kernel is never stepped
    held.output_dir = tmp_path / "held"
    (row,) = held.run(prior, item["image"][None], "im1_kernel3", held.row_keys("im1_kernel3"), item=extra)
    assert row["kernel_error"] < 1e-9 and abs(row["error_ratio"] - 1) < 1e-3
    assert (tmp_path / "held" / "estimates" / "im1_kernel3_oracle_kernel.npy").is_file()
    assert (tmp_path / "held" / "estimates" / "im1_kernel3_true_kernel.npy").is_file()
    # one outer iteration from x = y: the θ steps fit the kernel to a still blurry x and leave the truth
    free = DeblurProbe(inits=["oracle"], K=1, K_x=1)
    free.output_dir = tmp_path / "free"
    (row,) = free.run(prior, item["image"][None], "im1_kernel3", free.row_keys("im1_kernel3"), item=extra)
    assert row["kernel_error"] > 0.3 and row["no_blur_distance"] < 0.95
    # EM from the true kernel (finest level only, one outer iteration, no polishing) against EM from the uniform kernel
    one = {"iters": 1, "min_kernel": 31, "polish": 0}
    em = DeblurProbe(inits=["oracle", "large"], algorithm="em", preset=None, em_options=one)
    em.output_dir = tmp_path / "em"
    oracle, large = em.run(prior, item["image"][None], "im1_kernel3", em.row_keys("im1_kernel3"), item=extra)
    assert oracle["init"] == "oracle" and oracle["kernel_error"] < large["kernel_error"] - 0.1  # 0.67 vs 0.81
    # the method's own seconds exclude the error ratio's two non-blind solves, the row's seconds include them
    assert 0 < large["deblur_seconds"] < large["seconds"]
    assert large["precision"] == ("bf16-mixed" if native_bf16("cpu") else "32-true") and "precision" not in row
    summary = em.summarize([oracle, large])["large"]
    assert summary["deblur_seconds_per_image"] == large["deblur_seconds"]
    assert (
        "deblur_seconds_per_image"
        not in em.summarize([{k: v for k, v in large.items() if k != "deblur_seconds"}])["large"]
    )
