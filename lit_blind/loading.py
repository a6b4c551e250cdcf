"""``load_prior(spec)``: a :class:`~lit_blind.priors.Prior` in [0, 1] units from a name or a path.

Accepted specs (this module grows with the loaders of the pretrained models):

* ``"gaussian"`` / ``"gaussian-rgb"`` — the analytic :class:`~lit_blind.priors.GaussianPrior`, 1 or 3
  channels (keyword arguments forwarded);
* a shipped prior name (``"mnist-small"``, ``"natural-gray-small"``): a folder under ``checkpoints/`` of the
  repository, or under ``$LIT_BLIND_CHECKPOINTS``;
* a diffusers ``UNet2DModel`` folder (``config.json`` + weights) or hub id (``google/ncsnpp-ffhq-256``, needs
  the network once) whose output is the VE score in [0, 1] units; its σ range
  comes from ``lit_blind_prior.json`` beside the weights (written by ``ScoreTrainingModule.export``) or
  from ``sigma_min`` / ``sigma_max`` keyword arguments;
* a denoiser state dict (``.pth``), recognised by its keys: DnCNN and FFDNet in the KAIR layout (e.g.
  ``dncnn_25.pth``, ``ffdnet_gray.pth``; mapped onto deepinv's ``DnCNN`` / ``FFDNet``) and deepinv's
  ``DRUNet`` — usable by Algorithm 2 and, through Tweedie, as scores within their σ range;
* ``kind="edm-ncsnpp"`` / ``"edm-adm"``: deepinv's EDM ``NCSNpp`` (FFHQ-64, AFHQ-64) / ``ADMUNet``
  (ImageNet-64, ``class_label`` argument) state dicts, σ ∈ [0.001, 40] in [0, 1] units;
* an original NVlabs EDM ``.pkl``: unpickling runs code from the file, so only with ``trusted=True``
  (and NVlabs/edm's ``torch_utils`` / ``dnnlib`` importable); its network works on [−1, 1] and is adapted
  at the edge.

* a score_sde_pytorch checkpoint ``.pth`` (dict with model / ema / optimizer / step, recognised by its keys):
  its NCSN++ **EMA** weights mapped strictly into the equivalent diffusers ``UNet2DModel``
  (:func:`load_score_sde`; architecture arguments default to the paper's FFHQ-256 model, σ ∈ [0.01, 348]).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from lit_blind.io import data_path
from lit_blind.priors import DenoiserPrior, GaussianPrior, Prior, UNetScorePrior

SHIPPED = ("mnist-small", "natural-gray-small")
REPO_CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"


def _checkpoint_dirs() -> list[Path]:
    env = os.environ.get("LIT_BLIND_CHECKPOINTS")
    return ([Path(env)] if env else []) + [REPO_CHECKPOINTS]


def _find_shipped(name: str) -> Path:
    for root in _checkpoint_dirs():
        if (root / name / "config.json").is_file():
            return root / name
    raise ValueError(
        f"spec {name!r} names a shipped prior, but no {name}/config.json was found in "
        f"{[str(p) for p in _checkpoint_dirs()]} (set LIT_BLIND_CHECKPOINTS to the folder that holds it)"
    )


def save_diffusers_ve(
    unet,
    directory: str | Path,
    sigma_min: float,
    sigma_max: float,
    max_shard_size: str | None = None,
    info: dict | None = None,
) -> None:
    """Write a VE ``UNet2DModel`` as :func:`load_diffusers_ve` reads it: ``save_pretrained`` (safetensors, in
    the network's dtype; shards of at most ``max_shard_size`` such as ``"15MB"`` plus their index when given)
    and ``lit_blind_prior.json`` (σ range, pixel units, and ``info`` such as the training steps).
    ``from_pretrained`` reads fp16 shards back into a float32 network."""
    directory = Path(directory)
    unet.save_pretrained(directory, **({} if max_shard_size is None else {"max_shard_size": max_shard_size}))
    meta = {"kind": "diffusers-ve-unet", "sigma_min": sigma_min, "sigma_max": sigma_max, "pixel_range": [0, 1]}
    meta |= info or {}
    (directory / "lit_blind_prior.json").write_text(json.dumps(meta, indent=2) + "\n")


def load_diffusers_ve(
    directory: str | Path, sigma_min: float | None = None, sigma_max: float | None = None
) -> UNetScorePrior:
    """A diffusers VE ``UNet2DModel`` folder as a prior; σ range from ``lit_blind_prior.json`` or arguments."""
    from diffusers import UNet2DModel

    hub = not Path(directory).exists()
    directory = Path(directory)
    meta_path = directory / "lit_blind_prior.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    sigma_min = meta.get("sigma_min") if sigma_min is None else sigma_min
    sigma_max = meta.get("sigma_max") if sigma_max is None else sigma_max
    if sigma_min is None or sigma_max is None:
        raise ValueError(
            f"sigma_min and sigma_max must be given for {directory} (no lit_blind_prior.json there), got {sigma_min}, {sigma_max}"
        )
    try:
        unet = UNet2DModel.from_pretrained(str(directory) if hub else directory, low_cpu_mem_usage=False)
    except (OSError, ValueError, RuntimeError) as err:
        raise ValueError(f"{directory} must hold a diffusers UNet2DModel (config.json + weights): {err}") from err
    return UNetScorePrior(unet.eval().requires_grad_(False), sigma_min=sigma_min, sigma_max=sigma_max)


def _kair_dncnn(sd: dict) -> torch.nn.Module:
    """KAIR DnCNN (``model.{0,2,…}``, D = x − net(x)) as deepinv's DnCNN (D = out_conv(·) + x)."""
    from deepinv.models import DnCNN

    convs = sorted({int(k.split(".")[1]) for k in sd if k.startswith("model.")})
    c = sd["model.0.weight"].shape[1]
    net = DnCNN(
        in_channels=c, out_channels=c, depth=len(convs), bias=True, nf=sd["model.0.weight"].shape[0], pretrained=None
    )
    new = {"in_conv.weight": sd["model.0.weight"], "in_conv.bias": sd["model.0.bias"]}
    for i, j in enumerate(convs[1:-1]):
        new[f"conv_list.{i}.weight"], new[f"conv_list.{i}.bias"] = sd[f"model.{j}.weight"], sd[f"model.{j}.bias"]
    new["out_conv.weight"], new["out_conv.bias"] = -sd[f"model.{convs[-1]}.weight"], -sd[f"model.{convs[-1]}.bias"]
    net.load_state_dict(new, strict=True)
    return net


def _kair_ffdnet(sd: dict) -> torch.nn.Module:
    """KAIR FFDNet (unshuffle x, then concat one σ map: 4c + 1 inputs) as deepinv's FFDNet, which unshuffles
    [x, σ map] (4c + 4 inputs): the σ weights are split evenly over the four identical σ channels."""
    from deepinv.models import FFDNet

    convs = sorted({int(k.split(".")[1]) for k in sd if k.startswith("model.")})
    w0 = sd["model.0.weight"]
    c = (w0.shape[1] - 1) // 4
    net = FFDNet(n_conv_layers=len(convs), nf=w0.shape[0], img_channels=c, pretrained=None)
    sigma_w = w0[:, 4 * c :].repeat(1, 4, 1, 1) / 4
    new = {"blocks.0.0.weight": torch.cat([w0[:, : 4 * c], sigma_w], 1), "blocks.0.0.bias": sd["model.0.bias"]}
    for i, j in enumerate(convs[1:-1], start=1):
        new[f"blocks.{i}.0.weight"], new[f"blocks.{i}.0.bias"] = sd[f"model.{j}.weight"], sd[f"model.{j}.bias"]
    last = len(convs) - 1
    new[f"blocks.{last}.weight"], new[f"blocks.{last}.bias"] = (
        sd[f"model.{convs[-1]}.weight"],
        sd[f"model.{convs[-1]}.bias"],
    )
    net.load_state_dict(new, strict=True)
    return net


def load_denoiser(path: str | Path, kind: str | None = None, **kw) -> DenoiserPrior:
    """A denoiser or EDM state dict as a :class:`DenoiserPrior` (see the module docstring for ``kind``)."""
    path = Path(path)
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated or not a torch file
        raise ValueError(f"{path} must be a torch state dict (.pth), could not be read: {err}") from err
    if not isinstance(sd, dict):
        raise ValueError(f"{path} must hold a state dict, got {type(sd).__name__}")
    if {"model", "ema", "step"} <= sd.keys():
        return score_sde_prior(sd, path, **kw)
    if kind in ("edm-ncsnpp", "edm-adm"):
        from deepinv.models import ADMUNet, NCSNpp

        if kind == "edm-ncsnpp":
            net = NCSNpp(pretrained=None)
            label = {}
        else:
            net = ADMUNet(img_resolution=64, label_dim=1000, pretrained=None)
            label = {"num_classes": 1000, "class_label": kw.pop("class_label", 0)}
        try:
            net.load_state_dict(sd, strict=True)
        except RuntimeError as err:
            raise ValueError(f"{path} does not match deepinv's {type(net).__name__} ({kind}): {err}") from err
        opts = {"channels": 3, "sigma_min": 0.001, "sigma_max": 40.0, "image_size": (64, 64), "terminal_mean": 0.5}
        return DenoiserPrior(net.eval().requires_grad_(False), **{**opts, **label, **kw})
    if kind is not None:
        raise ValueError(f"kind must be None, 'edm-ncsnpp' or 'edm-adm', got {kind!r}")
    if "model.0.weight" in sd:
        c_in = sd["model.0.weight"].shape[1]
        if c_in in (1, 3):
            net, opts = _kair_dncnn(sd), {"channels": c_in, "sigma_min": 25 / 255, "sigma_max": 25 / 255}
        elif c_in in (5, 15):
            net, opts = (
                _kair_ffdnet(sd),
                {"channels": (c_in - 1) // 4, "sigma_min": 1 / 255, "sigma_max": 75 / 255, "multiple": 2},
            )
        else:
            raise ValueError(
                f"{path}: a KAIR layout with {c_in} input channels is neither DnCNN (1, 3) nor FFDNet (5, 15)"
            )
        return DenoiserPrior(net.eval().requires_grad_(False), **{**opts, **kw})
    if "m_head.weight" in sd:
        from deepinv.models import DRUNet

        c = sd["m_head.weight"].shape[1] - 1
        net = DRUNet(in_channels=c, out_channels=c, pretrained=None)
        try:
            net.load_state_dict(sd, strict=True)
        except RuntimeError as err:
            raise ValueError(f"{path} does not match deepinv's DRUNet: {err}") from err
        opts = {"channels": c, "sigma_min": 1 / 255, "sigma_max": 50 / 255, "multiple": 8}
        return DenoiserPrior(net.eval().requires_grad_(False), **{**opts, **kw})
    if "conv_in.weight" in sd and any(k.startswith("down_blocks.") for k in sd):
        raise ValueError(
            f"{path} is a diffusers UNet2DModel state dict without its architecture: pass the folder written by "
            "save_pretrained (config.json beside the weights)"
        )
    raise ValueError(
        f"{path}: unrecognised state dict (keys {list(sd)[:4]}...); pass kind='edm-ncsnpp' or 'edm-adm' "
        "(lit-blind deblur --prior-kind) for EDM weights"
    )


def ncsnpp_unet_config(
    image_size: int = 256,
    nf: int = 128,
    ch_mult: Sequence[int] = (1, 1, 2, 2, 2, 2, 2),
    num_res_blocks: int = 2,
    attn_resolutions: Sequence[int] = (16,),
) -> dict:
    """The diffusers ``UNet2DModel`` config equal to score_sde's NCSN++ with BigGAN residual blocks, output-skip /
    input-skip pyramids combined by sum, FIR resampling, Fourier σ embedding and ``scale_by_sigma`` — the
    architecture of score_sde's ``configs/ve/*_ncsnpp_continuous.py`` image models (3 channels; defaults: FFHQ-256,
    the same as the hub's ``google/ncsnpp-ffhq-256``). Arguments carry score_sde's ``model.*`` names."""
    levels = [image_size // 2**i for i in range(len(ch_mult))]
    if image_size % 2 ** (len(ch_mult) - 1):
        raise ValueError(f"image_size must be divisible by 2**(len(ch_mult) - 1), got {image_size} and {ch_mult}")
    down = tuple("AttnSkipDownBlock2D" if r in attn_resolutions else "SkipDownBlock2D" for r in levels)
    up = tuple("AttnSkipUpBlock2D" if r in attn_resolutions else "SkipUpBlock2D" for r in reversed(levels))
    return {
        "sample_size": image_size,
        "in_channels": 3,
        "out_channels": 3,
        "block_out_channels": tuple(nf * m for m in ch_mult),
        "layers_per_block": num_res_blocks,
        "down_block_types": down,
        "up_block_types": up,
        "time_embedding_type": "fourier",
        "center_input_sample": True,
        "norm_eps": 1e-6,
        "norm_num_groups": None,
        "mid_block_scale_factor": math.sqrt(2.0),
        "act_fn": "silu",
        "attention_head_dim": None,
    }


# Submodule names inside one diffusers module → inside the matching score_sde module.
_RESNET = {"norm1": "GroupNorm_0", "conv1": "Conv_0", "time_emb_proj": "Dense_0", "norm2": "GroupNorm_1"}
_RESNET |= {"conv2": "Conv_1", "conv_shortcut": "Conv_2"}
_ATTENTION = {"group_norm": "GroupNorm_0", "to_q": "NIN_0", "to_k": "NIN_1", "to_v": "NIN_2", "to_out.0": "NIN_3"}


def _ncsnpp_modules(unet) -> list[tuple[str, str]]:
    """(diffusers module path, kind) in the order score_sde's ``NCSNpp`` appends to ``all_modules``."""
    seq = [("time_proj", "fourier"), ("time_embedding.linear_1", "plain"), ("time_embedding.linear_2", "plain")]
    seq.append(("conv_in", "plain"))
    for i, block in enumerate(unet.down_blocks):
        attention = hasattr(block, "attentions")
        for j in range(len(block.resnets)):
            seq.append((f"down_blocks.{i}.resnets.{j}", "resnet"))
            if attention:
                seq.append((f"down_blocks.{i}.attentions.{j}", "attention"))
        if block.resnet_down is not None:  # ResnetBlock(down=True), then Combine(input pyramid, h)
            seq += [(f"down_blocks.{i}.resnet_down", "resnet"), (f"down_blocks.{i}.skip_conv", "combine")]
    seq += [
        ("mid_block.resnets.0", "resnet"),
        ("mid_block.attentions.0", "attention"),
        ("mid_block.resnets.1", "resnet"),
    ]
    for i, block in enumerate(unet.up_blocks):
        seq += [(f"up_blocks.{i}.resnets.{j}", "resnet") for j in range(len(block.resnets))]
        if hasattr(block, "attentions"):
            seq.append((f"up_blocks.{i}.attentions.0", "attention"))
        if block.resnet_up is not None:  # output-skip GroupNorm + conv3x3, then ResnetBlock(up=True)
            seq += [(f"up_blocks.{i}.skip_norm", "plain"), (f"up_blocks.{i}.skip_conv", "plain")]
            seq.append((f"up_blocks.{i}.resnet_up", "resnet"))
    return seq + [("conv_norm_out", "plain"), ("conv_out", "plain")]  # the last level's output-skip pair


def _source_name(kind: str, name: str) -> tuple[str, bool]:
    """The score_sde name of diffusers parameter ``name`` inside a module of ``kind``; True if transposed."""
    if kind == "fourier":
        return "W", False
    if kind == "combine":
        return f"Conv_0.{name}", False
    if kind == "plain":
        return name, False
    table = _RESNET if kind == "resnet" else _ATTENTION
    module, leaf = name.rsplit(".", 1)
    source = table[module]
    if kind == "attention" and source.startswith("NIN"):
        return f"{source}.{'W' if leaf == 'weight' else 'b'}", leaf == "weight"
    return f"{source}.{leaf}", False


def score_sde_prior(
    checkpoint: dict,
    path: str | Path = "checkpoint",
    sigma_min: float = 0.01,
    sigma_max: float = 348.0,
    ema: bool = True,
    export: str | Path | None = None,
    **architecture,
) -> UNetScorePrior:
    """A score_sde_pytorch NCSN++ checkpoint (``{"model", "ema", "optimizer", "step"}``) as a VE prior.

    The EMA weights are used (``ema=False``: the raw training weights): score_sde's ``shadow_params`` list
    covers the trainable parameters in ``model.parameters()`` order, i.e. every ``all_modules.*`` entry but
    the fixed Fourier ``W``. Every weight is mapped by position onto :func:`ncsnpp_unet_config`'s
    ``UNet2DModel`` (``architecture``: its arguments) and loaded strictly — a missing, extra or misshapen
    weight is an error naming the file (the authors' code loads the raw weights with ``strict=False``).
    ``export``: also save the converted network as a diffusers folder that :func:`load_prior` reads.
    Written by hand: diffusers' conversion script targets an older block layout and ignores the EMA.

    Example::

        prior = load_prior("ve/ffhq_256_ncsnpp_continuous/checkpoint_48.pth")   # the paper's FFHQ-256 model
        score_sde_prior(torch.load(path, weights_only=True), export="ffhq256/")  # once; then load_prior("ffhq256/")
    """
    from diffusers import UNet2DModel

    where = f"{path} (score_sde checkpoint)"
    model = checkpoint["model"]
    if not isinstance(model, dict) or not all(isinstance(k, str) for k in model):
        raise ValueError(f"{where}: checkpoint['model'] must be a state dict, got {type(model).__name__}")
    model = {k.removeprefix("module."): v for k, v in model.items()}
    weights = {k: v for k, v in model.items() if k.startswith("all_modules.")}
    if ema:
        shadow = checkpoint["ema"].get("shadow_params") if isinstance(checkpoint["ema"], dict) else None
        trainable = [k for k in weights if k != "all_modules.0.W"]
        if shadow is None or len(shadow) != len(trainable):
            got = "no shadow_params" if shadow is None else f"{len(shadow)} shadow params"
            raise ValueError(
                f"{where}: checkpoint['ema'] must hold one shadow param per trainable weight "
                f"({len(trainable)}), got {got}"
            )
        for key, value in zip(trainable, shadow, strict=True):
            if value.shape != weights[key].shape:
                raise ValueError(
                    f"{where}: EMA shadow param for {key} has shape {tuple(value.shape)}, "
                    f"expected {tuple(weights[key].shape)}"
                )
            weights[key] = value
    unet = UNet2DModel(**ncsnpp_unet_config(**architecture))
    target = unet.state_dict()
    new, used = {}, set()
    for index, (module, kind) in enumerate(_ncsnpp_modules(unet)):
        for key in [k for k in target if k.startswith(module + ".")]:
            name, transposed = _source_name(kind, key[len(module) + 1 :])
            source = f"all_modules.{index}.{name}"
            if source not in weights:
                raise ValueError(
                    f"{where}: expected {source} (for {key}) in the score_sde NCSN++ weights; "
                    f"check the architecture arguments {architecture or '(FFHQ-256 defaults)'}"
                )
            value = weights[source].t() if transposed else weights[source]
            if value.shape != target[key].shape:
                raise ValueError(
                    f"{where}: {source} has shape {tuple(value.shape)}, {key} needs "
                    f"{tuple(target[key].shape)}; check the architecture arguments"
                )
            new[key] = value
            used.add(source)
    extra = sorted(set(weights) - used)
    if extra:
        raise ValueError(
            f"{where}: {len(extra)} score_sde weights have no place in the NCSN++ architecture "
            f"{architecture or '(FFHQ-256 defaults)'}, e.g. {extra[:3]}"
        )
    unet.load_state_dict(new, strict=True)
    if export is not None:
        save_diffusers_ve(unet, export, sigma_min, sigma_max)
    return UNetScorePrior(unet.eval().requires_grad_(False), sigma_min, sigma_max, fixed_size=True)


def load_edm_pickle(path: str | Path, trusted: bool = False, class_label: int | None = None, **kw) -> DenoiserPrior:
    """An NVlabs EDM ``.pkl`` (``{"ema": EDMPrecond, ...}``) as a prior. Unpickling executes code stored in
    the file, hence ``trusted=True`` is required."""
    import pickle

    path = Path(path)
    if not trusted:
        raise ValueError(
            f"{path} is a pickle: loading it executes code from the file. Pass trusted=True only for files from a "
            "source you trust (e.g. the NVlabs EDM release)"
        )
    try:
        with path.open("rb") as f:
            data = pickle.load(f)  # noqa: S301 - gated by trusted=True above
    except ModuleNotFoundError as err:
        raise ValueError(f"{path} needs NVlabs/edm's torch_utils and dnnlib on the Python path: {err}") from err
    except (pickle.UnpicklingError, EOFError) as err:
        raise ValueError(f"{path} is not a readable pickle (truncated?): {err}") from err
    net = data.get("ema") if isinstance(data, dict) else None
    if net is None:
        raise ValueError(f"{path} must hold a dict with an 'ema' network, got {type(data).__name__}")
    label_dim = int(getattr(net, "label_dim", 0) or 0)
    opts = {
        "channels": int(getattr(net, "img_channels", 3)),
        "sigma_min": 0.001,
        "sigma_max": 40.0,
        "minus_one_one": True,
        "terminal_mean": 0.5,
        "num_classes": label_dim,
        "class_label": class_label if class_label is not None else (0 if label_dim else None),
    }
    res = getattr(net, "img_resolution", None)
    if res:
        opts["image_size"] = (int(res), int(res))
    return DenoiserPrior(net.eval().requires_grad_(False), **{**opts, **kw})


def load_prior(spec: str | Path, **kw) -> Prior:
    """A prior from a name or a path (see the module docstring).

    Example::

        prior = load_prior("mnist-small")          # the shipped binarised-MNIST VE prior
        prior = load_prior("path/to/unet", sigma_min=0.01, sigma_max=348.0)
    """
    spec_s = str(spec)
    if spec_s in ("gaussian", "gaussian-rgb"):
        return GaussianPrior(**({"channels": 3} if spec_s == "gaussian-rgb" else {}), **kw)
    if spec_s in SHIPPED:
        return load_diffusers_ve(_find_shipped(spec_s), **kw)
    path = data_path(spec_s)  # a relative path also from outside the repository (see lit_blind.io.data_path)
    if path.is_dir() and (path / "config.json").is_file():
        return load_diffusers_ve(path, **kw)
    if path.is_file() and path.suffix == ".pkl":
        return load_edm_pickle(path, **kw)
    if path.is_file() and path.suffix in (".pth", ".pt"):
        return load_denoiser(path, **kw)
    if not path.exists() and spec_s.count("/") == 1 and not spec_s.startswith((".", "/")) and not path.suffix:
        return load_diffusers_ve(spec_s, **kw)  # a Hugging Face hub id, e.g. google/ncsnpp-ffhq-256
    if not path.exists() and (path.suffix or os.sep in spec_s):
        raise ValueError(f"spec names a file or folder that does not exist: {spec_s!r}")
    raise ValueError(
        f"spec must be 'gaussian', 'gaussian-rgb', one of {SHIPPED}, a diffusers UNet2DModel folder, "
        f"a denoiser/EDM .pth or an EDM .pkl, got {spec_s!r}"
    )


class LoadedPrior(Prior):
    """Any :func:`load_prior` spec as a prior for YAML configs (LightningCLI instantiates classes)::

    prior: {class_path: lit_blind.loading.LoadedPrior, init_args: {spec: mnist-small}}
    prior: {class_path: lit_blind.loading.LoadedPrior, init_args: {spec: google/ncsnpp-ffhq-256, sigma_min: 0.01, sigma_max: 348}}

    ``options``: further keyword arguments of the loader (e.g. a score_sde model's ``nf``, ``ch_mult``).
    """

    def __init__(
        self,
        spec: str,
        kind: str | None = None,
        trusted: bool = False,
        class_label: int | None = None,
        sigma_min: float | None = None,
        sigma_max: float | None = None,
        options: dict | None = None,
    ) -> None:
        super().__init__()
        kw = {
            "kind": kind,
            "trusted": trusted,
            "class_label": class_label,
            "sigma_min": sigma_min,
            "sigma_max": sigma_max,
        }
        kw = {k: v for k, v in kw.items() if v not in (None, False)}
        self.inner = load_prior(spec, **kw, **(options or {}))
        self.spec = spec
        for name in ("channels", "image_size", "sigma_min", "sigma_max", "sigma_range_strict", "multiple"):
            setattr(self, name, getattr(self.inner, name))
        self.has_log_prob, self.has_hvp = self.inner.has_log_prob, self.inner.has_hvp

    def check_input(self, x, name: str = "x"):
        return self.inner.check_input(x, name)

    def _score(self, x, sigma):
        return self.inner._score(x, sigma)

    def _denoise(self, x, sigma):
        return self.inner._denoise(x, sigma)

    def terminal_log_prob(self, x):
        return self.inner.terminal_log_prob(x)

    def local_attention(self):
        return self.inner.local_attention()

    def log_prob(self, x, sigma):
        return self.inner.log_prob(x, sigma)

    def hvp(self, x, v, sigma):
        return self.inner.hvp(x, v, sigma)
