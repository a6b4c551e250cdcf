"""One GPU lease, end to end (issue 15): train the paper-size binarised-MNIST prior, export it, time it.

Stages, each a subprocess with its own time limit inside one overall budget, so that a failing stage costs
only itself and the table is printed whatever happens:

1. **fit** — ``lit-blind fit --config configs/fit/mnist_binarized_ve.yaml`` with bf16 autocast
   (``--trainer.precision bf16-mixed``) for ``--train-seconds`` (Lightning's ``max_time``), validation
   loss on 10 batches every epoch, no sample grids (they are drawn on CPU for the model card), checkpoints
   every 2,000 steps (resume with ``--ckpt_path``, on a machine that kept the output folder).
2. **export** — the EMA network in fp16 safetensors shards of at most 15 MB (``save_pretrained``), plus
   ``export_scores.json``: the fp32 network's scores at a few seeded inputs (TF32 off) and the largest
   difference of the fp16 copy from them, which a test of the shipped prior can check it against; and the EMA
   network's validation loss, as ``validation_step`` computes it, on the first 10 test batches.
3. **train step** — milliseconds per training step of the fit's UNet, eager and under ``torch.compile`` (where
   the fit's steps/s go: 9.2 steps/s on an H200 in the twenty-first session).
4. **timing** — Table 1 (``configs/experiments/timing.yaml``) for mnist-small, the new prior and
   natural-gray-small on the GPU.
5. **benchmarks** — ``benchmarks/likelihood.py`` and ``benchmarks/hessian.py`` with ``--device cuda``.

Everything goes to ``--out``: the fp16 shards, ``mnist_meta.tar`` (config, index, σ range, export
scores, the fit's config and TensorBoard log), ``session.log`` and ``table.md``. The table is printed last.

    python benchmarks/gpu_session.py --out $OUT [--train-seconds 240] [--budget 540]
    python benchmarks/gpu_session.py --out /tmp/gpu --tiny      # the CPU rehearsal: tiny UNet, minutes

On a machine whose Python lacks diffusers, deepinv and jsonargparse (the lent GPU's image), with their wheels
(and docstring_parser, typeshed_client, importlib_metadata, lazy_importer, natsort) downloaded into ``.whl/`` and
the MNIST IDX files copied into ``.gpu/data/mnist``, as the twenty-first session ran it::

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
    PYTHONPATH=/tmp/site:$PWD LIT_BLIND_DATA=$PWD/.gpu/data python3 benchmarks/gpu_session.py
        --out $OUT --work /tmp/work --train-seconds 300 --budget 540   (one command line)
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import torch

from lit_blind.probes.base import synchronize

REPO = Path(__file__).resolve().parents[1]
SHARD = "15MB"
EXPORT_SIGMAS = (0.05, 0.5, 5.0)


def run_stage(name: str, cmd: list[str], limit: float, log) -> tuple[str, float, str]:
    """Run one stage; its output goes to the log as it comes. Returns (status, seconds, output)."""
    print(f"\n== {name}: {' '.join(cmd)} (limit {limit:.0f} s)", file=log, flush=True)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=max(limit, 1), check=False)
        out, status = proc.stdout + proc.stderr, "ok" if proc.returncode == 0 else f"exit {proc.returncode}"
    except subprocess.TimeoutExpired as err:
        out = (err.stdout or b"").decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        status = "timed out"
    log.write(out)
    log.flush()
    return status, time.perf_counter() - t0, out


def export_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """The seeded inputs whose scores the export records: binary 32×32 images plus noise at each σ."""
    gen = torch.Generator().manual_seed(0)
    x0 = (torch.rand(len(EXPORT_SIGMAS), 1, 32, 32, generator=gen) > 0.5).float()
    sigma = torch.tensor(EXPORT_SIGMAS)
    return x0 + sigma[:, None, None, None] * torch.randn(x0.shape, generator=gen), sigma


def export(fit_dir: Path, dest: Path, device: torch.device) -> dict:
    """The EMA network's validation loss, then its fp16 shards and the export scores."""
    from itertools import islice

    import yaml

    from lit_blind.data import BinarizedMNISTDataModule
    from lit_blind.loading import load_diffusers_ve, save_diffusers_ve
    from lit_blind.modules.score_training import ScoreTrainingModule, export_checkpoint

    if not (fit_dir / "prior" / "config.json").is_file():  # a fit cut before on_train_end: its last checkpoint
        export_checkpoint(fit_dir / "checkpoints" / "last.ckpt", fit_dir / "config.yaml", fit_dir / "prior")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    prior = load_diffusers_ve(fit_dir / "prior").to(device)
    # the fp32 EMA network's validation loss as validation_step computes it (the same noise per batch index), on the
    # fit's own validation batches (its config's data section; the fit ran with limit_val_batches 10)
    data = BinarizedMNISTDataModule(**yaml.safe_load((fit_dir / "config.yaml").read_text())["data"]["init_args"])
    data.setup("fit")
    module = ScoreTrainingModule(prior.unet, prior.sigma_min, prior.sigma_max)
    with torch.no_grad():
        losses = [
            float(module.loss(module.unet, b.to(device), torch.Generator().manual_seed(i)))
            for i, (b,) in enumerate(islice(data.val_dataloader(), 10))
        ]
    y, sigma = export_inputs()
    with torch.no_grad():
        ref = prior.score(y.to(device), sigma.to(device)).cpu()
    info = json.loads((fit_dir / "prior" / "lit_blind_prior.json").read_text())
    info = {k: v for k, v in info.items() if k not in ("kind", "sigma_min", "sigma_max", "pixel_range")}
    info["weights"] = "EMA, fp16"
    save_diffusers_ve(prior.unet.half(), dest, prior.sigma_min, prior.sigma_max, max_shard_size=SHARD, info=info)
    half = load_diffusers_ve(dest).to(device)
    with torch.no_grad():
        fp16 = half.score(y.to(device), sigma.to(device)).cpu()
    scores = {
        "inputs": "export_inputs() of benchmarks/gpu_session.py: torch.Generator seed 0, rand > 0.5, + σ randn",
        "input_sum": float(y.double().sum()),
        "sigmas": list(EXPORT_SIGMAS),
        "fp32_scores": [[round(v, 6) for v in s.flatten().tolist()] for s in ref],
        "fp16_max_abs_diff": [float((a - b).abs().max()) for a, b in zip(fp16, ref, strict=True)],
        "fp32_abs_max": [float(s.abs().max()) for s in ref],
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    }
    (dest / "export_scores.json").write_text(json.dumps(scores) + "\n")
    return {"val_loss": sum(losses) / len(losses), "fp16_max_abs_diff": max(scores["fp16_max_abs_diff"])}


def fit_steps(fit_dir: Path) -> int | None:
    """The optimizer steps of the exported EMA network (``lit_blind_prior.json``), else of the last checkpoint."""
    meta, ckpt = fit_dir / "prior" / "lit_blind_prior.json", fit_dir / "checkpoints" / "last.ckpt"
    if meta.is_file():
        return json.loads(meta.read_text()).get("trained_steps")
    return int(torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"]) if ckpt.is_file() else None


def collect(out: Path, prior_dir: Path, fit_dir: Path) -> None:
    """Copy what comes back from the lease into OUT: the fp16 shards, and one tar of the prior's small files,
    the fit's config and its TensorBoard log."""
    with tarfile.open(out / "mnist_meta.tar", "w") as tar:
        for f in sorted(prior_dir.glob("*")) if prior_dir.is_dir() else []:
            if f.suffix != ".safetensors":
                tar.add(f, arcname=f"mnist/{f.name}")
        for f in [fit_dir / "config.yaml", *fit_dir.glob("tensorboard/*/events.*")]:
            if f.is_file():
                tar.add(f, arcname=f"fit/{f.name}")
    for shard in sorted(prior_dir.glob("*.safetensors")) if prior_dir.is_dir() else []:
        shutil.copy2(shard, out / shard.name)


def write_table(out: Path, rows: list[tuple[str, str, float, str]], cuda: bool, seconds: float) -> str:
    """The session's table so far, written to OUT/table.md and returned."""
    where = torch.cuda.get_device_name() if cuda else "CPU (rehearsal)"
    table = [
        f"device: {where}, total {seconds:.0f} s",
        "",
        "| stage | status | seconds | result |",
        "|---|---|---|---|",
    ]
    table += [f"| {a} | {b} | {c:.0f} | {d} |" if a else f"| | | | {d} |" for a, b, c, d in rows]
    (out / "table.md").write_text("\n".join(table) + "\n")
    return "\n".join(table)


def _timed_steps(step, steps: int, device: torch.device) -> float:
    """Seconds of ``steps`` calls of ``step``, the device's queued work included."""
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return time.perf_counter() - t0


def train_step_ms(device: torch.device, tiny: bool, steps: int = 20) -> dict[str, float]:
    """Milliseconds per training step of the fit config's UNet (batch 128, bf16 autocast on CUDA, Adam), eager and
    under ``torch.compile`` (its first step, the compilation, apart): where the fit's steps/s go."""
    from functools import partial

    import yaml
    from diffusers import UNet2DModel

    from lit_blind.modules.score_training import ScoreTrainingModule

    cfg = yaml.safe_load((REPO / "configs/fit/mnist_binarized_ve.yaml").read_text())["model"]["init_args"]
    unet_kw = cfg["unet"]["init_args"] | (
        {"block_out_channels": [32, 32, 32, 32], "layers_per_block": 1} if tiny else {}
    )
    x = (torch.rand(8 if tiny else 128, 1, 32, 32, device=device) > 0.5).float()
    out = {}
    for mode in ("eager", "compiled"):
        module = ScoreTrainingModule(UNet2DModel(**unet_kw), cfg["sigma_min"], cfg["sigma_max"]).to(device)
        net = torch.compile(module.unet) if mode == "compiled" else module.unet
        opt = torch.optim.Adam(module.unet.parameters(), lr=1e-4)
        step = partial(_train_step, module, net, opt, x)
        out[f"{mode} first step s"] = _timed_steps(step, 1, device)
        out[f"{mode} ms/step"] = _timed_steps(step, steps, device) / steps * 1e3
    return out


def _train_step(module, net, opt, x: torch.Tensor) -> None:
    """One optimizer step of the denoising score-matching loss, bf16 autocast on CUDA."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=x.device.type == "cuda"):
        loss = module.loss(net, x)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--train-seconds", type=int, default=240)
    ap.add_argument("--budget", type=float, default=540, help="seconds for all stages together")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (checkpoints, logs); default OUT/work")
    ap.add_argument("--tiny", action="store_true", help="CPU rehearsal: a tiny UNet and a few steps per stage")
    args = ap.parse_args()
    start = time.perf_counter()
    out, work = args.out, args.work or args.out / "work"
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available() and not args.tiny
    device = torch.device("cuda" if cuda else "cpu")
    py = [sys.executable]
    left = lambda: args.budget - (time.perf_counter() - start)  # noqa: E731
    rows: list[tuple[str, str, float, str]] = []
    log = open(out / "session.log", "w")  # noqa: SIM115 (kept open for every stage)

    fit_dir = work / "fit"
    fit = [
        *py, "-m", "lit_blind.cli", "fit", "--config", "configs/fit/mnist_binarized_ve.yaml",
        "--trainer.accelerator", "gpu" if cuda else "cpu", "--trainer.devices", "1",
        "--trainer.precision", "bf16-mixed", "--trainer.max_time", f"00:00:{args.train_seconds // 60:02d}:{args.train_seconds % 60:02d}",
        "--trainer.limit_val_batches", "10", "--trainer.enable_progress_bar", "false",
        "--model.init_args.n_samples", "0", "--model.init_args.output_dir", str(fit_dir),
    ]  # fmt: skip
    if args.tiny:
        fit += ["--model.init_args.unet.init_args.block_out_channels", "[32, 32, 32, 32]",
                "--model.init_args.unet.init_args.layers_per_block", "1",
                "--trainer.limit_train_batches", "3", "--trainer.max_epochs", "2"]  # fmt: skip
    status, secs, _ = run_stage("fit", fit, min(args.train_seconds + 120, left() - 60), log)
    steps = fit_steps(fit_dir)
    rows.append(
        ("fit (bf16-mixed)", status, secs, f"{steps} steps, {steps / args.train_seconds:.1f} steps/s" if steps else "-")
    )

    prior_dir = work / "mnist"
    t0 = time.perf_counter()
    try:
        res = export(fit_dir, prior_dir, device)
        rows.append(("export fp16", "ok", time.perf_counter() - t0,
                     f"val loss {res['val_loss']:.4f}, fp16 max |Δs| {res['fp16_max_abs_diff']:.2g}"))  # fmt: skip
    except Exception as err:  # noqa: BLE001 (the table reports any failure and the session goes on)
        rows.append(("export fp16", f"failed: {type(err).__name__}: {err}"[:200], time.perf_counter() - t0, "-"))
    collect(out, prior_dir, fit_dir)  # the prior is safe under OUT even if a later stage overruns the lease
    write_table(out, rows, cuda, time.perf_counter() - start)

    probe = (
        "import json, sys, torch; sys.path.insert(0, 'benchmarks'); from gpu_session import train_step_ms; "
        f"print('TRAIN_STEP', json.dumps(train_step_ms(torch.device('{device}'), {args.tiny})))"
    )
    status, secs, text = run_stage("train step", [*py, "-c", probe], min(240, left() - 200), log)
    found = [json.loads(ln.split(" ", 1)[1]) for ln in text.splitlines() if ln.startswith("TRAIN_STEP ")]
    info = ", ".join(f"{k} {v:.1f}" for k, v in found[0].items()) if found else "-"
    rows.append(("train step (batch 128)", status, secs, info))
    write_table(out, rows, cuda, time.perf_counter() - start)

    timing = {
        "mnist-small": ["--config", "configs/priors/mnist_small.yaml", "--data.init_args.limit", "3"],
        "mnist (new)": ["--config", "configs/priors/mnist_small.yaml", "--data.init_args.limit", "3",
                        "--model.init_args.prior.init_args.spec", str(prior_dir)],
        "natural-gray-small": ["--config", "configs/priors/natural_gray_small.yaml"],
    }  # fmt: skip
    for name, extra in timing.items():
        tdir = work / f"timing_{name.split()[0]}"
        cmd = [*py, "-m", "lit_blind.cli", "test", "--config", "configs/experiments/timing.yaml", *extra,
               "--trainer.accelerator", "gpu" if cuda else "cpu", "--trainer.devices", "1",
               "--model.init_args.output_dir", str(tdir)]  # fmt: skip
        if args.tiny:
            cmd += [
                "--model.init_args.probe.init_args.solver",
                "expint",
                "--model.init_args.probe.init_args.steps",
                "4",
            ]
            cmd += ["--data.init_args.limit", "1"] if "mnist" in name else ["--data.init_args.embedded", "[camera]"]
        status, secs, _ = run_stage(f"timing {name}", cmd, min(150, left() - 30), log)
        summary = tdir / "summary.json"
        if summary.is_file():
            s = json.loads(summary.read_text())
            info = (
                f"{s['images']} images, model eval {s['model_eval_seconds_per_image']:.4f} s, "
                f"potential {s['potential_seconds_per_image']:.2f} s, NFE {s['mean_nfe']:.0f} ({s['device']})"
            )
        else:
            info = "-"
        rows.append((f"timing {name}", status, secs, info))
        write_table(out, rows, cuda, time.perf_counter() - start)

    device_flag = ["--device", "cuda"] if cuda else []
    benches = {
        "likelihood.py": [*py, "benchmarks/likelihood.py", "--images", "1", *device_flag]
        + (["--prior", "tiny", "--size", "32"] if args.tiny else []),
        "hessian.py": [*py, "benchmarks/hessian.py", "--points", "1", *device_flag],
    }
    for name, cmd in benches.items():
        status, secs, text = run_stage(name, cmd, min(200, left() - 10), log)
        lines = [ln for ln in text.splitlines() if ln.startswith("|") or "speed-up" in ln or " paper " in ln]
        rows.append((name, status, secs, f"{len(lines)} table lines in session.log"))
        for ln in lines:
            rows.append(("", "", 0.0, ln.strip()))

    collect(out, prior_dir, fit_dir)
    print(write_table(out, rows, cuda, time.perf_counter() - start))
    log.close()


if __name__ == "__main__":
    main()
