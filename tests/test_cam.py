"""CAM: single-pass CAM of all classes = classic per-class CAM = Grad-CAM up to normalisation."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from mmit_interp.explain.cam import GradCAM, LinearCAM, cam_for, select_classes
from mmit_interp.models import build_model


def _randomise_bn(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm3d, nn.BatchNorm2d, nn.BatchNorm1d)):
            m.weight.data = torch.rand(m.weight.shape, generator=g) + 0.5
            m.bias.data = torch.randn(m.bias.shape, generator=g) * 0.1
    return model.eval()


@pytest.fixture(scope="module")
def video_model():
    torch.manual_seed(0)
    return _randomise_bn(build_model("i3d_r18", 7, width=8, layer4_stride=1))


@pytest.fixture(scope="module")
def clip():
    return torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(2))


def _classic_cam(model, x, c):
    """Zhou et al.: features of the last conv layer weighted by the fc row of one class, in NumPy."""
    f = model.forward_features(x).detach().numpy()  # (N, K, T, H, W)
    w = model.fc.weight.detach().numpy()[c]
    return np.tensordot(w, f, axes=([0], [1]))  # (N, T, H, W)


def test_single_pass_equals_classic_per_class(video_model, clip):
    res = LinearCAM(video_model)(clip, top_k=4)
    assert res.maps.shape == (2, 4, 4, 32, 32) and res.raw.shape[:2] == (2, 4)
    assert torch.allclose(res.logits, video_model(clip), atol=1e-5)
    assert torch.equal(res.classes, video_model(clip).topk(4, 1).indices)
    for n in range(2):
        for j, c in enumerate(res.classes[n].tolist()):
            np.testing.assert_allclose(res.raw[n, j].numpy(), _classic_cam(video_model, clip, c)[n], rtol=1e-4, atol=1e-5)


def test_named_and_threshold_selection(video_model, clip):
    res = LinearCAM(video_model)(clip, classes=[5, 0])
    assert res.classes.tolist() == [[5, 0], [5, 0]]
    logits = torch.tensor([[3.0, -2.0, 0.5], [-1.0, 2.0, -3.0]])
    assert select_classes(logits, threshold=0.5).tolist() == [[0, 2], [1, 0]]  # padded with the next best
    with pytest.raises(ValueError):
        select_classes(logits, classes=[3])


def test_maps_align_with_frames(video_model, clip):
    """Time is kept by i3d_r18, so map frame t is built from feature frame t (no temporal mixing)."""
    res = LinearCAM(video_model)(clip, top_k=2)
    up = torch.nn.functional.interpolate(res.raw[0, :1, 1:2], size=(32, 32), mode="bilinear", align_corners=False)
    assert torch.allclose(res.maps[0, 0, 1], up[0, 0], atol=1e-5)


def _minmax(a: np.ndarray) -> np.ndarray:
    a = np.maximum(a, 0)
    return (a - a.min()) / (a.max() - a.min())


def test_gradcam_equals_cam_up_to_normalisation_2d():
    """A 2-D-like case (T = 1): Grad-CAM's weights are W[c] / (H'W'), so after ReLU and min-max
    (pytorch-grad-cam's normalisation) both maps are identical; checked against a per-class
    backward-pass reference written here."""
    torch.manual_seed(3)
    m = _randomise_bn(build_model("i3d_r18", 6, width=8, layer4_stride=1))
    x = torch.randn(1, 3, 1, 64, 64)
    cam = LinearCAM(m)(x, top_k=3)
    grad = GradCAM(m)(x, top_k=3)
    for j, c in enumerate(cam.classes[0].tolist()):
        f = m.forward_features(x).detach().requires_grad_(True)
        m.forward_head(f)[0, c].backward()
        w = f.grad[0].mean((1, 2, 3))  # one backward per class: the grad-cam way
        ref = torch.einsum("k,kthw->thw", w, f[0].detach())
        np.testing.assert_allclose(grad.raw[0, j].numpy(), ref.numpy(), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(_minmax(grad.raw[0, j].numpy()), _minmax(cam.raw[0, j].numpy()), atol=1e-5)


def test_gradcam_at_named_layer_matches(video_model, clip):
    a = GradCAM(video_model, "layer4")(clip, top_k=3)
    b = LinearCAM(video_model)(clip, top_k=3)
    n = b.raw[0, 0].numel()
    assert torch.allclose(a.raw * n, b.raw, atol=1e-4)


def test_fusion_visual_cam_is_exact_linear_split():
    torch.manual_seed(4)
    f = _randomise_bn(build_model("fusion", 5, visual_kwargs={"width": 8, "layer4_stride": 1},
                                  audio_kwargs={"width_mult": 0.0625}))
    x, a = torch.randn(2, 3, 4, 32, 32), torch.randn(2, 1, 22050)
    mask = torch.tensor([1.0, 0.0])
    cam = cam_for(f)
    assert isinstance(cam, LinearCAM)
    res = cam(x, audio=a, audio_mask=mask, top_k=2)
    assert torch.allclose(res.logits, f(x, a, mask), atol=1e-5)
    grad = GradCAM(f)(x, audio=a, audio_mask=mask, top_k=2)
    assert torch.allclose(grad.raw * res.raw[0, 0].numel(), res.raw, atol=1e-4)
    # logit = sum over positions of the CAM / (T'H'W') + audio part + bias, exactly
    fv = f.visual.forward_features(x)
    a_part = f.fc.weight[:, f.visual_dim:] @ (f.audio.pool(f.audio.forward_features(a)) * mask[:, None]).T
    c = res.classes[0, 0]
    assert torch.allclose(res.raw[0, 0].mean() + a_part[c, 0] + f.fc.bias[c], res.logits[0, c], atol=1e-4)
    assert fv.shape[1] == f.visual_dim


def test_fusion_over_an_lse_trunk_pools_its_class_maps_as_the_trunk_does():
    """Fusing must not average maps the visual trunk was trained to pool by log-sum-exp: the visual term
    is the trunk's own pooling of the CAMs, and `pool_weights` decomposes it exactly."""
    torch.manual_seed(5)
    kw = {"width": 8, "layer4_stride": 1, "head_r": 5.0}
    f = _randomise_bn(build_model("fusion", 5, visual_kwargs=kw, audio_kwargs={"width_mult": 0.0625}))
    x, a = torch.randn(2, 3, 4, 32, 32), torch.randn(2, 1, 22050)
    mask = torch.tensor([1.0, 0.0])
    res = cam_for(f)(x, audio=a, audio_mask=mask, top_k=2)
    with torch.no_grad():
        vis, aud = f.terms(x, a, mask)
    assert torch.allclose(vis + aud + f.fc.bias, f(x, a, mask), atol=1e-5)
    assert torch.all(aud[1] == 0)
    raw = res.raw[0, 0].flatten()  # the CAM of the top class of clip 0 on the last map
    c = res.classes[0, 0]
    lse = (torch.logsumexp(5.0 * raw, 0) - math.log(raw.numel())) / 5.0
    assert torch.allclose(lse + aud[0, c] + f.fc.bias[c], res.logits[0, c], atol=1e-4)
    assert not torch.allclose(raw.mean() + aud[0, c] + f.fc.bias[c], res.logits[0, c], atol=1e-3)
    fv = f.visual.forward_features(x).detach()
    w = f.pool_weights(fv, int(c))[0].detach()
    pooled = (fv[0].flatten(1) * w).sum(1)
    concentration = float(-(w * w.log()).sum() - math.log(w.numel())) / 5.0
    assert torch.allclose(f.fc.weight[c, : f.visual_dim] @ pooled + concentration, vis[0, c], atol=1e-4)


def test_cam_for_refuses_headless_without_layer():
    with pytest.raises(ValueError, match="target_layer"):
        cam_for(build_model("soundnet", 3, width_mult=0.0625))
