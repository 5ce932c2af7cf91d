"""mCAM (DESIGN 7): per-clip normalisation, suppression below delta, owner = argmax, 5x5 Gaussian."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mmit_interp.explain.mcam import KERNEL_SIZE, gaussian_kernel, max_of_cams, mcam, normalise, smooth, suppress_similar
from mmit_interp.explain.render import class_boundaries, mcam_overlay, side_by_side, write_video


@pytest.fixture
def maps():
    return torch.rand(4, 3, 12, 12, generator=torch.Generator().manual_seed(0)) * 5 - 1


def test_normalise_per_clip(maps):
    n = normalise(maps)
    for s in range(4):
        m = maps[s].numpy()
        np.testing.assert_allclose(n[s].numpy(), (m - m.min()) / (m.max() - m.min()), rtol=1e-5, atol=1e-6)
    assert normalise(torch.ones(1, 2, 3, 3)).abs().sum() == 0


def test_normalise_per_frame(maps):
    n = normalise(maps, "frame")
    for s in range(4):
        for t in range(3):
            m = maps[s, t].numpy()
            np.testing.assert_allclose(n[s, t].numpy(), (m - m.min()) / (m.max() - m.min()), rtol=1e-5, atol=1e-6)
    flat = maps.clone()
    flat[1, 2] = 7.0  # one constant frame -> 0 there, the other frames untouched
    n2 = normalise(flat, "frame")
    assert n2[1, 2].abs().sum() == 0 and torch.allclose(n2[1, :2], n[1, :2])
    np.testing.assert_array_equal(mcam(maps, torch.arange(4), per="frame").owner,
                                  mcam(n, torch.arange(4), normalised=True).owner)
    with pytest.raises(ValueError, match="frame"):
        normalise(maps, "video")


def test_normalise_by_zscore_compares_classes_in_standard_units(maps):
    """`scale="zscore"`: one shared affine of each class's standard scores (NumPy reference), so every
    class keeps its own order, the whole lies in [0, 1], and max-of-CAMs' owner is the argmax of the z-scores."""
    m = maps.numpy().astype(np.float64)
    z = (m - m.mean(axis=(1, 2, 3), keepdims=True)) / m.std(axis=(1, 2, 3), keepdims=True)
    ref = (z - z.min()) / (z.max() - z.min())
    n = normalise(maps, "clip", "zscore")
    np.testing.assert_allclose(n.numpy(), ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(max_of_cams(maps, torch.arange(4), scale="zscore").owner.numpy(), z.argmax(0))
    zf = (m - m.mean(axis=(2, 3), keepdims=True)) / m.std(axis=(2, 3), keepdims=True)
    np.testing.assert_allclose(normalise(maps, "frame", "zscore").numpy(), (zf - zf.min()) / (zf.max() - zf.min()),
                               rtol=1e-4, atol=1e-5)
    flat = maps.clone()
    flat[2] = 3.0  # a constant map says nothing: it sits at the bottom and owns no pixel
    n2 = normalise(flat, "clip", "zscore")
    assert n2[2].abs().sum() == 0 and n2.max() == 1
    assert not (max_of_cams(flat, torch.arange(4), scale="zscore").owner == 2).any()
    assert normalise(torch.ones(2, 2, 3, 3), "clip", "zscore").abs().sum() == 0
    with pytest.raises(ValueError, match="zscore"):
        normalise(maps, "clip", "rank")


def test_zscore_gives_a_pixel_to_the_class_that_stands_out_there():
    """Pixel 4: min-max gives it to a class whose map is high almost everywhere (0.9 of its range), over one
    that is low everywhere but there and at its maximum elsewhere (0.43 of its range); z-scores give it to
    the one that singles it out (z 0.90 against 0.29)."""
    broad = torch.full((1, 1, 1, 10), 0.9)
    broad[..., 0], broad[..., 9] = 0.0, 1.0
    peaked = torch.zeros(1, 1, 1, 10)
    peaked[..., 0], peaked[..., 4] = 2.0, 0.85
    maps = torch.cat([broad, peaked])
    assert int(max_of_cams(maps, torch.arange(2)).owner[0, 0, 4]) == 0
    assert int(max_of_cams(maps, torch.arange(2), scale="zscore").owner[0, 0, 4]) == 1


def test_suppression_and_owner_follow_the_definition(maps):
    delta = 0.1
    n = normalise(maps).numpy()
    sup = suppress_similar(torch.from_numpy(n), delta).numpy()
    diff = np.abs(n[:, None] - n[None])  # (S, S, ...)
    diff[np.arange(4), np.arange(4)] = np.inf
    near = (diff < delta).any(1)
    assert near.any() and (~near).any()
    assert (sup[near] == 0).all()  # both maps zero where two differ by < delta
    np.testing.assert_array_equal(sup[~near], n[~near])  # untouched elsewhere
    out = mcam(maps, torch.arange(4), delta=delta, sigma=1.1)
    peak = sup.max(0)
    owner_ref = np.where(peak > 0, sup.argmax(0), -1)
    np.testing.assert_array_equal(out.owner.numpy(), owner_ref)
    np.testing.assert_allclose(out.intensity.numpy(), smooth(torch.from_numpy(peak), 1.1).numpy(), atol=1e-6)


def test_kernel_is_5x5_gaussian():
    k = gaussian_kernel(1.1).numpy()
    assert k.shape == (KERNEL_SIZE, KERNEL_SIZE) == (5, 5)
    assert k.sum() == pytest.approx(1.0) and k[2, 2] == k.max()
    g = np.exp(-((np.arange(5) - 2) ** 2) / (2 * 1.1 ** 2))
    np.testing.assert_allclose(k, np.outer(g, g) / np.outer(g, g).sum(), rtol=1e-6)
    img = np.zeros((1, 9, 9), np.float32)
    img[0, 4, 4] = 1
    out = smooth(torch.from_numpy(img), 1.1).numpy()[0]
    assert (out[2:7, 2:7] > 0).all() and out[[0, 1, 7, 8]].sum() == 0 and out[:, [0, 1, 7, 8]].sum() == 0
    np.testing.assert_allclose(out[2:7, 2:7], k, rtol=1e-6)
    cv2 = pytest.importorskip("cv2")
    x = np.random.default_rng(0).random((20, 20)).astype(np.float32)
    ref = cv2.GaussianBlur(x, (5, 5), 1.1, borderType=cv2.BORDER_REFLECT_101)
    np.testing.assert_allclose(smooth(torch.from_numpy(x)[None], 1.1).numpy()[0], ref, atol=1e-5)


def test_max_of_cams_baseline(maps):
    b = max_of_cams(maps, torch.arange(4))
    n = normalise(maps)
    assert torch.equal(b.intensity, n.max(0).values) and torch.equal(b.owner, n.argmax(0))


def test_render_overlay_boundaries_and_video(tmp_path):
    t, h, w = 3, 32, 32
    frames = np.full((t, h, w, 3), 100, np.uint8)
    owner = np.full((h, w), -1)
    owner[:, :16], owner[:, 16:] = 0, 1
    inten = np.ones((h, w), np.float32)
    b = class_boundaries(owner)
    assert b[:, 15:17].all() and b.sum() == 2 * h
    img = mcam_overlay(frames[0], inten, owner, ["a", "b"], labels=False)
    assert (img[5, 15] == (40, 90, 255)).all() and img[5, 2, 0] > img[5, 2, 2]  # blue edge, red region
    strip = side_by_side(frames[0], np.zeros((2, h, w)), ["a", "b"])
    assert strip.shape == (h, 2 * w + 4, 3)
    mp4 = write_video([img] * 4, tmp_path / "o.mp4", fps=4)
    gif = write_video([img] * 4, tmp_path / "o.gif", fps=4)
    import av
    with av.open(str(mp4)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 4
    assert gif.stat().st_size > 0
