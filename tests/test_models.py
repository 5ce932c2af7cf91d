"""Model recipes, inflation, registry and checkpoint I/O."""
from __future__ import annotations

import pytest
import torch
import torchvision

from mmit_interp.checkpoint import CheckpointError, load_authors_state_dict, load_model, save_checkpoint
from mmit_interp.models import build_model, forward_batch, inflate_from_file, list_models
from mmit_interp.vocab import Vocabulary


def test_registry_and_errors():
    assert {"i3d_r18", "i3d_r50", "resnet3d50", "soundnet", "fusion"} <= set(list_models())
    with pytest.raises(KeyError, match="unknown model 'nope'"):
        build_model("nope", 3)


@torch.no_grad()
def test_authors_resnet3d50_shape_and_release_names(tmp_path):
    m = build_model("resnet3d50", 313).eval()
    assert m.forward_features(torch.randn(1, 3, 16, 224, 224)).shape == (1, 2048, 1, 7, 7)
    assert m.conv1.kernel_size == (7, 7, 7) and m.layer1[0].conv2.kernel_size == (3, 3, 3)
    # the authors' release: DataParallel `module.` prefix and a `last_linear` head
    released = {f"module.{k.replace('fc.', 'last_linear.')}": v.clone() for k, v in m.state_dict().items()}
    torch.save({"state_dict": released}, tmp_path / "released.pth")
    m2 = build_model("resnet3d50", 313)
    load_authors_state_dict(m2, tmp_path / "released.pth")
    assert torch.equal(m2.fc.weight, m.fc.weight)
    with pytest.raises(CheckpointError, match="resnet3d50"):
        load_authors_state_dict(build_model("resnet3d50", 10), tmp_path / "released.pth")


@torch.no_grad()
def test_wang_i3d_keeps_time_and_inflation_reproduces_2d(tmp_path):
    m = build_model("i3d_r50", 5).eval()
    f = m.forward_features(torch.randn(1, 3, 8, 64, 64))
    assert f.shape == (1, 2048, 8, 2, 2)
    assert m.layer3[0].conv1.kernel_size == (3, 1, 1) and m.layer3[1].conv1.kernel_size == (1, 1, 1)
    r2d = torchvision.models.resnet50().eval()
    torch.save(r2d.state_dict(), tmp_path / "r50.pth")
    untouched = inflate_from_file(m, tmp_path / "r50.pth")
    assert untouched == ["fc.bias", "fc.weight"]
    img = torch.randn(1, 3, 64, 64)
    static = img.unsqueeze(2).repeat(1, 1, 8, 1, 1)
    out3d = m.bn1(m.conv1(static))[:, :, 4]  # a middle frame: no temporal padding effects
    out2d = r2d.bn1(r2d.conv1(img))
    assert torch.allclose(out3d, out2d, atol=1e-4)


@torch.no_grad()
def test_small_soundnet_fusion_shapes_and_features_from():
    v = build_model("i3d_r18", 7, width=8, layer4_stride=1).eval()
    x = torch.randn(2, 3, 8, 64, 64)
    f = v.forward_features(x)
    assert f.shape == (2, 64, 8, 4, 4)  # time kept after the stem
    names = [n for n, _ in v.blocks()]
    assert names[0] == "stem" and names[-1] == "layer4.1"
    h = v.layer3(v.layer2(v.layer1(v.stem(x))))
    assert torch.allclose(v.forward_head(v.features_from("layer3.1", h)), v(x), atol=1e-5)
    s = build_model("soundnet", 7, width_mult=0.25).eval()
    a = torch.randn(2, 1, 66150)
    assert s.forward_features(a).shape == (2, 256, 3)
    fu = build_model("fusion", 7, visual_kwargs={"width": 8}, audio_kwargs={"width_mult": 0.25}).eval()
    batch = {"video": x, "audio": a, "has_audio": torch.tensor([True, False])}
    out = forward_batch(fu, batch)
    assert out.shape == (2, 7)
    # a clip without sound: its audio features are zeroed, so the audio input does not matter
    batch2 = dict(batch, audio=torch.randn(2, 1, 66150))
    assert torch.allclose(forward_batch(fu, batch2)[1], out[1], atol=1e-5)


def test_checkpoint_roundtrip_and_wrong_model(tmp_path):
    vocab = Vocabulary(["a", "b", "c"])
    m = build_model("i3d_r18", 3, width=8)
    save_checkpoint(tmp_path / "c.pt", m, model_name="i3d_r18", model_kwargs={"width": 8}, vocab=vocab,
                    transforms={"frames": 4, "size": 32})
    m2, meta = load_model(tmp_path / "c.pt")
    assert meta["vocab"] == vocab and meta["model"]["name"] == "i3d_r18"
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), m2.state_dict().values()))
    with pytest.raises(CheckpointError, match=r"'i3d_r18' checkpoint, not 'i3d_r50'"):
        load_model(tmp_path / "c.pt", expect="i3d_r50")
    ck = torch.load(tmp_path / "c.pt", weights_only=True)
    ck["model"]["kwargs"] = {"width": 16}
    torch.save(ck, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"weights for 'i3d_r18'.*shape mismatches"):
        load_model(tmp_path / "bad.pt")


def test_checkpoint_never_unpickles_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    torch.save({"format": "mmit-interp/1", "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="not a readable weights-only checkpoint"):
        load_model(tmp_path / "evil.pt")


@torch.no_grad()
def test_lse_head_pools_the_class_maps():
    """`head_r`: the logits are the log-sum-exp pool of the CAMs `W F + b`; r -> 0 is GAP + linear, large r the max."""
    torch.manual_seed(0)
    m = build_model("i3d_r18", 4, width=4, layer4_stride=1, head_r=3.0).eval()
    f = m.forward_features(torch.randn(2, 3, 4, 32, 32))
    maps = torch.einsum("nkthw,ck->ncthw", f.double(), m.fc.weight.double()).flatten(2) + m.fc.bias.double()[:, None]
    ref = (torch.log(torch.exp(3.0 * maps).mean(2))) / 3.0  # the definition, in float64
    assert torch.allclose(m.forward_head(f).double(), ref, atol=1e-5)
    m.head_r = 1e-3
    assert torch.allclose(m.forward_head(f), m.fc(m.pool(f)), atol=1e-3)
    m.head_r = 1e4
    assert torch.allclose(m.forward_head(f).double(), maps.amax(2), atol=1e-3)


@torch.no_grad()
def test_spatial_kernels_bound_the_receptive_field():
    """1x1 spatial kernels in stages 3-4 keep a far pixel out of a last-map position (centre ~28 px, the
    pixel >= 32 px away); 3x3 kernels do not."""
    def reach(**kw) -> bool:
        torch.manual_seed(0)
        m = build_model("i3d_r18", 3, width=4, layer4_stride=1, stem_pool=False, **kw).eval()
        for bn in m.modules():  # undo the zero-init of each block's last BN: every conv path counts
            if isinstance(bn, torch.nn.BatchNorm3d):
                torch.nn.init.ones_(bn.weight)
        x = torch.randn(1, 3, 4, 64, 64)
        y = x.clone()
        y[..., 60:, 60:] += 5.0  # the bottom-right corner
        return not torch.equal(m.forward_features(x)[..., 3, 3], m.forward_features(y)[..., 3, 3])

    assert reach()
    assert not reach(spatial_kernels=(3, 3, 1, 1))
    m = build_model("i3d_r18", 3, width=4, spatial_kernels=(3, 3, 1, 1), temporal_kernels=(3, 1, 1, 3))
    assert m.layer3[0].conv1.kernel_size == (1, 1, 1) and m.layer4[1].conv2.kernel_size == (3, 1, 1)


@torch.no_grad()
def test_time_symmetric_trunk_commutes_with_reversing_the_clip():
    """`time_symmetric`: every temporal kernel is applied symmetrised, so the features of a reversed clip
    are the reversed features (no map can lag its actor) and the logits do not change; the state dict
    is a plain model's, so weights load across the two."""
    torch.manual_seed(0)
    kw = dict(width=4, layer4_stride=1, head_r=5.0)
    m = build_model("i3d_r18", 3, time_symmetric=True, **kw).eval()
    for bn in m.modules():  # undo the zero-init of each block's last BN: every conv path counts
        if isinstance(bn, torch.nn.BatchNorm3d):
            torch.nn.init.ones_(bn.weight)
    x = torch.randn(2, 3, 6, 32, 32)
    f = m.forward_features(x)
    assert torch.allclose(m.forward_features(x.flip(2)), f.flip(2), atol=1e-5)
    assert torch.allclose(m(x.flip(2)), m(x), atol=1e-5)
    plain = build_model("i3d_r18", 3, **kw).eval()
    plain.load_state_dict(m.state_dict())
    assert not torch.allclose(plain.forward_features(x.flip(2)), plain.forward_features(x).flip(2), atol=1e-3)
    assert all(type(c).__name__ == "TimeSymmetricConv3d" for c in m.modules()
               if isinstance(c, torch.nn.Conv3d) and c.kernel_size[0] > 1)
