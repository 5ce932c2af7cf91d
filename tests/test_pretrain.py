"""Still-image pretraining (`mmit-pretrain`) and inflation of its 2-D twin into a video trunk."""
from __future__ import annotations

import json

import pytest
import torch

from mmit_interp.models import build_model, inflate_state_dict
from mmit_interp.synth import SynthConfig, generate_world
from mmit_interp.vocab import Vocabulary
from train.loop import TrainConfig, build
from train.pretrain import ConceptStills, PretrainConfig, centre_slices, main, pretrain_stills

KW = {"width": 8, "layer4_stride": 1}


@pytest.fixture(scope="module")
def stills(tmp_path_factory):
    out = tmp_path_factory.mktemp("stills")
    generate_world(out, SynthConfig(seed=3, train_clips=0, val_clips=0, images=48, action_frames=0, workers=1),
                   progress=False)
    return out / "broden"


@torch.no_grad()
def test_two_d_twin_equals_the_inflated_trunk_on_a_static_clip():
    twin = build_model("i3d_r18", 5, **KW).eval()
    for m in twin.modules():  # non-trivial BatchNorm statistics
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.uniform_(0.5, 1.5)
    video = build_model("i3d_r18", 5, **KW).eval()
    assert inflate_state_dict(video, centre_slices(twin.state_dict())) == ["fc.bias", "fc.weight"]
    img = torch.randn(1, 3, 1, 32, 32)
    f2d = twin.forward_features(img)[:, :, 0]
    # 17 temporal 3-tap convs: frames further than 17 from either end never see the zero padding
    f3d = video.forward_features(img.repeat(1, 1, 40, 1, 1))[:, :, 20]
    assert torch.allclose(f3d, f2d, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("categories", [None, ["color", "texture"]])
def test_concept_targets_are_the_labels_each_image_holds(stills, categories):
    data = ConceptStills(stills, 32, categories)
    b = data.ds.broden
    cats = set(categories or b.categories)
    assert data.numbers == [n for n in sorted(b.labels) if n > 0 and set(b.labels[n].categories) & cats]
    for i in (0, 1, 2):
        x, y = data[i]
        assert x.shape == (3, 1, 32, 32) and y.shape == (len(data.numbers),)
        row = b.rows[i]
        whole = {lab for c, labs in row.whole.items() if c in cats for lab in labs}
        pixel = {int(v) for c, m in b.load_masks(row).items() if c in cats for v in m.reshape(-1) if v > 0}
        assert {data.numbers[j] for j in y.nonzero().view(-1).tolist()} == whole | pixel


def test_pretrain_writes_inflatable_two_d_weights(stills, tmp_path, capsys):
    out = tmp_path / "pre" / "still2d.pth"
    s = pretrain_stills(PretrainConfig(concepts=str(stills), out=str(out), model_kwargs=KW, size=32, epochs=2,
                                       batch_size=8, progress=False))
    assert [h["epoch"] for h in s["history"]] == [1, 2] and 0 <= s["history"][-1]["map_class"] <= 1
    assert json.loads(out.with_name("still2d.pth.json").read_text())["labels"] == s["labels"]
    state = torch.load(out, weights_only=True)
    assert state["conv1.weight"].dim() == 4 and state["layer1.0.conv1.weight"].shape == (8, 8, 3, 3)
    vocab = Vocabulary(["a", "b", "c"])
    model = build(TrainConfig(data="-", out="-", model_kwargs=KW, inflate_from=str(out)), vocab)
    kt = model.conv1.weight.shape[2]
    assert torch.allclose(model.conv1.weight[:, :, 1], state["conv1.weight"] / kt)
    with pytest.raises(ValueError, match="video trunk"):
        build(TrainConfig(data="-", out="-", model="soundnet", inflate_from=str(out)), vocab)
    assert main(["--concepts", str(stills), "--out", str(tmp_path / "cli.pth"), "--model-kwargs", json.dumps(KW),
                 "--size", "32", "--epochs", "1", "--batch-size", "8", "--no-progress"]) == 0
    assert "held-out concept map_class" in capsys.readouterr().out


def test_too_few_images_is_a_clear_error(stills, tmp_path):
    with pytest.raises(ValueError, match="fewer than one batch"):
        pretrain_stills(PretrainConfig(concepts=str(stills), out=str(tmp_path / "x.pth"), batch_size=64,
                                       progress=False))
