"""Metrics vs scikit-learn's average precision (with ties) and hand-computed hit@k."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from mmit_interp.metrics import average_precision_rows, evaluate, label_prior_baseline


def _random(seed: int, n: int = 60, c: int = 12, levels: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Scores on a few levels (many ties), sparse targets, one empty class and one empty clip."""
    rng = np.random.default_rng(seed)
    s = rng.integers(0, levels, size=(n, c)).astype(np.float32) / levels
    y = (rng.random((n, c)) < 0.25).astype(np.int64)
    y[:, 5] = 0
    y[3] = 0
    return s, y


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("levels", [3, 1000])
def test_matches_sklearn(seed: int, levels: int) -> None:
    s, y = _random(seed, levels=levels)
    out = evaluate(s, y)
    classes = [c for c in range(y.shape[1]) if y[:, c].any()]
    want_class = average_precision_score(y[:, classes], s[:, classes], average=None)
    got_class = np.array(out["per_class_ap"])
    np.testing.assert_allclose(got_class[classes], want_class, rtol=1e-12)
    assert math.isnan(got_class[5]) and out["map_class_skipped"] == 1
    assert out["map_class"] == pytest.approx(np.mean(want_class), rel=1e-12)
    clips = [i for i in range(y.shape[0]) if y[i].any()]
    want_sample = [average_precision_score(y[i], s[i]) for i in clips]
    assert out["map_sample"] == pytest.approx(np.mean(want_sample), rel=1e-12)
    assert out["clips_skipped"] == y.shape[0] - len(clips)
    assert out["map_micro"] == pytest.approx(average_precision_score(y.ravel(), s.ravel()), rel=1e-12)
    assert out["n_clips"] == 60 and out["n_classes"] == 12


def test_tie_grouping_example() -> None:
    # Scores 0.9 (neg), 0.5 (pos), 0.5 (neg), 0.1 (pos): thresholds {0.9, 0.5, 0.1};
    # AP = 1/2 * 1/3 + 1/2 * 2/4 = 5/12, whatever order the tied pair is stored in.
    s = np.array([0.9, 0.5, 0.5, 0.1])
    for y in ([0, 1, 0, 1], [0, 0, 1, 1]):
        ap = average_precision_rows(s[None], np.array(y, dtype=bool)[None])[0]
        assert ap == pytest.approx(5 / 12)


def test_torch_inputs_equal_numpy() -> None:
    s, y = _random(9)
    a = evaluate(torch.from_numpy(s), torch.from_numpy(y))
    b = evaluate(s, y.astype(bool))
    assert a.keys() == b.keys()
    np.testing.assert_array_equal(a["per_class_ap"], b["per_class_ap"])
    assert a["map_sample"] == b["map_sample"]


def test_hit_at_k_hand_computed() -> None:
    s = np.array(
        [
            [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3],  # positive at rank 1
            [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3],  # positive at rank 5
            [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3],  # positive at rank 6
            [0.5, 0.5, 0.1, 0.1, 0.1, 0.1, 0.1],  # positive tied with a negative at the top
            [0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2],  # all tied, one positive among 7
            [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7],  # no positive: skipped
        ]
    )
    y = np.zeros_like(s, dtype=int)
    y[0, 0] = y[1, 4] = y[2, 5] = y[3, 0] = y[4, 3] = 1
    out = evaluate(s, y)
    # Ties count against the clip: row 3's positive is rank 2, row 4's rank 7.
    assert out["hit@1"] == pytest.approx(1 / 5)
    assert out["hit@5"] == pytest.approx(3 / 5)
    assert out["clips_skipped"] == 1 and out["n_clips"] == 6


def test_no_positive_anywhere_gives_nan_not_error() -> None:
    out = evaluate(np.random.rand(4, 3), np.zeros((4, 3)))
    assert math.isnan(out["map_sample"]) and math.isnan(out["hit@1"]) and math.isnan(out["map_micro"])
    assert math.isnan(out["map_class"]) and out["map_class_skipped"] == 3 and out["clips_skipped"] == 4


def test_input_validation() -> None:
    with pytest.raises(ValueError, match="shape"):
        evaluate(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="binary"):
        evaluate(np.zeros((3, 2)), np.full((3, 2), 0.5))
    with pytest.raises(ValueError, match="NaN"):
        evaluate(np.full((3, 2), np.nan), np.ones((3, 2)))


def test_label_prior_baseline() -> None:
    rng = np.random.default_rng(0)
    freq = np.linspace(0.6, 0.02, 10)
    train = (rng.random((500, 10)) < freq).astype(int)
    val = (rng.random((200, 10)) < freq).astype(int)
    prior = train.mean(0)
    out = label_prior_baseline(train, val)
    assert out == evaluate(np.tile(prior, (200, 1)), val)
    # A constant column ranks all clips as tied: its AP is the class prevalence in val.
    np.testing.assert_allclose(out["per_class_ap"], val.mean(0), rtol=1e-12)
    assert out["map_sample"] == pytest.approx(
        np.mean([average_precision_score(val[i], prior) for i in range(200) if val[i].any()]), rel=1e-12
    )
    # A model that knows the labels beats the prior.
    assert evaluate(val + 0.1 * rng.random(val.shape), val)["map_sample"] > out["map_sample"]
