"""Explanation methods and metrics against independent references on hand-made maps and hand-built models."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mmit_interp.explain.faithfulness import auc, pairwise_rank_correlation, perturbation_curve, rank_correlation
from mmit_interp.explain.methods import (RISE, GradCAMPlusPlus, IntegratedGradients, Occlusion, RandomMap, blurred,
                                         make_method)
from mmit_interp.explain.modality import audio_cam, shapley_split
from mmit_interp.explain.sanity import cascade_groups, cascading_randomisation
from mmit_interp.explain.table import count_forwards, interval
from mmit_interp.explain.localisation import energy, pointing
from mmit_interp.models import build_model
from mmit_interp.models.resnet3d import GapLinearNet

T, H, W = 4, 16, 16
REGION = (slice(1, 3), slice(4, 10), slice(2, 8))  # the voxels a RegionNet sees


class RegionNet(GapLinearNet):
    """Hand-built 'video model': logit 0 = sum of channel 0 over REGION, logit 1 = sum over the rest."""

    inputs = ("video",)

    def __init__(self):
        super().__init__()
        m = torch.zeros(T, H, W)
        m[REGION] = 1.0
        self.register_buffer("mask", m)
        self.conv1 = nn.Identity()  # what count_forwards hooks
        self.fc = nn.Linear(1, 1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(x)[:, :1]

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        s = f[:, 0]
        return torch.stack([(s * self.mask).flatten(1).sum(1), (s * (1 - self.mask)).flatten(1).sum(1)], 1)


@pytest.fixture(scope="module")
def clip():
    return torch.rand(3, T, H, W, generator=torch.Generator().manual_seed(0))


def test_deletion_insertion_equal_region_sum_reference(clip):
    net = RegionNet()
    sal = torch.rand(T, H, W, generator=torch.Generator().manual_seed(1))
    base = torch.zeros_like(clip)
    steps = 8
    dele = perturbation_curve(net, clip, base, sal, mode="deletion", steps=steps, score=lambda z: z, batch_size=3)
    ins = perturbation_curve(net, clip, base, sal, mode="insertion", steps=steps, score=lambda z: z)
    # reference: plain NumPy, voxel by voxel in descending saliency order
    x, s, region = clip[0].numpy(), sal.numpy().ravel(), net.mask.numpy().ravel().astype(bool)
    order = sorted(range(s.size), key=lambda i: -s[i])
    for k in range(steps + 1):
        gone = np.zeros(s.size, bool)
        gone[order[: k * s.size // steps]] = True
        kept = x.ravel() * ~gone
        assert dele[k, 0].item() == pytest.approx(kept[region].sum(), abs=1e-4)
        assert dele[k, 1].item() == pytest.approx(kept[~region].sum(), abs=1e-4)
        assert ins[k, 0].item() == pytest.approx((x.ravel() * gone)[region].sum(), abs=1e-4)
    # the region's own indicator deletes the region first: its score is gone at the first step, the other class barely touched
    ind = net.mask + 0.0
    d = perturbation_curve(net, clip, base, ind, steps=steps, score=lambda z: z)
    n_region = int(net.mask.sum())
    k = next(k for k in range(steps + 1) if k * ind.numel() // steps >= n_region)
    assert k == 1 and d[1, 0].item() == pytest.approx(0.0, abs=1e-5) and d[1, 1].item() > 0.9 * d[0, 1].item()
    assert auc(d)[0] < auc(perturbation_curve(net, clip, base, -ind, steps=steps, score=lambda z: z))[0]


def test_auc_is_trapezoid_over_fraction():
    c = np.array([[1.0], [0.5], [0.0]])
    assert auc(c)[0] == pytest.approx(0.5)
    assert auc(np.ones((11, 2))) == pytest.approx([1.0, 1.0])


def test_rank_correlation_and_discriminativeness():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    a, b = rng.random((2, 4, 5)), rng.integers(0, 3, (2, 4, 5)).astype(float)  # b has ties
    assert rank_correlation(a, b) == pytest.approx(spearmanr(a.ravel(), b.ravel())[0], abs=1e-12)
    assert rank_correlation(a, np.ones_like(a)) is None
    maps = np.stack([a, a, -a])
    assert pairwise_rank_correlation(maps) == pytest.approx((1 - 1 - 1) / 3)
    assert pairwise_rank_correlation(maps[:1]) is None


def test_interval_is_student_t():
    from scipy import stats

    v = [0.1, 0.4, 0.35, 0.8, None]
    r = interval(v)
    lo, hi = stats.t.interval(0.95, 3, loc=np.mean(v[:4]), scale=stats.sem(v[:4]))
    assert (r["mean"], r["n"]) == (pytest.approx(np.mean(v[:4])), 4)
    assert (r["lo"], r["hi"]) == (pytest.approx(lo), pytest.approx(hi))
    assert interval([0.3])["lo"] is None and interval([])["mean"] is None


def test_gradcam_plus_plus_weights_match_loop_reference():
    g = torch.Generator().manual_seed(3)
    acts = torch.rand(2, 3, 2, 3, 3, generator=g)
    grads = torch.randn(4, 2, 3, 2, 3, 3, generator=g)
    grads[0, 0, 0] = 0.0
    w = GradCAMPlusPlus(nn.Identity()).weights(acts, grads, torch.zeros(2, 4, dtype=torch.long))
    ref = np.zeros((2, 4, 3))
    a, gr = acts.double().numpy(), grads.double().numpy()
    for s in range(4):
        for n in range(2):
            for k in range(3):
                tot = a[n, k].sum()
                for idx in np.ndindex(*gr.shape[3:]):
                    gv = gr[(s, n, k) + idx]
                    if gv != 0:
                        ref[n, s, k] += max(gv, 0) * gv ** 2 / (2 * gv ** 2 + tot * gv ** 3)
    assert np.allclose(w.numpy(), ref, atol=1e-5)


def test_occlusion_equals_per_cube_reference(clip):
    net = RegionNet()
    occ = Occlusion(net, cells=(2, 4, 4), batch_size=7)
    res = occ(clip[None], classes=[0, 1])
    base = blurred(clip[None])[0]
    s0 = torch.sigmoid(net(clip[None]))[0]
    for (ct, ch, cw) in [(0, 0, 0), (1, 2, 1), (0, 3, 3)]:
        x = clip.clone()
        sl = (slice(ct * 2, ct * 2 + 2), slice(ch * 4, ch * 4 + 4), slice(cw * 4, cw * 4 + 4))
        x[(slice(None),) + sl] = base[(slice(None),) + sl]
        drop = s0 - torch.sigmoid(net(x[None]))[0]
        assert torch.allclose(res.raw[0, :, ct, ch, cw], drop, atol=1e-6)
        assert torch.allclose(res.maps[0, :, sl[0], sl[1], sl[2]], drop.view(2, 1, 1, 1).expand(2, 2, 4, 4), atol=1e-6)
    with count_forwards(net) as n:
        occ(clip[None], classes=[0])
    assert n[0] == 1 + 1 + 2 * 4 * 4  # features pass + the clip + one per cube


def test_rise_equals_weighted_mask_sum_and_finds_the_region():
    net = RegionNet()
    clip = torch.zeros(3, T, H, W)
    clip[0][REGION] = 0.03  # the region's logit ~2 when present: the sigmoid is not saturated
    rise = RISE(net, n_masks=64, cells=(2, 4, 4), seed=5, batch_size=16)
    res = rise(clip[None], classes=[0])
    masks = RISE(net, n_masks=64, cells=(2, 4, 4), seed=5).masks((T, H, W))
    assert masks.min() >= 0 and masks.max() <= 1
    base = blurred(clip[None])[0]
    ref = sum(torch.sigmoid(net((base + m * (clip - base))[None]))[0, 0] * m for m in masks) / masks.sum(0)
    assert torch.allclose(res.maps[0, 0], ref, atol=1e-5)
    inside = net.mask.bool()
    assert res.maps[0, 0][inside].mean() > res.maps[0, 0][~inside].mean()


def test_integrated_gradients_completeness_on_linear_model(clip):
    net = RegionNet()
    res = IntegratedGradients(net, steps=4, batch_size=3)(clip[None], classes=[0, 1])
    base = blurred(clip[None])
    diff = net(clip[None]) - net(base)
    assert torch.allclose(res.maps[0].flatten(1).sum(1), diff[0], atol=1e-4)  # exact for a linear model
    assert res.maps[0, 0][~net.mask.bool()].abs().max() == 0


def test_random_map_and_make_method():
    net = RegionNet()
    r = RandomMap(net, seed=1)
    x = torch.rand(1, 3, T, H, W)
    a, b = r(x, classes=[0]), r(x, classes=[0])
    assert a.raw.shape == (1, 1, T, H, W) and not torch.equal(a.raw, b.raw)
    with pytest.raises(ValueError, match="unknown explanation method"):
        make_method("nope", net)


@pytest.fixture(scope="module")
def fusion():
    torch.manual_seed(4)
    f = build_model("fusion", 5, visual_kwargs={"width": 8, "layer4_stride": 1}, audio_kwargs={"width_mult": 0.0625})
    for m in f.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.bias.data.normal_(0, 0.1)
    return f.eval()


def test_shapley_split_adds_up_and_is_exact_on_logits(fusion):
    x, a = torch.randn(2, 3, 4, 32, 32), torch.randn(2, 1, 22050)
    mask = torch.tensor([1.0, 0.0])
    for score in ("prob", "logit"):
        sp = shapley_split(fusion, x, a, mask, score=score)
        assert torch.allclose(sp["video"] + sp["audio"], sp["full"] - sp["empty"], atol=1e-5)
    full = fusion(x, a, mask)
    assert torch.allclose(sp["full"], full, atol=1e-5)
    assert torch.allclose(sp["empty"], fusion.fc.bias.expand(2, -1), atol=1e-6)
    wv = fusion.fc.weight[:, : fusion.visual_dim]
    assert torch.allclose(sp["video"], fusion.visual.pool(fusion.visual.forward_features(x)) @ wv.T, atol=1e-4)
    assert torch.all(sp["audio"][1] == 0)  # no sound track: nothing to attribute to audio
    lse = build_model("fusion", 5, visual_kwargs={"width": 8, "layer4_stride": 1, "head_r": 5.0},
                      audio_kwargs={"width_mult": 0.0625}).eval()
    sp = shapley_split(lse, x, a, mask, score="logit")
    with torch.no_grad():
        vis = lse.visual_term(lse.visual.forward_features(x))
    assert torch.allclose(sp["video"], vis, atol=1e-5) and torch.allclose(sp["full"], lse(x, a, mask), atol=1e-5)


def test_audio_cam_mean_is_the_audio_part_of_the_logit(fusion):
    a = torch.randn(2, 1, 22050)
    cls = torch.tensor([[0, 3], [1, 2]])
    maps, raw = audio_cam(fusion, a, cls, n_frames=6, audio_mask=torch.tensor([1.0, 0.0]))
    wa = fusion.fc.weight[:, fusion.visual_dim:]
    part = fusion.audio.pool(fusion.audio.forward_features(a)) @ wa.T
    assert maps.shape == (2, 2, 6)
    assert torch.allclose(raw[0].mean(-1), part[0, cls[0]], atol=1e-5)
    assert torch.all(raw[1] == 0)


def test_cascading_randomisation_top_down(fusion):
    model = build_model("i3d_r18", 3, width=8)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.weight.data.fill_(2.0)  # as if trained: reset_parameters() brings it back to 1
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert [n for n, _ in cascade_groups(model)] == ["fc", "layer4", "layer3", "layer2", "layer1", "stem"]
    assert [n for n, _ in cascade_groups(fusion)][:2] == ["fc", "visual.layer4"]
    steps = list(cascading_randomisation(model))
    rand = steps[-1][1]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the trained model is untouched
    changed = [k for k, v in rand.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])]
    assert {k.split(".")[0] for k in changed} == {"fc", "layer4", "layer3", "layer2", "layer1", "conv1", "bn1"}


def test_quantus_agrees_on_2d_frames():
    """Where Quantus computes the same metric on 2-D frames: pixel flipping (= deletion), pointing game,
    relevance mass (= energy in box), Spearman similarity."""
    quantus = pytest.importorskip("quantus")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3))
    net.eval()
    x = torch.rand(2, 1, 8, 8)
    a = torch.rand(2, 1, 8, 8)
    y = np.array([0, 2])
    q = quantus.PixelFlipping(features_in_step=4, perturb_baseline=0.0, normalise=False, disable_warnings=True)
    curves = np.array(q(model=net, x_batch=x.numpy(), y_batch=y, a_batch=a.numpy(), channel_first=True,
                        softmax=False, device="cpu"))
    for i in range(2):
        ours = perturbation_curve(lambda v: net(v[:, :, 0]), x[i][:, None], torch.zeros(1, 1, 8, 8), a[i, 0][None],
                                  steps=16, score=lambda z: z)
        assert np.allclose(ours[1:, y[i]].numpy(), curves[i], atol=1e-6)
    s = np.zeros((2, 1, 8, 8))
    s[0, 0, 2:5, 2:6] = 1
    s[1, 0, 5:, :3] = 1
    a2 = a.numpy().copy()
    a2[0, 0, 3, 3] = 2.0  # a unique maximum inside the box, and one outside
    a2[1, 0, 0, 7] = 2.0
    kw = dict(model=net, x_batch=x.numpy(), y_batch=y, a_batch=a2, s_batch=s, channel_first=True, device="cpu")
    qp = quantus.PointingGame(disable_warnings=True)(**kw)
    qe = quantus.RelevanceMassAccuracy(disable_warnings=True)(**kw)
    for i in range(2):
        assert pointing(a2[i, 0], s[i, 0].astype(bool)) == float(qp[i])
        assert energy(a2[i, 0], s[i, 0].astype(bool)) == pytest.approx(qe[i], abs=1e-6)
    from quantus.functions.similarity_func import correlation_spearman

    assert rank_correlation(a[0], a[1]) == pytest.approx(correlation_spearman(a[0].numpy().ravel(), a[1].numpy().ravel()),
                                                         abs=1e-6)


def test_store_explanations_replace(tmp_path):
    from mmit_interp.store import ResultsStore

    rows = [{"method": "cam", "metric": "pointing", "mean": 0.5, "lo": 0.4, "hi": float("nan"), "n": 3}]
    with ResultsStore(tmp_path) as st:
        st.register_run({"sha256": "x", "vocab": ["a"]})
        st.write_explanations("w:val", rows)
        st.write_explanations("w:val", rows)
        got = st.explanations()
    assert len(got) == 1 and got[0]["mean"] == 0.5 and got[0]["hi"] is None
