"""Forward+backward time of the factorised losses vs the pairwise B x C x C forms and vs BCE, side by side.

Run: ``python benchmarks/bench_losses.py [--batch 256 --classes 313 --positives 3 --device cpu]``.
Prints median times and ratios (machines are shared and noisy: compare ratios from one run), then
the overflow check: the pairwise LSEP/wLSEP forms go non-finite once logits are far apart, ours not.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from train.losses import LOSSES  # noqa: E402

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _pair_mask(y: torch.Tensor) -> torch.Tensor:
    """P[b, i, j]: i positive and j negative in sample b."""
    return y[:, :, None] & ~y[:, None, :]


def _valid_mean(per_sample: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean over samples with at least one positive."""
    valid = y.any(1).to(per_sample.dtype)
    return (per_sample * valid).sum() / valid.sum().clamp(min=1)


def pairwise_warp(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Paper eq. 2 over a B x C x C margin tensor."""
    y = t > 0.5
    p = _pair_mask(y)
    margin = 1.0 + x[:, None, :] - x[:, :, None]
    rank = ((margin > 0) & p).sum(2)
    harmonic = torch.cat([x.new_zeros(1), (1.0 / torch.arange(1, x.shape[1] + 1, dtype=x.dtype)).cumsum(0)])
    per_pos = harmonic[rank] * (torch.relu(margin) * p).sum(2) * y
    return _valid_mean(per_pos.sum(1) / y.sum(1).clamp(min=1), y)


def pairwise_lsep(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Paper eq. 3 over a B x C x C exp tensor."""
    y = t > 0.5
    e = torch.exp(x[:, None, :] - x[:, :, None]) * _pair_mask(y)
    return _valid_mean(torch.log(1.0 + e.sum((1, 2))), y)


def pairwise_wlsep(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Paper eq. 4 over a B x C x C exp tensor (unit weights)."""
    y = t > 0.5
    e = torch.exp(x[:, None, :] - x[:, :, None]) * _pair_mask(y)
    per_pos = torch.log(1.0 + e.sum(2)) * y
    return _valid_mean(per_pos.sum(1) / y.sum(1).clamp(min=1), y)


PAIRWISE: dict[str, Loss] = {"warp": pairwise_warp, "lsep": pairwise_lsep, "wlsep": pairwise_wlsep}


def make_batch(b: int, c: int, positives: int, device: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random logits and targets with about ``positives`` positives per row."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, generator=g)
    t = (torch.rand(b, c, generator=g) < (positives - 1) / c).float()
    t[torch.arange(b), torch.randint(0, c, (b,), generator=g)] = 1.0  # one sure positive per row
    return x.to(device), t.to(device)


def time_fwd_bwd(fn: Loss, x: torch.Tensor, t: torch.Tensor, reps: int) -> list[float]:
    """Seconds of ``reps`` forward+backward passes."""
    times = []
    for _ in range(reps):
        xr = x.detach().clone().requires_grad_(True)
        if x.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn(xr, t).backward()
        if x.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def interleaved_medians(fns: dict[str, tuple[Loss, int]], x: torch.Tensor, t: torch.Tensor, rounds: int) -> dict[str, float]:
    """Median fwd+bwd seconds of each loss, timed in interleaved rounds so machine noise hits all alike."""
    for fn, _ in fns.values():
        time_fwd_bwd(fn, x, t, 1)  # warm-up
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, (fn, reps) in fns.items():
            samples[name] += time_fwd_bwd(fn, x, t, reps)
    return {name: statistics.median(v) for name, v in samples.items()}


def overflow_check(c: int, positives: int, device: str) -> None:
    """Print, per logit gap, whether the pairwise and factorised forms give finite loss and gradient."""
    print("\noverflow check (fp32; positives at -gap/2, negatives at +gap/2; finite value & grad?)")
    print(f"{'gap':>7} " + " ".join(f"{n + ' pairwise':>15} {n + ' ours':>11}" for n in PAIRWISE))
    t = torch.zeros(4, c, device=device)
    t[:, :positives] = 1.0
    for gap in (30.0, 60.0, 70.0, 80.0, 85.0, 90.0, 120.0, 2e4):
        x = torch.where(t > 0, -gap / 2, gap / 2)
        cells = []
        for name, pair in PAIRWISE.items():
            for fn in (pair, LOSSES[name]):
                xr = x.clone().requires_grad_(True)
                loss = fn(xr, t)
                loss.backward()
                cells.append(bool(torch.isfinite(loss)) and bool(torch.isfinite(xr.grad).all()))
        print(f"{gap:>7g} " + " ".join(f"{str(a):>15} {str(b):>11}" for a, b in zip(cells[::2], cells[1::2])))


def main() -> None:
    """Run the timing table and the overflow check."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--classes", type=int, default=313)
    ap.add_argument("--positives", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    ap.add_argument("--reps", type=int, default=10, help="passes of each factorised loss per round")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    x, t = make_batch(args.batch, args.classes, args.positives, args.device)
    print(
        f"B={args.batch} C={args.classes} ~{t.sum(1).mean().item():.2f} positives/row, device={args.device}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; fwd+bwd medians of {args.rounds} "
        "interleaved rounds (ours, then pairwise)"
    )
    # Two groups, each interleaved: the 100 MB pairwise tensors would otherwise evict caches and
    # return memory to the OS between passes of the small losses, blurring the ours/BCE ratio.
    med = interleaved_medians({name: (fn, args.reps) for name, fn in LOSSES.items()}, x, t, args.rounds)
    med.update(interleaved_medians({f"pairwise_{n}": (fn, 1) for n, fn in PAIRWISE.items()}, x, t, args.rounds))
    bce = med["bce"]
    print(f"{'loss':<6} {'ours ms':>9} {'pairwise ms':>12} {'pairwise/ours':>14} {'ours/BCE':>9}")
    print(f"{'bce':<6} {bce * 1e3:>9.3f} {'-':>12} {'-':>14} {1.0:>8.2f}x")
    for name in PAIRWISE:
        ours, ref = med[name], med[f"pairwise_{name}"]
        print(f"{name:<6} {ours * 1e3:>9.3f} {ref * 1e3:>12.1f} {ref / ours:>13.0f}x {ours / bce:>8.2f}x")
    overflow_check(args.classes, args.positives, args.device)


if __name__ == "__main__":
    main()
