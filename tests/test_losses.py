"""Factorised losses vs straightforward pairwise (B x C x C, float64) implementations of the paper's equations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from train.losses import (
    LOSSES,
    class_weights_from_counts,
    compute_class_weights,
)


def _pairs(y: torch.Tensor) -> torch.Tensor:
    """Mask P[b, i, j] = i positive and j negative in sample b."""
    return y[:, :, None] & ~y[:, None, :]


def _mean_over_valid(per_sample: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Batch mean over samples with at least one positive (DESIGN 5)."""
    valid = y.any(1)
    return per_sample[valid].mean() if valid.any() else per_sample.sum() * 0.0


def ref_bce(x: torch.Tensor, t: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 1 written out with log-sigmoids."""
    y = t > 0.5
    w = torch.ones(x.shape[1], dtype=x.dtype) if w is None else w
    elem = -(y * F.logsigmoid(x) + (~y) * F.logsigmoid(-x))
    return _mean_over_valid((elem * w).sum(1) / y.sum(1).clamp(min=1), y)


def ref_warp(x: torch.Tensor, t: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 2 over explicit pairs, exact rank, harmonic rank weight."""
    y = t > 0.5
    w = torch.ones(x.shape[1], dtype=x.dtype) if w is None else w
    p = _pairs(y)
    margin = 1.0 + x[:, None, :] - x[:, :, None]  # [b, i, j] = 1 + x_j - x_i
    rank = ((margin > 0) & p).sum(2)
    harmonic = torch.tensor([sum(1.0 / k for k in range(1, int(r) + 1)) for r in rank.flatten()], dtype=x.dtype)
    hinge = (torch.relu(margin) * p).sum(2)
    per_pos = w * harmonic.view_as(hinge) * hinge * y
    return _mean_over_valid(per_pos.sum(1) / y.sum(1).clamp(min=1), y)


def ref_lsep(x: torch.Tensor, t: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 3: log(1 + sum over (pos, neg) pairs of exp(x_j - x_i))."""
    y = t > 0.5
    p = _pairs(y)
    diff = x[:, None, :] - x[:, :, None]
    return _mean_over_valid(torch.log(1.0 + (torch.exp(diff) * p).sum((1, 2))), y)


def ref_wlsep(x: torch.Tensor, t: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 4: per-positive log(1 + sum_neg exp(x_j - x_i)), weighted, averaged over positives."""
    y = t > 0.5
    w = torch.ones(x.shape[1], dtype=x.dtype) if w is None else w
    p = _pairs(y)
    diff = x[:, None, :] - x[:, :, None]
    per_pos = torch.log(1.0 + (torch.exp(diff) * p).sum(2)) * w * y
    return _mean_over_valid(per_pos.sum(1) / y.sum(1).clamp(min=1), y)


REFS = {"bce": ref_bce, "warp": ref_warp, "lsep": ref_lsep, "wlsep": ref_wlsep}


def _batch(seed: int, b: int = 9, c: int = 13, scale: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random float64 logits and targets with a 0-positive row, an all-positive row and a 1-positive row."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, generator=g, dtype=torch.float64) * scale
    t = (torch.rand(b, c, generator=g) < 0.3).double()
    t[0] = 0.0
    t[1] = 1.0
    t[2] = 0.0
    t[2, 3] = 1.0
    return x, t


def _value_and_grad(fn, x: torch.Tensor, t: torch.Tensor, w: torch.Tensor | None):
    """Loss value and d loss / d logits."""
    x = x.clone().requires_grad_(True)
    loss = fn(x, t, w)
    (grad,) = torch.autograd.grad(loss, x)
    return loss.detach(), grad


def test_registry_names() -> None:
    assert set(LOSSES) == {"bce", "warp", "lsep", "wlsep"}


@pytest.mark.parametrize("name", sorted(REFS))
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_pairwise_reference(name: str, weighted: bool, seed: int) -> None:
    x, t = _batch(seed)
    w = torch.rand(x.shape[1], generator=torch.Generator().manual_seed(100 + seed), dtype=torch.float64) + 0.1
    w = w if weighted else None
    ours, g_ours = _value_and_grad(LOSSES[name], x, t, w)
    ref, g_ref = _value_and_grad(REFS[name], x, t, w if name != "lsep" else None)
    assert ours.dtype == torch.float64
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-10, atol=1e-12)
    assert g_ours[0].abs().max() == 0  # a sample without positives contributes nothing


@pytest.mark.parametrize("name", sorted(REFS))
def test_fp32_close_to_float64_reference(name: str) -> None:
    x, t = _batch(7, b=32, c=40)
    ours, g_ours = _value_and_grad(LOSSES[name], x.float(), t.float(), None)
    ref, g_ref = _value_and_grad(REFS[name], x, t, None)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_ours.double(), g_ref, rtol=1e-4, atol=1e-6)


def test_warp_rank_weight_indexed_by_rank() -> None:
    # One positive at 0, negatives at 0.5, -0.5, -2: violators (x_j > -1) are 0.5 and -0.5, r = 2,
    # hinge sum = 1.5 + 0.5 = 2, W(2) = 1.5 -> loss 3; class id of the positive must not matter.
    for pos_class in (0, 3):
        x = torch.tensor([[0.5, -0.5, -2.0, 0.0]])
        x[0, [pos_class, 3]] = x[0, [3, pos_class]]
        t = torch.zeros(1, 4)
        t[0, pos_class] = 1.0
        assert LOSSES["warp"](x, t).item() == pytest.approx(3.0)


def test_all_positive_sample_gives_zero_ranking_loss() -> None:
    x = torch.randn(1, 5, requires_grad=True)
    t = torch.ones(1, 5)
    for name in ("warp", "lsep", "wlsep"):
        loss = LOSSES[name](x, t)
        (g,) = torch.autograd.grad(loss, x)
        assert loss.item() == 0.0 and torch.all(g == 0)


@pytest.mark.parametrize("name", sorted(REFS))
def test_zero_positive_batch_is_zero_with_zero_grad(name: str) -> None:
    x = (torch.randn(6, 11) * 1e4).requires_grad_(True)
    loss = LOSSES[name](x, torch.zeros(6, 11), torch.rand(11))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.all(x.grad == 0)


@pytest.mark.parametrize("name", sorted(REFS))
def test_stable_at_1e4_logits_fp32(name: str) -> None:
    g = torch.Generator().manual_seed(3)
    t = (torch.rand(16, 50, generator=g) < 0.1).float()
    t[0] = 1.0
    t[1] = 0.0
    t[2, :] = 0.0
    t[2, 0] = 1.0
    # Positives pushed to -1e4, negatives to +1e4 (the worst case), plus random extremes.
    x = torch.where(t > 0, -1e4, 1e4)
    x[8:] = (torch.rand(8, 50, generator=g) * 2 - 1) * 1e4
    x.requires_grad_(True)
    loss = LOSSES[name](x, t, torch.rand(50, generator=g) + 0.5)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    assert torch.isfinite(x.grad).all()
    if name != "bce":  # the pairwise exponent/hinge of 2e4 shows in the value
        assert loss.item() > 1e3


@pytest.mark.parametrize("name", ["lsep", "wlsep"])
def test_pairwise_reference_overflows_where_ours_does_not(name: str) -> None:
    t = torch.zeros(4, 20)
    t[:, :3] = 1.0
    x = torch.where(t > 0, -1e4, 1e4).requires_grad_(True)
    ref = REFS[name](x, t)
    ref.backward()
    assert not (torch.isfinite(ref) and torch.isfinite(x.grad).all())
    x.grad = None
    ours = LOSSES[name](x, t)
    ours.backward()
    assert torch.isfinite(ours) and torch.isfinite(x.grad).all()
    assert ours.item() == pytest.approx(2e4 + (math.log(51) if name == "lsep" else math.log(17)), rel=1e-6)


def test_half_precision_inputs_computed_in_fp32() -> None:
    x, t = _batch(5)
    for name, fn in LOSSES.items():
        out = fn(x.half(), t.half())
        assert out.dtype == torch.float32
        torch.testing.assert_close(out.double(), REFS[name](x.half().double(), t), rtol=1e-4, atol=1e-4)


def test_shape_errors() -> None:
    with pytest.raises(ValueError):
        LOSSES["wlsep"](torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError):
        LOSSES["bce"](torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(4))


def test_class_weights_from_counts() -> None:
    w = class_weights_from_counts([10, 0, 5, 20])
    torch.testing.assert_close(w, torch.tensor([0.5, 1.0, 1.0, 0.25]))
    torch.testing.assert_close(class_weights_from_counts([0, 0]), torch.ones(2))
    with pytest.raises(ValueError):
        class_weights_from_counts([1, -1])


def test_compute_class_weights_schemes() -> None:
    t = torch.tensor([[1, 0, 1], [1, 0, 0], [1, 0, 0], [0, 0, 1]])
    torch.testing.assert_close(compute_class_weights(t), torch.ones(3))
    torch.testing.assert_close(compute_class_weights(t, "min_over_n"), torch.tensor([2 / 3, 1.0, 1.0]))
    with pytest.raises(ValueError, match="min_over_n"):
        compute_class_weights(t, "inverse")


@pytest.mark.parametrize("name", sorted(REFS))
def test_memory_is_linear_in_classes(name: str) -> None:
    # B x C x C here would be 4 * 40000^2 floats (25 GB): only a factorised form can run this.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 40000, generator=g).requires_grad_(True)
    t = (torch.rand(4, 40000, generator=g) < 1e-3).float()
    loss = LOSSES[name](x, t)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


def test_map_overlap_measures_where_co_occurring_classes_read() -> None:
    from train.losses import map_overlap

    same = torch.zeros(1, 3, 4)
    same[0, :2, 1] = 5.0  # classes 0 and 1 peak at the same position
    apart = torch.zeros(1, 3, 4)
    apart[0, 0, 0] = apart[0, 1, 3] = 50.0  # at different positions, sharply
    both = torch.tensor([[1.0, 1.0, 0.0]])
    assert map_overlap(same, both, r=5.0).item() == pytest.approx(1.0)
    assert map_overlap(apart, both, r=5.0).item() == pytest.approx(0.0, abs=1e-6)
    three = torch.tensor([[1.0, 1.0, 1.0]])  # class 2 is flat: it overlaps both of the others partly
    mixed = map_overlap(apart, three, r=5.0).item()
    assert 0.0 < mixed < 1.0
    maps = torch.randn(2, 3, 4, requires_grad=True)
    single = map_overlap(maps, torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]), r=5.0)
    single.backward()
    assert single.item() == 0.0 and torch.count_nonzero(maps.grad) == 0  # no clip with two positives

    far = torch.zeros(1, 2, 4)
    far[0, 0, 0] = far[0, 1, 3] = 1e4  # every other position's weight underflows to 0: sqrt'(0) would be inf
    far.requires_grad_(True)
    map_overlap(far, torch.tensor([[1.0, 1.0]]), r=5.0).backward()
    assert torch.isfinite(far.grad).all()
