"""score_sde_pytorch NCSN++ checkpoints: written here in score_sde's own layout, loaded into diffusers.

The layout below follows the construction loop of score_sde's ``models/ncsnpp.py`` (module by module, with
each module's role), independently of the loader, which walks the diffusers network instead.
"""

import pytest
import torch

from lit_blind.loading import load_prior, ncsnpp_unet_config, score_sde_prior

TINY = {"image_size": 16, "nf": 32, "ch_mult": (1, 1, 2), "num_res_blocks": 2, "attn_resolutions": (8,)}
RESNET = {"GroupNorm_0": "norm1", "Conv_0": "conv1", "Dense_0": "time_emb_proj", "GroupNorm_1": "norm2"}
RESNET |= {"Conv_1": "conv2", "Conv_2": "conv_shortcut"}
NIN = {"NIN_0": "to_q", "NIN_1": "to_k", "NIN_2": "to_v", "NIN_3": "to_out.0"}


def score_sde_layout(image_size, nf, ch_mult, num_res_blocks, attn_resolutions, channels=3):
    """[(diffusers module, [(score_sde name, diffusers name, shape, transposed)])] in ``all_modules`` order."""
    layout = []

    def resnet(where, cin, cout, resample=False):
        shapes = {"GroupNorm_0": [(cin,)], "Conv_0": [(cout, cin, 3, 3), (cout,)], "Dense_0": [(cout, 4 * nf), (cout,)]}
        shapes |= {"GroupNorm_1": [(cout,)], "Conv_1": [(cout, cout, 3, 3), (cout,)]}
        if cin != cout or resample:
            shapes["Conv_2"] = [(cout, cin, 1, 1), (cout,)]
        entries = []
        for module, sh in shapes.items():
            w, b = (sh[0], sh[0]) if len(sh) == 1 else sh
            entries += [(f"{module}.weight", f"{RESNET[module]}.weight", w, False)]
            entries += [(f"{module}.bias", f"{RESNET[module]}.bias", b, False)]
        layout.append((where, entries))

    def attention(where, c):
        entries = [("GroupNorm_0.weight", "group_norm.weight", (c,), False)]
        entries += [("GroupNorm_0.bias", "group_norm.bias", (c,), False)]
        for nin, name in NIN.items():
            entries += [(f"{nin}.W", f"{name}.weight", (c, c), True), (f"{nin}.b", f"{name}.bias", (c,), False)]
        layout.append((where, entries))

    def plain(where, *weight_shape, bias=True):
        entries = [("weight", "weight", weight_shape, False)]
        layout.append((where, entries + ([("bias", "bias", (weight_shape[0],), False)] if bias else [])))

    layout.append(("time_proj", [("W", "weight", (nf,), False)]))
    plain("time_embedding.linear_1", 4 * nf, 2 * nf)
    plain("time_embedding.linear_2", 4 * nf, 4 * nf)
    plain("conv_in", nf, channels, 3, 3)
    hs_c, in_ch, res, last = [nf], nf, image_size, len(ch_mult) - 1
    for level, mult in enumerate(ch_mult):
        for block in range(num_res_blocks):
            resnet(f"down_blocks.{level}.resnets.{block}", in_ch, nf * mult)
            in_ch = nf * mult
            if res in attn_resolutions:
                attention(f"down_blocks.{level}.attentions.{block}", in_ch)
            hs_c.append(in_ch)
        if level != last:
            resnet(f"down_blocks.{level}.resnet_down", in_ch, in_ch, resample=True)
            layout.append(
                (
                    f"down_blocks.{level}.skip_conv",  # Combine(method="sum"): Conv_0 = conv1x1(channels, in_ch)
                    [("Conv_0.weight", "weight", (in_ch, channels, 1, 1), False)]
                    + [("Conv_0.bias", "bias", (in_ch,), False)],
                )
            )
            hs_c.append(in_ch)
            res //= 2
    resnet("mid_block.resnets.0", in_ch, in_ch)
    attention("mid_block.attentions.0", in_ch)
    resnet("mid_block.resnets.1", in_ch, in_ch)
    for up, level in enumerate(reversed(range(len(ch_mult)))):
        for block in range(num_res_blocks + 1):
            resnet(f"up_blocks.{up}.resnets.{block}", in_ch + hs_c.pop(), nf * ch_mult[level])
            in_ch = nf * ch_mult[level]
        if res in attn_resolutions:
            attention(f"up_blocks.{up}.attentions.0", in_ch)
        norm, conv = (
            ("conv_norm_out", "conv_out") if level == 0 else (f"up_blocks.{up}.skip_norm", f"up_blocks.{up}.skip_conv")
        )
        plain(norm, in_ch)
        plain(conv, channels, in_ch, 3, 3)
        if level != 0:
            resnet(f"up_blocks.{up}.resnet_up", in_ch, in_ch, resample=True)
            res *= 2
    assert not hs_c
    return layout


def make_checkpoint(arch, generator, fill=torch.randn):
    """A score_sde checkpoint dict (DataParallel ``module.`` keys, EMA list without the Fourier W) and, per
    diffusers key, the (raw, ema) tensors the loader must place there."""
    model, expected, shadow = {"module.sigmas": torch.logspace(-2, 2, 10)}, {}, []
    for index, (where, entries) in enumerate(score_sde_layout(**arch)):
        for name, target, shape, transposed in entries:
            raw = 0.1 * fill(shape, generator=generator)
            model[f"module.all_modules.{index}.{name}"] = raw
            ema = raw if name == "W" else 0.1 * fill(shape, generator=generator)
            if name != "W":
                shadow.append(ema)
            expected[f"{where}.{target}"] = (raw.t(), ema.t()) if transposed else (raw, ema)
    checkpoint = {
        "model": model,
        "ema": {"decay": 0.999, "num_updates": 7, "shadow_params": shadow},
        "optimizer": {"state": {}, "param_groups": [{"lr": 2e-4, "params": list(range(len(shadow)))}]},
        "step": 7,
    }
    return checkpoint, expected


def test_tiny_ncsnpp_checkpoint_maps_every_weight_and_uses_the_ema(tmp_path, gen):
    checkpoint, expected = make_checkpoint(TINY, gen)
    torch.save(checkpoint, tmp_path / "checkpoint_7.pth")
    prior = load_prior(tmp_path / "checkpoint_7.pth", **TINY)
    state = prior.unet.state_dict()
    assert state.keys() == expected.keys()
    for key, (_, ema) in expected.items():
        torch.testing.assert_close(state[key], ema, rtol=0, atol=0, msg=key)
    raw = score_sde_prior(checkpoint, ema=False, **TINY).unet.state_dict()
    assert all(torch.equal(raw[k], expected[k][0]) for k in expected)
    assert (prior.sigma_min, prior.sigma_max, prior.image_size) == (0.01, 348.0, (16, 16))
    x = torch.rand(2, 3, 16, 16, generator=gen)
    s = prior.score(x, 0.5)
    assert s.shape == x.shape and torch.isfinite(s).all()
    with pytest.raises(ValueError, match="spatial size \\(16, 16\\)"):
        prior.score(torch.rand(1, 3, 32, 32), 0.5)

    score_sde_prior(checkpoint, ema=True, export=tmp_path / "converted", **TINY)
    again = load_prior(tmp_path / "converted")
    torch.testing.assert_close(again.score(x, 0.5), s, rtol=0, atol=0)
    assert (again.sigma_min, again.sigma_max) == (0.01, 348.0)


def test_ffhq256_layout_matches_the_hub_architecture():
    """The paper's FFHQ-256 model: every score_sde weight has its place (shapes only) in 65.57M parameters."""
    arch = {
        "image_size": 256,
        "nf": 128,
        "ch_mult": (1, 1, 2, 2, 2, 2, 2),
        "num_res_blocks": 2,
        "attn_resolutions": (16,),
    }
    checkpoint, expected = make_checkpoint(arch, None, fill=lambda shape, generator: torch.zeros(shape))
    prior = score_sde_prior(checkpoint)  # FFHQ-256 defaults
    assert prior.unet.state_dict().keys() == expected.keys()
    assert round(sum(p.numel() for p in prior.unet.parameters()) / 1e6, 2) == 65.57
    assert ncsnpp_unet_config()["block_out_channels"] == (128, 128, 256, 256, 256, 256, 256)


def _drop_last_shadow(c):
    c["ema"]["shadow_params"].pop()


def _add_key(c):
    c["model"]["module.all_modules.999.weight"] = torch.zeros(1)
    c["ema"]["shadow_params"].append(torch.zeros(1))


def _reshape_shadow(c):
    c["ema"]["shadow_params"][0] = torch.zeros(3)


@pytest.mark.parametrize(
    "spoil, arch, match",
    [
        (_drop_last_shadow, TINY, "one shadow param per trainable weight"),
        (_reshape_shadow, TINY, "EMA shadow param for all_modules.1.weight"),
        (_add_key, TINY, "no place in the NCSN\\+\\+ architecture"),
        (lambda c: None, {**TINY, "ch_mult": (1, 2, 2)}, "has shape .* check the architecture"),
        (lambda c: None, {**TINY, "num_res_blocks": 1}, "no place|expected all_modules"),
    ],
)
def test_mismatched_checkpoints_name_the_file(tmp_path, gen, spoil, arch, match):
    checkpoint, _ = make_checkpoint(TINY, gen)
    spoil(checkpoint)
    torch.save(checkpoint, tmp_path / "ckpt.pth")
    with pytest.raises(ValueError, match=match) as err:
        load_prior(tmp_path / "ckpt.pth", **arch)
    assert "ckpt.pth (score_sde checkpoint)" in str(err.value)


def test_truncated_checkpoint(tmp_path, gen):
    checkpoint, _ = make_checkpoint(TINY, gen)
    torch.save(checkpoint, tmp_path / "ckpt.pth")
    data = (tmp_path / "ckpt.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.pth must be a torch state dict"):
        load_prior(tmp_path / "cut.pth", **TINY)
