"""Multi-label ranking losses of Multi-Moments in Time (DESIGN 5): BCE, WARP, LSEP and wLSEP.

Notation: logits ``x`` (B, C), binary targets ``y`` (B, C), class weights ``w`` (C,) (default all
ones), ``Y_b`` the positives of sample ``b``. Every loss computes a per-sample ``l_b``; the batch loss
is the mean of ``l_b`` over the samples with at least one positive. A batch without any positive
gives 0 with a zero (never NaN) gradient.

All four are computed in factorised form: O(B*C) memory and time (WARP O(B*C log C) through one
sort, a suffix sum and ``searchsorted``), never a B x C x C tensor and never sampled pairs, and are
exact up to floating-point rounding with respect to the pairwise equations of the paper:

- BCE:   l_b = 1/|Y_b| sum_c w_c BCEWithLogits(x_bc, y_bc)
- WARP:  l_b = 1/|Y_b| sum_{i in Y_b} w_i W(r_bi) sum_{j not in Y_b} max(0, 1 + x_bj - x_bi),
         W(r) = sum_{k=1..r} 1/k, r_bi = #{j not in Y_b : 1 + x_bj - x_bi > 0}
- LSEP:  l_b = log(1 + sum_{i in Y_b} sum_{j not in Y_b} exp(x_bj - x_bi))
             = softplus(LSE_{j not in Y_b} x_bj + LSE_{i in Y_b} (-x_bi))        (no class weights)
- wLSEP: l_b = 1/|Y_b| sum_{i in Y_b} w_i log(1 + sum_{j not in Y_b} exp(x_bj - x_bi))
             = 1/|Y_b| sum_{i in Y_b} w_i softplus(LSE_{j not in Y_b} x_bj - x_bi)

A sample whose classes are all positive has no pair, so its WARP/LSEP/wLSEP term is 0 (it still
counts in the mean, like any sample with a positive). Inputs in half precision are computed in
float32; the losses stay finite, with finite gradients, for fp32 logits up to +-1e4.

Known defects of the authors' released code that we deliberately do NOT copy:
- their ``lsep`` sums exp(x_j - x_i) over the whole batch before taking one log, which both mixes
  samples (it is not the per-sample eq. 3) and overflows to inf/NaN once logits are a few tens apart;
  here each sample has its own log and the exponentials are taken inside a max-shifted logsumexp.
- their ``warp`` looks the rank weight W up by *class id* instead of by the rank r_bi, and its
  gradients become NaN; here W is indexed by the exact rank and every path is NaN-free.
- pair sampling (the original WARP estimates the rank by sampling): here ranks are exact.

Class weights (``class_weights_from_counts``): the authors' w_c = min_k n_k / n_c with n_c the
training positives of class c. The default everywhere is no weighting (all ones, scheme "none"):
the four losses then stay comparable, the loss scale does not depend on the data set's head/tail
ratio, and tail classes (with incomplete labels, the noisiest) are not amplified unless asked.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

LossFn = Callable[..., torch.Tensor]

CLASS_WEIGHT_SCHEMES = ("none", "min_over_n")


def _prepare(
    logits: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate shapes; return (x in >= fp32, positive mask, weights (C,), positive counts (B,))."""
    if logits.dim() != 2 or logits.shape != targets.shape:
        raise ValueError(
            f"logits and targets must both be (B, C); got {tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    x = logits if logits.dtype == torch.float64 else logits.float()
    pos = targets > 0.5 if targets.dtype != torch.bool else targets
    if class_weights is None:
        w = torch.ones(x.shape[1], dtype=x.dtype, device=x.device)
    else:
        w = torch.as_tensor(class_weights, dtype=x.dtype, device=x.device)
        if w.shape != (x.shape[1],):
            raise ValueError(f"class_weights must have shape ({x.shape[1]},); got {tuple(w.shape)}")
    return x, pos, w, pos.sum(1)


def _batch_mean(per_sample: torch.Tensor, n_pos: torch.Tensor) -> torch.Tensor:
    """Mean of the (finite) per-sample losses over samples with >= 1 positive; 0 if there is none."""
    valid = (n_pos > 0).to(per_sample.dtype)
    return (per_sample * valid).sum() / valid.sum().clamp(min=1.0)


def _masked_logsumexp(x: torch.Tensor, exclude: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise logsumexp over the entries not in ``exclude``; returns (lse (B,), row non-empty (B,)).

    Fully excluded rows are computed over the whole row instead (finite value, finite gradient) so
    the caller can discard them without a -inf - -inf = NaN in the backward pass.
    """
    nonempty = ~exclude.all(1, keepdim=True)
    return torch.logsumexp(x.masked_fill(exclude & nonempty, float("-inf")), dim=1), nonempty.squeeze(1)


def bce_loss(
    logits: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Class-weighted binary cross-entropy normalised by the number of labels (paper eq. 1)."""
    x, pos, w, n_pos = _prepare(logits, targets, class_weights)
    per_elem = F.binary_cross_entropy_with_logits(x, pos.to(x.dtype), reduction="none")
    per_sample = (per_elem * w).sum(1) / n_pos.clamp(min=1).to(x.dtype)
    return _batch_mean(per_sample, n_pos)


def warp_loss(
    logits: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """WARP with the exact rank (paper eq. 2) via sort + suffix sums + searchsorted, O(B*C log C)."""
    x, pos, w, n_pos = _prepare(logits, targets, class_weights)
    n_classes = x.shape[1]
    # A per-row shift leaves every hinge unchanged and keeps the suffix sums small (less rounding).
    x = x - x.detach().amax(1, keepdim=True)
    neg_sorted, _ = torch.where(pos, float("-inf"), x).sort(dim=1)
    # Negatives j violating positive i are those with x_j > x_i - 1: the tail of the sorted row.
    first = torch.searchsorted(neg_sorted.detach(), (x.detach() - 1.0).contiguous(), right=True)
    rank = n_classes - first  # r_bi (meaningful where pos)
    values = torch.where(torch.isneginf(neg_sorted), 0.0, neg_sorted)
    suffix = torch.cat([values.flip(1).cumsum(1).flip(1), values.new_zeros(x.shape[0], 1)], dim=1)
    violator_sum = suffix.gather(1, first)
    hinge_sum = rank.to(x.dtype) * (1.0 - x) + violator_sum  # sum_j max(0, 1 + x_j - x_i)
    harmonic = torch.cat(
        [x.new_zeros(1), (1.0 / torch.arange(1, n_classes + 1, dtype=x.dtype, device=x.device)).cumsum(0)]
    )
    per_pos = w * harmonic[rank] * hinge_sum
    per_sample = torch.where(pos, per_pos, 0.0).sum(1) / n_pos.clamp(min=1).to(x.dtype)
    return _batch_mean(per_sample, n_pos)


def lsep_loss(
    logits: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """LSEP (paper eq. 3) as softplus(LSE_neg x + LSE_pos(-x)); unweighted, so class_weights is ignored."""
    x, pos, _, n_pos = _prepare(logits, targets, class_weights)
    lse_neg, has_neg = _masked_logsumexp(x, pos)
    lse_pos, has_pos = _masked_logsumexp(-x, ~pos)
    per_sample = torch.where(has_neg & has_pos, F.softplus(lse_neg + lse_pos), 0.0)
    return _batch_mean(per_sample, n_pos)


def wlsep_loss(
    logits: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Weighted LSEP (paper eq. 4): per-positive softplus(LSE_neg x - x_i), weighted and averaged."""
    x, pos, w, n_pos = _prepare(logits, targets, class_weights)
    lse_neg, has_neg = _masked_logsumexp(x, pos)
    per_pos_sum = (F.softplus(lse_neg.unsqueeze(1) - x) * (pos.to(x.dtype) * w)).sum(1)
    per_sample = per_pos_sum * has_neg.to(x.dtype) / n_pos.clamp(min=1).to(x.dtype)  # no negative: no pair
    return _batch_mean(per_sample, n_pos)


def map_overlap(maps: torch.Tensor, target: torch.Tensor, r: float) -> torch.Tensor:
    """Mean overlap of where two positive classes of a clip read their evidence: class maps `maps (N, C, P)`
    over the last map's P positions, `p_c = softmax(r m_c)` (the LSE head's pooling weights), overlap
    `sum_x sqrt(p_i(x) p_j(x))` (Bhattacharyya: 1 for the same positions, 0 for disjoint ones) over the
    pairs `i < j` of each clip's positives; 0 (with a zero gradient) when no clip has two positives.
    Added to the loss (`TrainConfig.map_separation`) it asks co-occurring actions to be found in
    different places, the only thing clip labels say about where each action is."""
    q = torch.exp(0.5 * torch.log_softmax(r * maps.float(), dim=2))  # sqrt(p) with a finite gradient at p -> 0
    g = q @ q.transpose(1, 2)
    pos = target > 0.5
    pairs = pos[:, :, None] & pos[:, None, :] & torch.ones_like(g, dtype=torch.bool).triu(1)
    n = pairs.sum()
    return (g * pairs).sum() / n.clamp(min=1)


LOSSES: dict[str, LossFn] = {"bce": bce_loss, "warp": warp_loss, "lsep": lsep_loss, "wlsep": wlsep_loss}


def class_weights_from_counts(counts: torch.Tensor | np.ndarray | list[int]) -> torch.Tensor:
    """The authors' weights w_c = min_k n_k / n_c over classes with n_c > 0 (float32, (C,)).

    A class with no training positive gets 1.0, the weight of the rarest seen class (the cap of
    n_c -> 0 within the range of the other weights): it never is a positive in training, so it is
    irrelevant to WARP/LSEP/wLSEP, and under BCE it is pushed down like the rarest classes rather
    than ignored or blown up. All-zero counts give all ones.
    """
    n = torch.as_tensor(np.asarray(counts, dtype=np.float64))
    if n.dim() != 1 or bool((n < 0).any()):
        raise ValueError("counts must be a 1-D sequence of non-negative per-class positive counts")
    seen = n > 0
    if not bool(seen.any()):
        return torch.ones(n.shape[0], dtype=torch.float32)
    weights = torch.where(seen, n[seen].min() / n.clamp(min=1.0), torch.ones_like(n))
    return weights.float()


def compute_class_weights(targets_matrix: torch.Tensor | np.ndarray, scheme: str = "none") -> torch.Tensor:
    """Class weights (C,) from an N x C binary training-label matrix: "none" (all ones, default) or "min_over_n"."""
    t = torch.as_tensor(np.asarray(targets_matrix))
    if t.dim() != 2:
        raise ValueError(f"targets_matrix must be N x C; got shape {tuple(t.shape)}")
    if scheme == "none":
        return torch.ones(t.shape[1], dtype=torch.float32)
    if scheme == "min_over_n":
        return class_weights_from_counts((t > 0.5).sum(0).numpy())
    raise ValueError(f"unknown class weighting scheme {scheme!r}; choose one of {CLASS_WEIGHT_SCHEMES}")
