"""The track-attention model (`i3d_r18_attend`, `mmit_interp.models.attention`; probes 38-47 of docs/synth.md):
its colour-guided attention stays on the cells of its own colour, it runs on clips and stills, and the analyses
that split a trunk at a block carry its guide, so they see exactly the map the model computes."""
from __future__ import annotations

import pytest
import torch

from mmit_interp.analysis.ablation import FeatureCache, ablated_logits
from mmit_interp.analysis.relations import concept_path, path_blocks
from mmit_interp.analysis.selectivity import block_selectivity
from mmit_interp.analysis.trunk import check_chain, logits_from, run_until, stages
from mmit_interp.models import VideoResNet, build_model
from mmit_interp.models.attention import TrackAttention

KW = {"width": 4, "layer3_stride": 1, "layer4_stride": 1, "spatial_kernels": [3, 1, 1, 1],
      "temporal_kernels": [1, 1, 1, 1], "head_r": 5.0, "attention_locality": 12.0, "attention_guided": True}


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_model("i3d_r18_attend", 5, **KW).eval()
    for m in net.modules():  # non-trivial BN statistics, so every block changes its input
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    return net


def test_guided_attention_gathers_from_its_own_colour_across_frames():
    torch.manual_seed(0)
    att = TrackAttention(channels=8, dim=4, locality=1.0, guided=True)
    guide = torch.zeros(1, 3, 4, 6, 6)  # a red actor moving right over a grey floor, and a blue one standing
    for t in range(4):  # (colours as the normalised input has them: a saturated channel is ~2.2 from grey)
        guide[0, 0, t, 1, t] = 2.2
    guide[0, 2, :, 4, 4] = 2.2
    a, v = att.attention(torch.rand(1, 8, 4, 6, 6), guide)
    assert a.shape == (1, 144, 144) and v.shape == (1, 8, 144)
    assert torch.allclose(a.sum(2), torch.ones(1, 144))
    red = guide[0, 0].flatten() > 0
    blue = guide[0, 2].flatten() > 0
    assert (a[0][red][:, red].sum(1) > 0.9).all()  # the red actor's cells, in every frame, gather from each other
    assert (a[0][red][:, blue].sum(1) < 0.01).all()
    assert (a[0][blue][:, blue].sum(1) > 0.9).all()
    unguided = att.attention(torch.rand(1, 8, 4, 6, 6), None)[0]  # no clip behind the map: the prior alone
    assert (unguided[0][red][:, blue].sum(1) > 0.01).all()
    assert not hasattr(att, "q")  # guided: no learned keys


def test_attended_model_runs_on_clips_and_stills():
    net = _model()
    assert net(torch.rand(2, 3, 8, 32, 32)).shape == (2, 5)
    assert net(torch.rand(1, 3, 1, 32, 32)).shape == (1, 5)  # the still-image twin it is pretrained as
    assert net.forward_features(torch.rand(1, 3, 8, 32, 32)).shape == (1, 32, 8, 4, 4)
    assert net.guide(torch.rand(1, 3, 8, 32, 32)).shape == (1, 3, 8, 4, 4)
    assert [n for n, _ in net.blocks()][-2:] == ["layer4.1", "attend"]
    # the stages a whole-trunk analysis (the demo's dissection, its ablation) covers: `attend` last
    assert stages(net) == ["layer1", "layer2", "layer3", "layer4", "attend"]
    assert stages(build_model("i3d_r18", 5, width=4)) == ["layer1", "layer2", "layer3", "layer4"]
    assert build_model("i3d_r18_attend", 5, **{**KW, "attention_guided": False}).guide(torch.rand(1, 3, 8, 32, 32)) is None


def test_block_splits_carry_the_guide_and_match_the_forward():
    """Ablation's cached prefix and `logits_from` give the model's own logits at every block, and the guide is
    what the colour-guided attention needs: without it the same prefix gives other logits."""
    net = _model()
    clip = torch.rand(2, 3, 8, 32, 32) * 2 - 1
    check_chain(net, clip)
    with torch.no_grad():
        ref = net(clip)
        for block in ("layer2.1", "layer4.1"):
            p = run_until(net, block, {"video": clip})
            assert p.guide is not None
            assert torch.allclose(logits_from(net, block, p.feats, None, p.guide), ref, atol=1e-5)
            cache = FeatureCache(block, p.feats, None, torch.zeros(2, 5).numpy(), p.guide)
            assert torch.allclose(ablated_logits(net, cache, torch.ones(p.feats.shape[1], dtype=torch.bool)), ref,
                                  atol=1e-5)
        assert not torch.allclose(logits_from(net, "layer4.1", p.feats), ref, atol=1e-3)


def test_concept_paths_and_selectivity_see_the_attended_map():
    net = _model()
    assert path_blocks(net) == ("attend", "layer4.1")
    rows = concept_path(net, torch.rand(1, 3, 8, 32, 32), 2)
    assert {r["layer"] for r in rows} == {"attend", "layer4.1"}
    sel = block_selectivity(net, "layer4", {"video": torch.zeros(1, 3, 8, 32, 32)})
    assert sel["units"].shape == (32,) and torch.isfinite(sel["units"]).all()


def test_a_trunk_that_changes_the_map_after_its_blocks_is_refused(tmp_path):
    """Block splits and the separation penalty read the trunk's last block, so a model whose `forward_features`
    does more after it is refused before anything runs, not given figures for a map the head does not read."""
    from mmit_interp.vocab import Vocabulary
    from train.loop import TrainConfig, build

    class Doubled(VideoResNet):
        def forward_features(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * super().forward_features(x)

    net = build_model("i3d_r18", 5, width=4)
    net.__class__ = Doubled
    with pytest.raises(ValueError, match="blocks"):
        check_chain(net, torch.rand(1, 3, 4, 32, 32))
    cfg = TrainConfig(data=str(tmp_path), out=str(tmp_path), model="i3d_r18_attend", model_kwargs=KW,
                      map_separation=1.0, frames=4, size=32)
    assert [n for n, _ in build(cfg, Vocabulary(["a", "b"])).blocks()][-1] == "attend"  # its attention is a block


def test_the_attention_block_is_named_once_for_its_labels():
    from mmit_interp.analysis.trunk import stage_aliases

    net = _model()
    assert stage_aliases(net, "attend") == ["attend"]
    assert stage_aliases(net, "layer4") == ["layer4.1", "layer4"]


def test_trains_with_the_separation_penalty_on_the_attended_map_and_is_analysed(tiny_mmit, tmp_path):
    """A tiny run end to end: the penalty reads `attend`'s class maps, the ablation sweep's unablated
    baseline (the trunk split at layer3, the guide carried) is the run's own evaluation, and a concept path
    starts at `attend`."""
    import json

    from mmit_interp.analysis.ablation import run_ablation
    from mmit_interp.analysis.relations import concept_path
    from mmit_interp.checkpoint import load_model
    from train.loop import TrainConfig, evaluate_run, train

    run = tmp_path / "attend"
    train(TrainConfig(data=str(tiny_mmit), out=str(run), model="i3d_r18_attend", model_kwargs=KW, loss="bce",
                      epochs=1, size=32, frames=4, batch_size=8, workers=0, progress=False, map_separation=1.0))
    line = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert 0.0 < line["map_overlap"] <= 1.0
    model, _ = load_model(run)
    res = run_ablation(run, block="layer3", ps=(0.0, 1.0), seeds=(0,), record=False)
    own = evaluate_run(run, workers=0, progress=False)
    assert res["baseline"]["map_sample"] == pytest.approx(own["map_sample"], abs=1e-6)
    assert res["baseline"]["map_micro"] == pytest.approx(own["map_micro"], abs=1e-6)
    assert concept_path(model, torch.rand(1, 3, 4, 32, 32), 0)[0]["layer"] == "attend"
    # by default the ablation zeroes units of the map the head reads
    assert run_ablation(run, ps=(0.0,), seeds=(0,), max_clips=8, record=False)["block"] == "attend"
