"""Bring your own model (models/adapters.py, import_model.py): every torchvision video model and 2-D
models per frame, random weights at small inputs: torchvision's own outputs, CAM / Grad-CAM maps of
the top-5 classes against per-class references, a dissection of a named layer, the split analyses,
the run-dir maker, the commands' flags and the dashboard's clip page; the authors' release format.

S3D and MViT need 16x224x224 (S3D's fixed 2x7x7 pool, MViT's fixed positional grid): their cases
are marked slow and dissect a 4-image concept set (6 Dec 2026, 1 thread, load ~5 on 2 cores: S3D 47 s,
MViT v2-S 82 s, v1-B 99 s; the other video models 3-5 s each).
"""
from __future__ import annotations

import copy
import time
from pathlib import Path

import pytest
import torch
import torchvision
from fastapi.testclient import TestClient

from dissect.engine import InputTransform, run_dissection
from mmit_interp.analysis.selectivity import block_selectivity
from mmit_interp.analysis.trunk import logits_from, run_until
from mmit_interp.checkpoint import CheckpointError, load_model
from mmit_interp.explain.cam import GradCAM, LinearCAM, cam_for
from mmit_interp.explain.methods import make_method
from mmit_interp.hooks import capture_activations
from mmit_interp.import_model import ModelSource, import_run
from mmit_interp.models import build_model
from mmit_interp.vocab import Vocabulary
from test_dissect_models import make_concepts
from webapp_support import tiny_clip

C = 7
SLOW = pytest.mark.slow
# (arch, frames, size, the layer dissected); S3D / MViT only take 16x224x224
VIDEO = [
    pytest.param("r3d_18", 4, 32, "layer4", id="r3d_18"),
    pytest.param("mc3_18", 4, 32, "layer3", id="mc3_18"),
    pytest.param("r2plus1d_18", 4, 32, "layer4", id="r2plus1d_18"),
    pytest.param("swin3d_t", 4, 32, "features.6", id="swin3d_t"),
    pytest.param("s3d", 16, 224, "features.15", id="s3d", marks=SLOW),
    pytest.param("mvit_v1_b", 16, 224, "blocks.14.grid", id="mvit_v1_b", marks=SLOW),
    pytest.param("mvit_v2_s", 16, 224, "blocks.14.grid", id="mvit_v2_s", marks=SLOW),
]


@pytest.fixture(scope="module")
def concepts(tmp_path_factory):
    return make_concepts(tmp_path_factory.mktemp("own_concepts"))


@pytest.fixture(scope="module")
def vocab_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("vocab") / "classes.txt"
    p.write_text("".join(f"action {i}\n" for i in range(C)))
    return p


def grad_cam_reference(model, layer: str, x: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """Grad-CAM one class at a time (one backward each): `(S, T', H', W')` for a single clip."""
    with capture_activations(model, [layer], detach=False) as acts:
        logits = model(x)
    out = []
    for c in classes:
        (g,) = torch.autograd.grad(logits[0, c], acts[layer], retain_graph=True)
        out.append(torch.einsum("k,k...->...", g[0].flatten(1).mean(1), acts[layer][0].detach()))
    return torch.stack(out)


def small_concepts(root: Path, size: int) -> Path:
    """Four images (a red square on noise, object + scene labels): enough to dissect the 16x224 models."""
    import numpy as np

    from mmit_interp.broden_format import BrodenWriter

    w = BrodenWriter(root, ["object", "scene"], image_size=(size, size), seg_size=(size // 2, size // 2))
    sq, scene = w.add_label("square", "object"), w.add_label("street", "scene")
    rng = np.random.default_rng(0)
    for i in range(4):
        img = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
        mask = np.zeros((size // 2, size // 2), np.int32)
        y, x = rng.integers(0, size // 4, size=2)
        mask[y: y + size // 4, x: x + size // 4] = sq
        img[2 * y: 2 * y + size // 2, 2 * x: 2 * x + size // 2, 0] = 250
        w.add_image(img, pixel={"object": [mask]}, whole={"scene": [scene]})
    w.close()
    return root


@pytest.mark.parametrize("arch,frames,size,layer", VIDEO)
def test_torchvision_video_model(arch, frames, size, layer, concepts, tmp_path):
    t0 = time.perf_counter()
    torch.manual_seed(0)
    m = build_model("torchvision_video", C, arch=arch).eval()
    tv = torchvision.models.get_model(arch, weights=None, num_classes=C).eval()
    assert list(m.state_dict()) == list(tv.state_dict())  # a torchvision state_dict loads as is
    tv.load_state_dict(m.state_dict())
    x = torch.randn(1, 3, frames, size, size)
    with torch.no_grad():
        assert torch.allclose(m(x), tv(x), atol=1e-5)

    res = cam_for(m)(x, top_k=5)
    assert res.maps.shape == (1, 5, frames, size, size) and len(set(res.classes[0].tolist())) == 5
    assert torch.isfinite(res.maps).all() and res.maps.abs().sum() > 0
    classes = res.classes[0].tolist()
    if m.cam_layer is None:  # exact CAM: sum_k W[c, k] F_k, and the logit is its pooled value plus the bias
        assert isinstance(cam_for(m), LinearCAM)
        last = "features" if arch == "s3d" else "layer4"  # per-class reference from plain torchvision
        with torch.no_grad(), capture_activations(tv, [last]) as acts:
            tv(x)
        w_tv = (tv.classifier[1].weight if arch == "s3d" else tv.fc.weight).flatten(1)
        for j, c in enumerate(classes):
            ref = (w_tv[c].view(-1, 1, 1, 1) * acts[last][0]).sum(0)
            assert torch.allclose(res.raw[0, j], ref, atol=1e-5), c
        f = m.forward_features(x)
        _, b = m.linear_head()
        pw = m.pool_weights(f, classes[0])
        pooled = (res.raw[0].flatten(1) * pw[0]).sum(1) + b[classes]
        assert torch.allclose(pooled, res.logits[0, classes], atol=1e-4)
    else:
        assert isinstance(cam_for(m), GradCAM) and m.cam_layer == layer
        ref = grad_cam_reference(m, m.cam_layer, x, classes[:2])  # all classes are one batched backward alike
        assert torch.allclose(res.raw[0, :2], ref, atol=1e-5, rtol=1e-4)

    for method in ("gradcam++", "random"):  # the other methods find the same grid (MViT: its spatial tokens)
        other = make_method(method, m)(x, top_k=2)
        assert other.maps.shape == (1, 2, frames, size, size) and other.raw.shape[2:] == res.raw.shape[2:]

    with torch.no_grad(), capture_activations(m, [layer]) as acts:
        m(x)
    assert acts[layer].dim() == 5  # the named layer is a (N, K, T', H', W') grid
    cs = concepts if size <= 64 else small_concepts(tmp_path / "concepts", 64)  # 16x224 models: 4 images
    r = run_dissection(m, [layer], [cs], quantile=0.2 if size <= 64 else 0.3,
                       transform=InputTransform(size=size, frames=frames), batch_size=12, progress=False)[str(cs)][layer]
    assert r.units == acts[layer].shape[1] and r.iou().shape[0] == r.units and torch.isfinite(r.thresholds).all()
    print(f"{arch}: {time.perf_counter() - t0:.1f} s")


@pytest.mark.parametrize("arch", ["r2plus1d_18", "swin3d_t"])
@torch.no_grad()
def test_blocks_split_the_model_exactly(arch):
    m = build_model("torchvision_video", C, arch=arch).eval()
    x = torch.randn(2, 3, 4, 32, 32)
    full = m(x)
    for name, _ in m.blocks()[1:]:
        p = run_until(m, name, {"video": x})
        assert torch.allclose(logits_from(m, name, p.feats), full, atol=1e-5), name
    last = m.blocks()[-1][0]
    sel = block_selectivity(m, last, {"video": x[:1]})
    assert sel["logits"].shape[1] == C


@torch.no_grad()
def test_mvit_token_grid_follows_query_pooling():
    m = build_model("torchvision_video", C, arch="mvit_v2_s")
    grids = [(b.thw_in, b.thw_out) for _, b in m.blocks()[1:]]
    assert grids[0] == ((8, 56, 56), (8, 56, 56)) and grids[1][1] == (8, 28, 28) and grids[-1][1] == (8, 7, 7)
    assert m.cam_layer == "blocks.14.grid"
    assert all(a[1] == b[0] for a, b in zip(grids, grids[1:]))


@pytest.mark.parametrize("family,arch", [("torchvision_frames", "resnet18"), ("timm_frames", "efficientnet_lite0"),
                                         ("torchvision_frames", "mobilenet_v3_small"),
                                         ("timm_frames", "mobilenetv3_small_100"),  # conv_head after the pooling
                                         ("timm_frames", "convnext_atto")])  # one block, feature_maps
def test_image_model_per_frame(family, arch, concepts):
    if family == "timm_frames":
        pytest.importorskip("timm")
    torch.manual_seed(0)
    m = build_model(family, C, arch=arch).eval()
    assert list(m.state_dict()) == list(m.net.state_dict())
    x = torch.randn(2, 3, 3, 64, 64)
    with torch.no_grad():
        per_frame = torch.stack([m.net(x[:, :, t]) for t in range(3)], 1).mean(1)  # the plain 2-D model, frame by frame
        assert torch.allclose(m(x), per_frame, atol=1e-5)
    res = cam_for(m)(x, top_k=5)
    assert res.maps.shape == (2, 5, 3, 64, 64)
    if m.cam_layer is None:  # GAP + linear: the CAM of frame t is the 2-D model's CAM of that frame
        w, _ = m.linear_head()
        f = m.forward_features(x)
        assert f.dim() == 5 and f.shape[2] == 3
        ref = torch.einsum("ck,nkthw->ncthw", w, f)
        assert torch.allclose(res.raw, torch.stack([ref[i, res.classes[i]] for i in range(2)]), atol=1e-5)
    else:
        assert m.cam_layer == m.blocks()[-1][0]
        ref = grad_cam_reference(m, m.cam_layer, x[:1], res.classes[0].tolist())
        assert torch.allclose(res.raw[0], ref, atol=1e-5, rtol=1e-4)
    layer = m.blocks()[-1][0]
    r = run_dissection(m, [layer], [concepts], quantile=0.2, transform=InputTransform(size=64, frames=2),
                       batch_size=12, progress=False)[str(concepts)][layer]
    assert r.units == m.forward_features(x[:1]).shape[1]


def test_resnet18_per_frame_matches_torchvision_cam():
    """GAP + linear 2-D model: our CAM equals the per-class CAM of each frame through plain torchvision."""
    torch.manual_seed(1)
    m = build_model("torchvision_frames", C, arch="resnet18").eval()
    tv = torchvision.models.resnet18(num_classes=C).eval()
    tv.load_state_dict(m.state_dict())
    x = torch.randn(1, 3, 2, 64, 64)
    res = LinearCAM(m)(x, top_k=5)
    with torch.no_grad(), capture_activations(tv, ["layer4"]) as acts:
        for t in range(2):
            tv(x[:, :, t])
            for j, c in enumerate(res.classes[0].tolist()):
                ref = sum(tv.fc.weight[c, k] * acts["layer4"][0, k] for k in range(tv.fc.in_features))
                assert torch.allclose(res.raw[0, j, t], ref, atol=1e-5)


def test_import_run_round_trip_and_errors(tmp_path, vocab_file, monkeypatch):
    src = ModelSource("torchvision", "r3d_18", str(vocab_file), frames=4, size=32)
    monkeypatch.chdir(tmp_path)
    default = import_run(src)
    assert default.parent == Path("runs/imported") and default.name.startswith("r3d_18-")
    assert import_run(ModelSource("torchvision", "r3d_18", str(vocab_file), frames=8, size=32)) != default
    run = import_run(src, tmp_path / "run")
    model, meta = load_model(run)
    assert meta["model"] == {"name": "torchvision_video", "kwargs": {"arch": "r3d_18"}}
    assert meta["transforms"]["frames"] == 4 and meta["vocab"] == Vocabulary.from_file(vocab_file)
    assert (run / "config.json").is_file() and (run / "moments_categories.txt").is_file()
    stamp = (run / "checkpoints" / "best.pt").stat().st_mtime_ns
    assert import_run(src, run) == run and (run / "checkpoints" / "best.pt").stat().st_mtime_ns == stamp  # reused

    weights = tmp_path / "w.pt"
    tv = torchvision.models.get_model("r3d_18", num_classes=C)
    torch.save({"state_dict": {f"module.{k}": v for k, v in tv.state_dict().items()}}, weights)
    run2 = import_run(ModelSource("torchvision", "r3d_18", str(vocab_file), str(weights), 4, 32), tmp_path / "run2")
    m2, _ = load_model(run2)
    assert torch.equal(m2.fc.weight, tv.fc.weight)

    torch.save(torchvision.models.get_model("r3d_18", num_classes=C + 3).state_dict(), tmp_path / "k10.pt")
    with pytest.raises(ValueError, match="10 classes but the vocabulary has 7"):
        import_run(ModelSource("torchvision", "r3d_18", str(vocab_file), str(tmp_path / "k10.pt")), tmp_path / "bad")
    torch.save(torchvision.models.get_model("mc3_18", num_classes=C).state_dict(), tmp_path / "mc3.pt")
    torch.save({k: v for k, v in tv.state_dict().items() if k != "fc.bias"}, tmp_path / "part.pt")
    with pytest.raises(CheckpointError, match="missing keys .*fc.bias"):
        import_run(ModelSource("torchvision", "r3d_18", str(vocab_file), str(tmp_path / "part.pt")), tmp_path / "bad")
    torch.save({"x": [1, 2]}, tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="not a state_dict"):
        import_run(ModelSource("torchvision", "r3d_18", str(vocab_file), str(tmp_path / "junk.pt")), tmp_path / "bad")
    with pytest.raises(ValueError, match="unknown torchvision video model|unknown torchvision image model"):
        import_run(ModelSource("torchvision", "r4d_99", str(vocab_file)), tmp_path / "bad")


def test_timm_transforms_default_to_the_architectures_pretrained_config(vocab_file):
    """A TensorFlow-ported timm model is normalised as its weights were trained (0.5/0.5), not with ImageNet's
    usual statistics; given values still win."""
    pytest.importorskip("timm")
    tf = ModelSource("timm", "tf_efficientnet_lite0", str(vocab_file)).transforms()
    assert tf["mean"] == [0.5, 0.5, 0.5] and tf["std"] == [0.5, 0.5, 0.5] and tf["size"] == 224
    assert ModelSource("timm", "resnet18", str(vocab_file)).transforms()["mean"] == [0.485, 0.456, 0.406]
    assert ModelSource("timm", "tf_efficientnet_lite0", str(vocab_file), mean=(0.1, 0.2, 0.3)).transforms()["mean"] == [0.1, 0.2, 0.3]


def test_commands_take_the_model_flags(tmp_path, vocab_file, capsys):
    from dissect.cli import main as dissect_main
    from mmit_interp.cli import analyze_main, cam_main
    from mmit_interp.import_model import main as import_main

    clip = tiny_clip(tmp_path / "c.mp4", seconds=1.0, size=48)
    flags = ["--torchvision", "swin3d_t", "--vocab", str(vocab_file), "--frames", "4", "--size", "32"]
    run = tmp_path / "swin"
    assert cam_main([str(clip), "--run", str(run), "--top-k", "3", *flags]) == 0
    out = capsys.readouterr().out
    assert "model torchvision_video" in out and len(list((run / "cams").glob("*/heat_*_0.png"))) == 3
    assert import_main(["--out", str(run), *flags]) == 0 and capsys.readouterr().out.strip() == str(run)  # same run
    assert analyze_main(["relations", "--run", str(run), "--block", "features.6", "--unit", "0", *flags]) == 0
    assert "features.6 unit 0 -> classes" in capsys.readouterr().out
    assert dissect_main(["--torchvision", "resnet18", "--vocab", str(vocab_file), "--frames", "2", "--size", "32",
                         str(tmp_path / "r18"), "--list-layers"]) == 0
    listing = capsys.readouterr().out
    assert "layer4 " in listing and "1x512x2x1x1" in listing  # the per-frame stage is a 5-D grid
    assert cam_main([str(clip), "--torchvision", "resnet18"]) == 2
    assert "--vocab is required" in capsys.readouterr().err


def test_imported_run_serves_a_clip_page(tmp_path, vocab_file):
    from webapp.main import create_app
    from webapp.settings import Settings, name_runs

    run = import_run(ModelSource("torchvision", "r2plus1d_18", str(vocab_file), frames=4, size=32), tmp_path / "r21d")
    clip = tiny_clip(tmp_path / "c.mp4", seconds=1.0, size=48)
    app = create_app(Settings(runs=(run,), run_names=name_runs((run,))))
    with TestClient(app, client=("127.0.0.1", 50000)) as c:
        assert c.get("/runs/r21d").status_code == 200
        r = c.post("/api/runs/r21d/clips", files={"file": ("c.mp4", clip.read_bytes(), "video/mp4")})
        assert r.status_code == 202, r.text
        deadline = time.time() + 60
        while (d := c.get(r.json()["api"]).json())["state"] in ("queued", "running") and time.time() < deadline:
            time.sleep(0.1)
        assert d["state"] == "done", d
        page = c.get(d["permalink"])
        assert page.status_code == 200 and 'id="scrub"' in page.text and "action " in page.text
        assert c.get(d["frames"]["mcam"][0]).status_code == 200


@torch.no_grad()
def test_authors_release_explains_a_clip_with_one_command(tmp_path, capsys):
    """The documented command: `mmit-cam clip.mp4 --authors --weights RELEASE --vocab CATEGORIES`."""
    from mmit_interp.cli import cam_main

    torch.manual_seed(0)
    names = [f"moment {i}" for i in range(5)]
    m = build_model("resnet3d50", len(names)).eval()
    released = {f"module.{k.replace('fc.', 'last_linear.')}": v for k, v in m.state_dict().items()}
    torch.save({"state_dict": released, "epoch": 1}, tmp_path / "multi_moments_resnet3d50.pth.tar")
    (tmp_path / "categories.txt").write_text("".join(f"{n},{i}\n" for i, n in enumerate(names)))
    clip = tiny_clip(tmp_path / "c.mp4", seconds=1.0, size=48)
    run = tmp_path / "authors"
    assert cam_main([str(clip), "--authors", "--weights", str(tmp_path / "multi_moments_resnet3d50.pth.tar"),
                     "--vocab", str(tmp_path / "categories.txt"), "--run", str(run), "--frames", "4", "--size", "64"]) == 0
    assert "model resnet3d50" in capsys.readouterr().out
    loaded, meta = load_model(run)
    assert torch.equal(loaded.fc.weight, m.fc.weight) and meta["vocab"].names == names


@pytest.mark.parametrize("family,arch", [("torchvision_video", "swin3d_t"), ("torchvision_frames", "resnet18")])
@torch.no_grad()
def test_deepcopy_is_a_whole_model(family, arch):
    """The sanity test randomises a deepcopy: every block of the copy, the stem view included, must use the copy's weights."""
    m = build_model(family, C, arch=arch).eval()
    x = torch.randn(1, 3, 2, 32, 32)
    before = m(x)
    twin = copy.deepcopy(m)
    assert torch.equal(twin(x), before)
    stem_conv = next(mod for mod in twin.modules() if isinstance(mod, (torch.nn.Conv2d, torch.nn.Conv3d)))
    stem_conv.weight.mul_(-3.0)
    assert not torch.allclose(twin(x), before) and torch.equal(m(x), before)


def test_per_frame_needs_feature_maps():
    pytest.importorskip("timm")
    with pytest.raises(ValueError, match="not 2-D maps .* convolutional backbone"):
        build_model("timm_frames", C, arch="vit_tiny_patch16_224")
    with pytest.raises(ValueError, match="unknown timm model"):
        build_model("timm_frames", C, arch="no_such_net")


def test_concept_path_defaults_to_the_trunks_own_blocks():
    """A concept path needs no block names: the last block and the last block of the stage before
    (a ResNet's layer4/layer3; EfficientNet's bn2/conv_head), so imported models get one too."""
    from mmit_interp.analysis.relations import concept_path, path_blocks

    pytest.importorskip("timm")
    for name, kw, shape, blocks in (("torchvision_video", {"arch": "r3d_18"}, (1, 3, 4, 32, 32), ("layer4", "layer3")),
                                    ("timm_frames", {"arch": "efficientnet_lite0"}, (1, 3, 2, 64, 64),
                                     ("bn2", "conv_head"))):
        torch.manual_seed(0)
        m = build_model(name, 5, **kw).eval()
        assert path_blocks(m) == blocks
        rows = concept_path(m, torch.randn(shape), 1, top_upper=2, top_lower=2)
        assert [r["step"] for r in rows] == [0, 0, 1, 1, 1, 1]

