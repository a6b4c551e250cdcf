"""Tables and kernel figures of BlindDeconvModule runs (paper Figs. 11–15): large vs small initialisation.

Reads each run folder's ``summary.json`` (kernel error and PSNR per problem) and ``kernels/*.png``, rebuilds
the true kernels from the run's own ``config.yaml`` (its ``BlurProblemsDataModule``), prints one table row per
(problem, init, run) and draws true and estimated kernels side by side, one row per problem:

    python benchmarks/blind_figures.py outputs/figs/simplex_paper outputs/figs/simplex_fast --out docs/fig12_simplex.png
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

import matplotlib
import numpy as np
import yaml
from PIL import Image

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _safe(pid: str) -> str:
    """The file stem BlindDeconvModule writes for a problem id."""
    return pid.replace("/", "_").replace("[", "").replace("]", "").replace(", ", "_")


def true_kernels(run: Path) -> dict[str, np.ndarray]:
    """Problem id → true kernel, from the DataModule of the run's config.yaml."""
    data = yaml.safe_load((run / "config.yaml").read_text())["data"]
    module, _, name = data["class_path"].rpartition(".")
    dm = getattr(importlib.import_module(module), name)(**data.get("init_args", {}))
    dm.setup("fit")
    problems = dm.problems
    if problems["h_true"] is None:
        return {}
    return {pid: problems["h_true"][i][0, 0].numpy() for i, pid in enumerate(problems["ids"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="BlindDeconvModule output folders (same problems)")
    ap.add_argument("--out", type=Path, default=None, help="figure path (PNG)")
    args = ap.parse_args()
    summaries = {run: json.loads((run / "summary.json").read_text()) for run in args.runs}
    truth = true_kernels(args.runs[0])
    print(f"{'problem':45s} {'init':6s} " + " ".join(f"{run.name:>24s}" for run in args.runs))
    print(f"{'':45s} {'':6s} " + " ".join(f"{'kernel err / PSNR':>24s}" for _ in args.runs))
    first = summaries[args.runs[0]]["problems"]
    for p in first:
        cells = []
        for run in args.runs:
            q = next(r for r in summaries[run]["problems"] if r["problem"] == p["problem"])
            cells.append(f"{q['kernel_error']:11.3f} / {q['psnr']:6.2f} dB")
        print(f"{p['problem'].rsplit('/', 1)[0]:45s} {p['init']:6s} " + " ".join(f"{c:>24s}" for c in cells))
    for run in args.runs:
        s = summaries[run]
        print(f"{run.name}: preset {s.get('preset')}, mean kernel error large {s.get('mean_kernel_error_large', float('nan')):.3f}, "
              f"small {s.get('mean_kernel_error_small', float('nan')):.3f}")  # fmt: skip
    if args.out is None:
        return
    bases = list(dict.fromkeys(p["problem"].rsplit("/", 1)[0] for p in first))
    inits = list(dict.fromkeys(p["init"] for p in first))
    cols = [("true", None, None)] + [(f"{run.name}\n{init}", run, init) for run in args.runs for init in inits]
    fig, axes = plt.subplots(len(bases), len(cols), figsize=(1.6 * len(cols), 1.7 * len(bases)), squeeze=False)
    for i, base in enumerate(bases):
        for j, (title, run, init) in enumerate(cols):
            ax = axes[i, j]
            if run is None:
                k = truth.get(f"{base}/{inits[0]}")
                err = None
            else:
                k = np.asarray(Image.open(run / "kernels" / f"{_safe(f'{base}/{init}')}.png"), dtype=float)
                err = next(r for r in summaries[run]["problems"] if r["problem"] == f"{base}/{init}")["kernel_error"]
            if k is not None:
                ax.imshow(k, cmap="gray")
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=7)
            if err is not None:
                ax.set_xlabel(f"err {err:.2f}", fontsize=7)
        axes[i, 0].set_ylabel(base.replace("/", "\n", 1)[:30], fontsize=6)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"figure: {args.out}")


if __name__ == "__main__":
    main()
