import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from lit_blind.io import read_image, read_kernel, read_kernels, read_levin_kernels, write_image
from lit_blind.physics import blur


def test_image_roundtrip_png_npy_mat(tmp_path, gen):
    x = torch.rand(1, 3, 17, 15, generator=gen)
    write_image(tmp_path / "a.png", x)
    y = read_image(tmp_path / "a.png")
    assert y.shape == (1, 3, 17, 15) and (y - x).abs().max() <= 0.5 / 255 + 1e-6
    assert read_image(tmp_path / "a.png", channels=1).shape == (1, 1, 17, 15)
    np.save(tmp_path / "a.npy", x[0].permute(1, 2, 0).numpy())
    torch.testing.assert_close(read_image(tmp_path / "a.npy"), x)
    scipy.io.savemat(tmp_path / "a.mat", {"img": x[0, 0].numpy()})
    torch.testing.assert_close(read_image(tmp_path / "a.mat"), x[:, :1])


def test_kernel_flip_and_normalisation(tmp_path):
    k = np.zeros((5, 5))
    k[2, 2], k[2, 4] = 3.0, 1.0
    np.save(tmp_path / "k.npy", k)
    h = read_kernel(tmp_path / "k.npy")
    assert h.shape == (1, 1, 5, 5) and abs(h.sum() - 1) < 1e-12 and h[0, 0, 2, 4] == 0.25
    hc = read_kernel(tmp_path / "k.npy", correlation=True)
    assert hc[0, 0, 2, 0] == 0.25
    Image.fromarray((255 * k / k.max()).astype(np.uint8)).save(tmp_path / "k.png")
    torch.testing.assert_close(read_kernel(tmp_path / "k.png"), h, atol=2e-3, rtol=0)
    cell = np.empty((2, 1), dtype=object)
    cell[0, 0], cell[1, 0] = k, k.T
    scipy.io.savemat(tmp_path / "ks.mat", {"kernels": cell})
    ks = read_kernels(tmp_path / "ks.mat")
    assert len(ks) == 2 and torch.equal(ks[1][0, 0], h[0, 0].T)


def test_levin_kernels_explain_levin_blur(shared_data):
    """Flipped on load, the Levin kernels reproduce the real blurred images under true convolution."""
    lev = shared_data / "levin09"
    ks_mat = read_levin_kernels(lev / "kernels" / "Levin09.mat")
    ks_npy = read_levin_kernels(lev / "kernels")
    assert [k.shape[-1] for k in ks_mat] == [19, 17, 15, 27, 13, 21, 23, 23]
    for a, b in zip(ks_mat, ks_npy, strict=True):
        torch.testing.assert_close(a, b)
    x = read_image(lev / "sharp" / "im1.png").double()
    y = read_image(lev / "blurred" / "im1_kernel1_img.png").double()
    h = ks_mat[0]

    def best_fit(kernel):  # best integer shift of at most 5 px, on the valid interior
        yb = blur(x, kernel, "valid")
        c = kernel.shape[-1] // 2
        best = np.inf
        for dy in range(-5, 6):
            for dx in range(-5, 6):
                ys = torch.roll(y, (dy, dx), (-2, -1))[..., c:-c, c:-c]
                best = min(best, (yb - ys)[..., 8:-8, 8:-8].pow(2).mean().item())
        return -10 * np.log10(best)

    psnr_conv, psnr_flipped = best_fit(h), best_fit(h.flip(-1, -2))
    assert psnr_conv > 33 and psnr_conv > psnr_flipped


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda p: read_image(p / "missing.png"), "existing"),
        (lambda p: read_image(p / "a.txt"), "must end in"),
        (lambda p: read_image(p / "bad.npy"), r"\[0, 1\]"),
        (lambda p: read_image(p / "nan.npy"), "1 NaN and 1 inf"),
        (lambda p: read_image(p / "int.npy"), "dtype int64"),
        (lambda p: read_image(p / "fake.png"), "readable image"),
        (lambda p: read_kernel(p / "even.npy"), "odd"),
    ],
)
def test_bad_files(tmp_path, call, match):
    (tmp_path / "a.txt").write_text("x")
    np.save(tmp_path / "bad.npy", np.full((4, 4), 3.0))
    np.save(tmp_path / "nan.npy", np.array([[0.5, np.nan], [np.inf, 0.2]]))
    np.save(tmp_path / "int.npy", np.ones((4, 4), np.int64))
    (tmp_path / "fake.png").write_bytes(b"not a png")
    np.save(tmp_path / "even.npy", np.ones((4, 4)))
    with pytest.raises(ValueError, match=match):
        call(tmp_path)


def test_sixteen_bit_png_keeps_its_values_when_converted(tmp_path):
    import numpy as np
    from PIL import Image

    from lit_blind.io import read_image

    a = (np.linspace(0, 1, 40 * 30).reshape(30, 40) * 65535).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "deep.png")
    for channels in (None, 1, 3):
        x = read_image(tmp_path / "deep.png", channels=channels)
        assert x.shape == (1, channels or 1, 30, 40)
        assert np.allclose(x[0, 0].numpy(), a / 65535, atol=1e-6)  # not clipped to white


def test_every_kind_of_image_file_reads_with_its_own_scale(tmp_path):
    """8/16-bit gray, RGB, RGBA and LA (alpha dropped with a warning), palette, 1-bit and float TIFF."""
    rng = np.random.default_rng(0)
    gray8 = rng.integers(0, 256, (6, 5), dtype=np.uint8)
    rgb8 = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    Image.fromarray(gray8).save(tmp_path / "gray8.png")
    Image.fromarray(rgb8).save(tmp_path / "rgb8.png")
    Image.fromarray(np.dstack([rgb8, np.full((6, 5), 7, np.uint8)]), "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(gray8).convert("LA").save(tmp_path / "la.png")
    Image.fromarray(rgb8).quantize(8).save(tmp_path / "palette.png")
    Image.fromarray(gray8 > 127).save(tmp_path / "bits.png")
    floats = rng.random((6, 5)).astype(np.float32)
    Image.fromarray(floats, "F").save(tmp_path / "float.tif")
    assert torch.allclose(read_image(tmp_path / "gray8.png")[0, 0], torch.from_numpy(gray8 / 255).float())
    assert torch.allclose(read_image(tmp_path / "rgb8.png")[0], torch.from_numpy(rgb8 / 255).float().permute(2, 0, 1))
    with pytest.warns(UserWarning, match="alpha channel of this RGBA image is dropped"):
        rgba = read_image(tmp_path / "rgba.png")
    assert torch.allclose(rgba[0], torch.from_numpy(rgb8 / 255).float().permute(2, 0, 1))
    with pytest.warns(UserWarning, match="alpha channel of this LA image"):
        assert torch.allclose(read_image(tmp_path / "la.png")[0, 0], torch.from_numpy(gray8 / 255).float())
    with Image.open(tmp_path / "palette.png") as im:
        expanded = np.asarray(im.convert("RGB")) / 255
    assert torch.allclose(read_image(tmp_path / "palette.png")[0], torch.from_numpy(expanded).float().permute(2, 0, 1))
    assert torch.equal(read_image(tmp_path / "bits.png")[0, 0], torch.from_numpy(gray8 > 127).float())
    assert torch.allclose(read_image(tmp_path / "float.tif")[0, 0], torch.from_numpy(floats))
    luma = read_image(tmp_path / "rgb8.png", channels=1)[0, 0]  # BT.601, as PIL's convert("L") up to rounding
    assert torch.allclose(
        luma, torch.from_numpy(np.asarray(Image.fromarray(rgb8).convert("L")) / 255).float(), atol=1 / 255
    )
