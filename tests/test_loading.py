"""Every loader on files made here (tiny random networks in the original formats) and on the shared weights."""

import copy
import json
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lit_blind.likelihood import potential
from lit_blind.loading import load_prior
from lit_blind.priors import DenoiserPrior, GaussianPrior

D = torch.float64


def _kair_dncnn_forward(sd, x):
    convs = sorted({int(k.split(".")[1]) for k in sd})
    h = x
    for i, j in enumerate(convs):
        h = F.conv2d(h, sd[f"model.{j}.weight"], sd[f"model.{j}.bias"], padding=1)
        if i < len(convs) - 1:
            h = F.relu(h)
    return x - h


def _kair_ffdnet_forward(sd, x, sigma):
    convs = sorted({int(k.split(".")[1]) for k in sd})
    h = F.pixel_unshuffle(x, 2)
    h = torch.cat([h, torch.full_like(h[:, :1], sigma)], 1)
    for i, j in enumerate(convs):
        h = F.conv2d(h, sd[f"model.{j}.weight"], sd[f"model.{j}.bias"], padding=1)
        if i < len(convs) - 1:
            h = F.relu(h)
    return F.pixel_shuffle(h, 2)


def _random_kair(in_c, out_c, n=5, nf=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    sd, chans = {}, [in_c] + [nf] * (n - 1) + [out_c]
    for i in range(n):
        sd[f"model.{2 * i}.weight"] = 0.2 * torch.randn(chans[i + 1], chans[i], 3, 3, generator=g)
        sd[f"model.{2 * i}.bias"] = 0.05 * torch.randn(chans[i + 1], generator=g)
    return sd


def test_kair_dncnn_and_ffdnet_layouts_load_exactly(tmp_path, gen):
    x = torch.rand(2, 1, 12, 10, generator=gen)
    sd = _random_kair(1, 1)
    torch.save(sd, tmp_path / "dncnn.pth")
    prior = load_prior(tmp_path / "dncnn.pth")
    torch.testing.assert_close(prior.denoise(x, 25 / 255), _kair_dncnn_forward(sd, x), atol=1e-5, rtol=0)
    sd = _random_kair(5, 4)
    torch.save(sd, tmp_path / "ffdnet.pth")
    prior = load_prior(tmp_path / "ffdnet.pth")
    torch.testing.assert_close(prior.denoise(x, 0.1), _kair_ffdnet_forward(sd, x, 0.1), atol=1e-5, rtol=0)
    s = prior.score(x, 0.1)
    torch.testing.assert_close(s, (prior.denoise(x, 0.1) - x) / 0.01)


def test_shared_denoisers_reach_published_psnr(shared_data):
    from PIL import Image

    from lit_blind.metrics import psnr

    x = torch.from_numpy(np.asarray(Image.open(shared_data / "natural/Set12/01.png"), np.float32) / 255)[None, None]
    y = x + 25 / 255 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    for name, floor in (("dncnn_25.pth", 30.0), ("ffdnet_gray.pth", 29.9)):  # cameraman: 30.18 / 30.06 published
        sd = torch.load(shared_data / "weights" / name, weights_only=True)
        prior = load_prior(shared_data / "weights" / name)
        with torch.no_grad():
            out = prior.denoise(y, 25 / 255)
            ref = _kair_dncnn_forward(sd, y) if "dncnn" in name else _kair_ffdnet_forward(sd, y, 25 / 255)
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)
        assert psnr(out, x, max_shift=0) > floor


def test_drunet_state_dict(tmp_path, gen):
    from deepinv.models import DRUNet

    torch.manual_seed(0)
    net = DRUNet(in_channels=1, out_channels=1, pretrained=None).eval()
    torch.save(net.state_dict(), tmp_path / "drunet.pth")
    prior = load_prior(tmp_path / "drunet.pth")
    x = torch.rand(1, 1, 16, 16, generator=gen)
    with torch.no_grad():
        torch.testing.assert_close(prior.denoise(x, 0.05), net(x, 0.05))
    with pytest.raises(ValueError, match="divisible by 8"):
        prior.denoise(torch.rand(1, 1, 12, 16), 0.05)


class _TinyEDM(nn.Module):
    """A network in EDM's native convention: D(z; σ) on [−1, 1], class labels optional."""

    label_dim, img_channels, img_resolution = 0, 1, 8

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, z, sigma, class_labels=None):
        return z + sigma.reshape(-1, 1, 1, 1) * self.conv(z)


def test_edm_pickle_requires_trust_and_adapts_scale(tmp_path, gen):
    net = _TinyEDM()
    with open(tmp_path / "edm.pkl", "wb") as f:
        pickle.dump({"ema": net}, f)
    with pytest.raises(ValueError, match="trusted=True"):
        load_prior(tmp_path / "edm.pkl")
    prior = load_prior(tmp_path / "edm.pkl", trusted=True)
    x = torch.rand(2, 1, 8, 8, generator=gen)
    with torch.no_grad():
        expected = (net(2 * x - 1, torch.full((2,), 0.2)) + 1) / 2
        torch.testing.assert_close(prior.denoise(x, 0.1), expected)
    assert prior.image_size == (8, 8) and prior.sigma_max == 40.0
    (tmp_path / "cut.pkl").write_bytes((tmp_path / "edm.pkl").read_bytes()[:20])
    with pytest.raises(ValueError, match="truncated"):
        load_prior(tmp_path / "cut.pkl", trusted=True)


class _GaussianAsEDM(nn.Module):
    """The analytic Gaussian prior's denoiser rewritten in EDM's [−1, 1] convention."""

    def __init__(self, gp):
        super().__init__()
        self.gp = gp

    def forward(self, z, sigma, class_labels=None):
        return 2 * self.gp.denoise((z + 1) / 2, sigma / 2) - 1


def test_edm_convention_gives_the_same_potential_as_the_unit_range_prior(gen):
    gp = GaussianPrior(sigma_max=50.0)
    edm = DenoiserPrior(_GaussianAsEDM(gp), sigma_min=0.01, sigma_max=50.0, minus_one_one=True, terminal_mean=gp.mean)
    x = torch.rand(2, 1, 11, 9, generator=gen, dtype=D)
    res = potential(edm, x, solver="dopri5", divergence="exact")
    truth = -gp.log_prob(x, 0.01)
    assert (res.value - truth).abs().max() < 0.5


def test_diffusers_folder_roundtrip(tmp_path, gen):
    from lit_blind.testing import tiny_unet

    unet = tiny_unet()
    unet.save_pretrained(tmp_path / "u")
    with pytest.raises(ValueError, match="sigma_min and sigma_max"):
        load_prior(tmp_path / "u")
    prior = load_prior(tmp_path / "u", sigma_min=0.01, sigma_max=10.0)
    x = torch.rand(2, 1, 8, 8, generator=gen)
    s = torch.full((2,), 0.3)
    with torch.no_grad():
        torch.testing.assert_close(prior.score(x, s), unet(x, s).sample)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text('{"_class_name": "UNet2DModel"}')
    with pytest.raises(ValueError, match="UNet2DModel"):
        load_prior(tmp_path / "broken", sigma_min=0.01, sigma_max=1.0)


def test_fp16_shards_roundtrip(tmp_path, gen):
    """save_diffusers_ve in fp16 shards (as benchmarks/gpu_session.py exports a trained prior) loads back into float32, with
    the σ range, the extra info, and the fp16 rounding as the only difference."""
    from lit_blind.loading import save_diffusers_ve
    from lit_blind.testing import tiny_unet

    unet = tiny_unet()
    x, s = torch.rand(2, 1, 8, 8, generator=gen), torch.full((2,), 0.3)
    with torch.no_grad():
        ref = unet(x, s).sample
    save_diffusers_ve(copy.deepcopy(unet).half(), tmp_path, 0.01, 10.0, max_shard_size="20KB", info={"steps": 7})
    assert len(list(tmp_path.glob("*.safetensors"))) > 1 and (tmp_path / "lit_blind_prior.json").is_file()
    assert json.loads((tmp_path / "lit_blind_prior.json").read_text())["steps"] == 7
    prior = load_prior(tmp_path)
    assert next(prior.unet.parameters()).dtype == torch.float32 and (prior.sigma_min, prior.sigma_max) == (0.01, 10.0)
    with torch.no_grad():
        got = prior.score(x, s)
    assert not torch.equal(got, ref)  # the weights went through fp16
    torch.testing.assert_close(got, ref, rtol=1e-2, atol=1e-2 * float(ref.abs().max()))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: p / "missing.pth", "does not exist"),
        (lambda p: "no-such-prior", "spec must be"),
        (lambda p: _write(p / "cut.pth", b"PK\x03\x04 truncated"), "could not be read"),
        (lambda p: _save(p / "sde.pth", {"model": {}, "ema": {}, "optimizer": {}, "step": 1}), "score_sde"),
        (lambda p: _save(p / "odd.pth", _random_kair(7, 1)), "neither DnCNN"),
        (lambda p: _save(p / "other.pth", {"w": torch.zeros(1)}), "unrecognised"),
    ],
)
def test_bad_files(tmp_path, make, match):
    with pytest.raises(ValueError, match=match):
        load_prior(make(tmp_path))


def test_edm_kind_mismatch_and_class_label(tmp_path):
    _save(tmp_path / "d.pth", _random_kair(1, 1))
    with pytest.raises(ValueError, match="does not match"):
        load_prior(tmp_path / "d.pth", kind="edm-ncsnpp")
    with pytest.raises(ValueError, match="class_label"):
        DenoiserPrior(nn.Identity(), class_label=1000, num_classes=1000)


def _write(path, data):
    path.write_bytes(data)
    return path


def _save(path, obj):
    torch.save(obj, path)
    return path
