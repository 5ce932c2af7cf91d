"""Appearance pretraining on still images: the synthetic world's stand-in for ImageNet inflation.

The paper's I3D starts from 2-D ImageNet weights; with no ImageNet here, a video trunk is trained
as its own 2-D twin on a Broden-format concept set (one-frame clips: a `kt x k x k` kernel with
temporal zero padding then uses only its centre slice, and every BatchNorm sees frames), to tell
which concepts an image holds (image-level multi-hot over the chosen categories: any pixel of a
pixel-level label such as colour or object, and the whole-image labels such as scene). Its centre
slices are saved as a plain 2-D `state_dict` that `mmit-train --inflate-from` turns back into a
video model (`inflate_state_dict`), exactly as it would a torchvision ResNet's.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from broden_actions.broden import BrodenDataset
from mmit_interp.atomic import atomic_write_json
from mmit_interp.metrics import evaluate
from mmit_interp.models import VideoResNet, build_model

log = logging.getLogger("mmit.pretrain")


@dataclass
class PretrainConfig:
    """What a still-image pretraining run depends on (saved beside the weights)."""

    concepts: str
    out: str
    model: str = "i3d_r18"
    model_kwargs: dict = field(default_factory=dict)
    size: int = 64
    epochs: int = 15
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    val_share: float = 0.15
    categories: list[str] | None = None  # concept categories to learn (default: all)
    workers: int = 0
    seed: int = 0
    device: str = "auto"
    progress: bool = True


class ConceptStills(Dataset):
    """Broden images as one-frame clips `(3, 1, H, W)` with image-level multi-hot concept targets.

    Target columns are the labels of the chosen categories (`numbers`, ascending; label 0 means
    "none" in Broden and is dropped). Sets under `cache_bytes` keep their decoded items in memory
    after the first epoch (in-process only).
    """

    def __init__(self, root: str | Path, size: int, categories: list[str] | None = None, cache_bytes: int = 1 << 30):
        self.ds = BrodenDataset(root, size=size, use_snippets=False, categories=categories)
        b = self.ds.broden
        self.numbers = [n for n in sorted(b.labels) if n > 0 and set(b.labels[n].categories) & set(self.ds.categories)]
        self._column = torch.zeros(b.num_labels + 1, dtype=torch.long)  # label number -> column + 1 (0: none)
        self._column[self.numbers] = torch.arange(1, len(self.numbers) + 1)
        fits = len(self.ds) * 4 * (3 * size * size + len(self.numbers)) <= cache_bytes
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = {} if fits else None

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        item = self.ds[i]
        y = torch.zeros(len(self.numbers) + 1)
        for m in item["masks"].values():
            y[self._column[m.long().unique()]] = 1.0
        for labels in item["whole"].values():
            y[self._column[list(labels)]] = 1.0
        out = item["image"][:, None], y[1:]
        if self._cache is not None:
            self._cache[i] = out
        return out


def centre_slices(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The 2-D twin's weights: every 5-D conv kernel's centre temporal slice (other tensors as they are)."""
    return {k: (v[:, :, v.shape[2] // 2].contiguous() if v.dim() == 5 else v.clone()) for k, v in state.items()}


def pretrain_stills(cfg: PretrainConfig) -> dict:
    """Train the 2-D twin of `cfg.model` on `cfg.concepts` and write its 2-D weights to `cfg.out`.

    Returns (and writes to `<out>.json`) the held-out concept metrics per epoch, the label names of
    the head and the time taken. Images are split by index (the last `val_share` held out).
    """
    from tqdm import tqdm

    from mmit_interp.models import set_conv3d_format
    from train.loop import lr_factor, pick_device

    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    data = ConceptStills(cfg.concepts, cfg.size, cfg.categories)
    n_val = max(1, int(round(len(data) * cfg.val_share)))
    if len(data) - n_val < cfg.batch_size:
        raise ValueError(f"{cfg.concepts}: {len(data)} images leave fewer than one batch of {cfg.batch_size} "
                         f"for training after holding out {n_val}")
    train_set = torch.utils.data.Subset(data, range(len(data) - n_val))
    val_set = torch.utils.data.Subset(data, range(len(data) - n_val, len(data)))
    loader = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, drop_last=True, num_workers=cfg.workers,
                        generator=torch.Generator().manual_seed(cfg.seed))
    val_loader = DataLoader(val_set, batch_size=cfg.batch_size, num_workers=cfg.workers)
    model = build_model(cfg.model, len(data.numbers), **cfg.model_kwargs).to(device)
    if not isinstance(model, VideoResNet):
        raise ValueError(f"{cfg.model!r} is not a video trunk; still pretraining needs one (i3d_r18, i3d_r50, ...)")
    set_conv3d_format(model, True)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.epochs * len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, int(0.1 * total), "cosine"))
    history, t0 = [], time.perf_counter()
    for epoch in range(cfg.epochs):
        model.train()
        loss_sum = 0.0
        for x, y in tqdm(loader, desc=f"stills {epoch + 1}/{cfg.epochs}", leave=False, disable=not cfg.progress):
            flip = torch.rand(len(x)) < 0.5
            x = torch.where(flip[:, None, None, None, None], x.flip(-1), x)
            x = x.to(device).contiguous(memory_format=torch.channels_last_3d)
            loss = nn.functional.binary_cross_entropy_with_logits(model(x), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item()
        model.eval()
        with torch.no_grad():
            pairs = [(torch.sigmoid(model(x.to(device).contiguous(memory_format=torch.channels_last_3d))).cpu(), y)
                     for x, y in val_loader]
        m = evaluate(torch.cat([s for s, _ in pairs]).numpy(), torch.cat([y for _, y in pairs]).numpy())
        history.append({"epoch": epoch + 1, "train_loss": loss_sum / len(loader), "map_class": m["map_class"],
                        "map_sample": m["map_sample"]})
        log.info("stills epoch %d/%d  loss %.4f  held-out concept map_class %.3f", epoch + 1, cfg.epochs,
                 loss_sum / len(loader), m["map_class"])
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = centre_slices({k: v.detach().cpu() for k, v in model.state_dict().items()})
    tmp = out.with_name(out.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(out)
    b = data.ds.broden
    summary = {"config": asdict(cfg), "labels": [b.label_name(j) for j in data.numbers],
               "train_images": len(train_set), "val_images": len(val_set), "history": history,
               "seconds": time.perf_counter() - t0}
    atomic_write_json(out.with_name(out.name + ".json"), summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    """`mmit-pretrain`: still-image pretraining of a video trunk's 2-D twin on a Broden concept set."""
    import argparse

    p = argparse.ArgumentParser(prog="mmit-pretrain", description=main.__doc__)
    p.add_argument("--concepts", required=True, help="Broden-format concept set folder (index.csv, label.csv, ...)")
    p.add_argument("--out", required=True, help="2-D weights file to write (then: mmit-train --inflate-from OUT)")
    p.add_argument("--model", default="i3d_r18")
    p.add_argument("--model-kwargs", default="{}", help='JSON keyword arguments, e.g. \'{"width": 8}\'')
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--categories", help="comma-separated concept categories to learn (default: all)")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = PretrainConfig(concepts=args.concepts, out=args.out, model=args.model,
                         model_kwargs=json.loads(args.model_kwargs), size=args.size, epochs=args.epochs,
                         categories=args.categories.split(",") if args.categories else None,
                         batch_size=args.batch_size, lr=args.lr, workers=args.workers, seed=args.seed,
                         device=args.device, progress=not args.no_progress)
    s = pretrain_stills(cfg)
    last = s["history"][-1]
    print(f"{cfg.out}: held-out concept map_class {last['map_class']:.3f} after {cfg.epochs} epochs "
          f"({s['seconds']:.0f} s, {len(s['labels'])} concepts)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
