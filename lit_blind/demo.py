"""``lit-blind demo``: blind deblurring of an embedded photograph, then Theorem 1 in closed form.

Part 1 (the main job, :func:`run_deblur_demo`): ``skimage.data.camera`` (64×64) blurred by a motion kernel
with noise σ_y = 0.01 is deblurred with the shipped ``natural-gray-small`` prior by Algorithm 1, once from
the large (uniform) and once from the small (Gaussian 1.5 px) kernel initialisation; images, kernels, a
comparison figure and TensorBoard logs go to ``out/deblur``.

Part 2 (:func:`run_demo`): an embedded photograph (``skimage.data.camera``, 128×128) is blurred by each 1-D family of §2.3 for
θ ∈ linspace(0, 5, 11) (31×31 kernels, circular boundary). Under the analytic :class:`GaussianPrior`
the potential q(h_θ ⋆ x) is known exactly; the probability-flow ODE (``dopri5``, one Hutchinson probe
shared by all 44 images: common random numbers) estimates the same numbers. Writes ``results.jsonl``,
``summary.json``, ``figures/blur_likelihood.png`` and ``figures/blurred.png`` under ``out``.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from lit_blind.api import deblur
from lit_blind.io import write_image
from lit_blind.kernels import family
from lit_blind.likelihood import potential, rademacher
from lit_blind.loading import load_prior
from lit_blind.marginal import marginal_em
from lit_blind.metrics import kernel_error, psnr
from lit_blind.physics import add_noise, blur
from lit_blind.priors import GaussianPrior
from lit_blind.results import ResultsFile, write_json

FAMILIES = ("gaussian", "motion", "airy", "defocus")


def camera(size: int = 128) -> torch.Tensor:
    """skimage's bundled ``camera`` photograph, area-downsampled to ``size``², ``(1, 1, size, size)`` float64."""
    from skimage import data

    x = torch.from_numpy(data.camera()).to(torch.float64)[None, None] / 255
    return torch.nn.functional.adaptive_avg_pool2d(x, size)


def run_deblur_demo(
    out: str | Path, prior_spec: str = "natural-gray-small", size: int = 64, K: int = 20, K_x: int = 100
) -> dict:
    """The paper's Algorithm 1 from the large and the small initialisation on a motion-blurred embedded photo."""
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    prior = load_prior(prior_spec)
    x = camera(size)
    h = family("motion", size=15, angle=30)(torch.tensor([[4.0]], dtype=torch.float64))
    y = add_noise(blur(x, h), 0.01, torch.Generator().manual_seed(0))
    write_image(out / "blurry.png", y.float())
    write_image(out / "sharp.png", x.float())
    summary: dict = {"prior": prior_spec, "image": f"skimage camera {size}x{size}", "K": K, "K_x": K_x}
    summary["blurry_psnr"] = psnr(y, x)
    results = {}
    for init in ("large", "small"):
        writer = SummaryWriter(str(out / "tensorboard" / init))
        bar = tqdm(total=K, desc=f"Algorithm 1, {init} init", unit="it")

        def log(s: dict, writer=writer, bar=bar) -> None:
            bar.set_postfix(f=f"{s['data_fidelity']:.3g}", refresh=False)
            bar.update(1)
            writer.add_scalar("deblur/data_fidelity", s["data_fidelity"], s["iteration"])
            writer.add_scalar("deblur/kernel_error", kernel_error(s["kernel"], h), s["iteration"])
            if s["iteration"] % 5 == 0:
                writer.add_image("deblur/kernel", (s["kernel"][0] / s["kernel"].max()).float(), s["iteration"])
                writer.add_image("deblur/image", s["x"][0].clamp(0, 1).float(), s["iteration"])

        t0 = time.perf_counter()
        res = deblur(
            y, prior, algorithm="alternating", kernel_size=15, init=init, sigma_y=0.01, K=K, K_x=K_x, callback=log
        )
        writer.close()
        bar.close()
        results[init] = res
        write_image(out / f"deblurred_{init}.png", res.image.float())
        write_image(out / f"kernel_{init}.png", (res.kernel[0] / res.kernel.max()).float())
        summary[init] = {
            "kernel_error": kernel_error(res.kernel, h),
            "psnr": psnr(res.image, x),
            "data_fidelity": res.history["data_fidelity"][-1],
            "kernel_error_vs_dirac": kernel_error(
                res.kernel, family("gaussian", size=15)(torch.zeros(1, 1, dtype=torch.float64))
            ),
            "seconds": time.perf_counter() - t0,
        }
    write_json(out / "summary.json", summary)
    _deblur_figure(out / "comparison.png", x, y, h, results)
    return summary


def run_em_demo(out: str | Path, prior_spec: str = "natural-gray-small", size: int = 256) -> dict:
    """The default blind method (:func:`~lit_blind.marginal.marginal_em`) on a real-size photo: ``camera``
    (``size``² after a valid-boundary motion blur, 15×15 kernel, σ_y = 0.01), kernel estimated at 21×21; PSNR
    of the blurry and the deblurred image against the sharp one, a progress bar per EM iteration."""
    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    prior, k_true, k_est = load_prior(prior_spec), 15, 21
    x = camera(size + k_true - 1)
    h = family("motion", size=k_true, angle=30)(torch.tensor([[4.0]], dtype=torch.float64))
    y = add_noise(blur(x, h, "valid"), 0.01, torch.Generator().manual_seed(0))
    x = x[..., k_true // 2 : -(k_true // 2), k_true // 2 : -(k_true // 2)]  # the part of x that y sees
    bar = tqdm(desc=f"EM deblurring {size}x{size}", unit="it")

    def progress(s: dict) -> None:
        bar.total = s["total"]
        bar.set_postfix(sigma=f"{s['sigma']:.3f}", f=f"{s['data_fidelity']:.3g}", refresh=False)
        bar.update(1)

    t0 = time.perf_counter()
    res = marginal_em(y, prior, k_est, callback=progress)
    bar.close()
    est = res.image[..., k_est // 2 : -(k_est // 2), k_est // 2 : -(k_est // 2)]
    summary = {
        "prior": prior_spec,
        "image": f"skimage camera {size}x{size}, valid-boundary motion blur",
        "blurry_psnr": psnr(y, x),
        "psnr": psnr(est, x),
        "kernel_error": kernel_error(res.kernel, h),
        "score_evals": res.history["score_evals"][-1],
        "seconds": time.perf_counter() - t0,
    }
    write_image(out / "em_blurry.png", y.float())
    write_image(out / "em_deblurred.png", est.float())
    write_image(out / "em_kernel.png", (res.kernel[0] / res.kernel.max()).float())
    write_json(out / "em_summary.json", summary)
    _em_figure(out / "comparison_em.png", y, est, h, res.kernel, summary)
    return summary


def _em_figure(path: Path, y, est, h, h_est, s: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(13, 3.8), gridspec_kw={"width_ratios": [1, 1, 0.45, 0.45]})
    for ax, img, title in (
        (axes[0], y, f"blurry, {s['blurry_psnr']:.2f} dB"),
        (axes[1], est, f"EM, {s['psnr']:.2f} dB"),
    ):
        ax.imshow(img[0, 0].clamp(0, 1).cpu(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title)
    gain = s["psnr"] - s["blurry_psnr"]
    axes[1].set_title(f"EM, {s['psnr']:.2f} dB ({gain:+.2f} dB)")
    for ax, k, title in ((axes[2], h, "true kernel"), (axes[3], h_est, f"estimate (error {s['kernel_error']:.2f})")):
        ax.imshow(k[0, 0].cpu(), cmap="gray")
        ax.set_title(title, fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _deblur_figure(path: Path, x, y, h, results) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("sharp", x), ("blurry", y)] + [(f"{k} init", r.image) for k, r in results.items()]
    kernels = [("true kernel", h), ("", None)] + [(f"{k} init", r.kernel) for k, r in results.items()]
    fig, axes = plt.subplots(2, 4, figsize=(10, 5.4))
    for j, (title, img) in enumerate(panels):
        axes[0, j].imshow(img[0, 0].clamp(0, 1).cpu(), cmap="gray", vmin=0, vmax=1)
        axes[0, j].set_title(title)
    for j, (title, k) in enumerate(kernels):
        if k is not None:
            axes[1, j].imshow(k[0, 0].cpu(), cmap="gray")
            axes[1, j].set_title(title)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_demo(out: str | Path, size: int = 128, seed: int = 0) -> dict:
    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    x = camera(size)
    prior = GaussianPrior()
    sigma_eps = prior.sigma_min
    thetas = torch.linspace(0, 5, 11, dtype=torch.float64)
    blurred = torch.cat([blur(x, family(name, size=31)(thetas[:, None])) for name in FAMILIES])
    exact = -prior.log_prob(blurred, sigma_eps)
    print(f"Theorem 1: probability-flow ODE (dopri5) on {len(blurred)} blurred images as one batch ...", flush=True)
    t0 = time.perf_counter()
    probe = rademacher((1, 1, *x.shape[1:]), torch.Generator().manual_seed(seed))
    ode = potential(prior, blurred, solver="dopri5", probes=probe)
    seconds = time.perf_counter() - t0

    results = ResultsFile(out, key=("family", "theta"))
    summary: dict = {"sigma_eps": sigma_eps, "image": f"skimage camera {size}x{size}", "families": {}}
    for f, name in enumerate(FAMILIES):
        q = exact[f * 11 : (f + 1) * 11]
        q_ode = ode.value[f * 11 : (f + 1) * 11]
        for i, th in enumerate(thetas.tolist()):
            row = {
                "family": name,
                "theta": th,
                "potential_exact": q[i].item(),
                "potential_ode": q_ode[i].item(),
            }
            if not results.done(row):
                results.append({**row, "nfe": int(ode.nfe[f * 11 + i])})
        summary["families"][name] = {
            "strictly_decreasing": bool((q.diff() < 0).all()),
            "decrease_q0_minus_q5": (q[0] - q[-1]).item(),
            "max_abs_ode_error": (q_ode - q).abs().max().item(),
            "max_abs_ode_error_of_differences": ((q_ode - q_ode[0]) - (q - q[0])).abs().max().item(),
        }
    summary["ode"] = {
        "solver": "dopri5",
        "rtol": 1e-5,
        "seconds": seconds,
        "mean_nfe": ode.nfe.double().mean().item(),
    }
    write_json(out / "summary.json", summary)
    _figures(out, x, blurred, exact, ode.value, thetas)
    return summary


def _figures(out: Path, x, blurred, exact, ode, thetas) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for f, name in enumerate(FAMILIES):
        q0 = exact[f * 11]
        ax.plot(thetas, exact[f * 11 : (f + 1) * 11] - q0, label=f"{name} (exact)")
        ax.plot(thetas, ode[f * 11 : (f + 1) * 11] - q0, "k.", ms=4)
    ax.set_xlabel("blur level θ (px)")
    ax.set_ylabel("q(h_θ ⋆ x) − q(x)  [nats]")
    ax.set_title("Gaussian prior: blurry images are more likely (dots: ODE)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "figures" / "blur_likelihood.png", dpi=120)
    plt.close(fig)
    fig, axes = plt.subplots(len(FAMILIES), 4, figsize=(8, 8))
    for f, name in enumerate(FAMILIES):
        for j, i in enumerate((0, 4, 7, 10)):
            axes[f, j].imshow(blurred[f * 11 + i, 0].clamp(0, 1), cmap="gray", vmin=0, vmax=1)
            axes[f, j].set_title(f"{name} θ={thetas[i]:.1f}", fontsize=8)
            axes[f, j].axis("off")
    fig.tight_layout()
    fig.savefig(out / "figures" / "blurred.png", dpi=100)
    plt.close(fig)
