"""One readable training loop: train, evaluate, resume; single process or `torchrun` (DDP).

Rank 0 logs and saves; every rank seeds from `seed + rank`; checkpoints (model, optimiser,
scheduler, scaler, RNG, epoch, config) are written atomically at the end of every epoch, so
`--resume` continues from the last finished epoch and reproduces an uninterrupted run.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from mmit_interp.analysis.trunk import check_chain
from mmit_interp.annotations import AnnotationSet, read_mmit
from mmit_interp.atomic import atomic_write_json
from mmit_interp.checkpoint import load_model, load_state_checked, read_checkpoint, save_checkpoint
from mmit_interp.clip_cache import ClipCache
from mmit_interp.dataset import ClipDataset, ClipTransform, collate_clips
from mmit_interp.hooks import capture_activations
from mmit_interp.metrics import evaluate, label_prior_baseline
from mmit_interp.models import VideoResNet, build_model, forward_batch, inflate_from_file, set_conv3d_format
from mmit_interp.vocab import Vocabulary

from .losses import LOSSES, compute_class_weights, map_overlap

log = logging.getLogger("mmit.train")


@dataclass
class TrainConfig:
    """Everything a run depends on; saved as the run dir's `config.json`."""

    data: str
    out: str
    model: str = "i3d_r18"
    model_kwargs: dict = field(default_factory=dict)
    loss: str = "wlsep"
    class_weights: str = "auto"  # auto = min_over_n for wlsep, none otherwise
    frames: int = 8
    size: int = 64
    batch_size: int = 16
    epochs: int = 5
    optimizer: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.5
    schedule: str = "cosine"
    workers: int = 2
    seed: int = 0
    init_from: str | None = None
    inflate_from: str | None = None  # a local 2-D ResNet state_dict (torchvision's, or mmit-pretrain's)
    init_visual: str | None = None
    init_audio: str | None = None
    freeze_trunks: bool = False
    strict: bool = False
    allow_missing: bool = False
    max_train_clips: int | None = None
    max_val_clips: int | None = None
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True  # NDHWC for the 3-D convs: ~1.5x faster steps with oneDNN on CPU
    clip_cache: str | None = None  # folder of decoded clips shared by runs (mmit_interp.clip_cache); same results
    map_separation: float = 0.0  # weight of losses.map_overlap (LSE-head video ResNets); 0 = off
    progress: bool = True

    def resolved_weights(self) -> str:
        """The class-weight scheme actually used."""
        if self.class_weights == "auto":
            return "min_over_n" if self.loss == "wlsep" else "none"
        return self.class_weights


@dataclass
class TrainResult:
    """What `train` returns: the metrics of the best checkpoint (the one analyses load; `epoch` says
    which) and the model as trained to the last epoch (unwrapped)."""

    metrics: dict
    model: nn.Module
    run_dir: Path
    epochs_run: int


def _dist_info() -> tuple[int, int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
    return 0, 1, 0


def _init_distributed(device_type: str) -> bool:
    """Join the process group when launched by torchrun (gloo on CPU, NCCL on GPU)."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) <= 1 or dist.is_initialized():
        return False
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return True


def pick_device(name: str) -> torch.device:
    """`auto` -> CUDA (this rank's GPU) when present, else CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    return torch.device(name)


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Linear warm-up, then cosine decay to 0 (or constant)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    t = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def load_splits(cfg: TrainConfig) -> tuple[Vocabulary, AnnotationSet, AnnotationSet]:
    """The training and validation annotations of `cfg.data` (M-MiT layout)."""
    train = read_mmit(cfg.data, "train", allow_missing=cfg.allow_missing)
    val = read_mmit(cfg.data, "val", vocab=train.vocab, allow_missing=cfg.allow_missing)
    if cfg.max_train_clips:
        train.items = train.items[:cfg.max_train_clips]
    if cfg.max_val_clips:
        val.items = val.items[:cfg.max_val_clips]
    return train.vocab, train, val


def build(cfg: TrainConfig, vocab: Vocabulary) -> nn.Module:
    """The model of `cfg`, inflated from 2-D weights (`--inflate-from`) and/or initialised from
    `--init-from` / fusion trunks when given."""
    model = build_model(cfg.model, len(vocab), **cfg.model_kwargs)
    if cfg.inflate_from:
        if not isinstance(model, VideoResNet):
            raise ValueError(f"--inflate-from needs a video trunk, not {cfg.model!r}")
        inflate_from_file(model, cfg.inflate_from)
    if cfg.init_from:
        _init_from(model, cfg.init_from, vocab)
    parts = model.parts()
    for part, path in (("visual", cfg.init_visual), ("audio", cfg.init_audio)):
        if path:
            if part not in parts:
                raise ValueError(f"--init-{part} needs a model with a {part} trunk; {cfg.model!r} has "
                                 f"{', '.join(sorted(parts)) or 'none'}")
            ck = read_checkpoint(path)
            state = {k: v for k, v in ck["state_dict"].items() if not k.startswith("fc.")}
            load_state_checked(parts[part], state, source=path, expected=repr(ck["model"]["name"]))
    if cfg.map_separation:
        if not (isinstance(model, VideoResNet) and model.head_r > 0):
            raise ValueError(f"map_separation needs a video ResNet with a log-sum-exp head (model_kwargs head_r > 0), "
                             f"not {cfg.model!r} with {cfg.model_kwargs}")
        check_chain(model, torch.zeros(1, 3, cfg.frames, cfg.size, cfg.size))  # the penalty hooks the last block
    if cfg.freeze_trunks:
        if not parts:
            raise ValueError(f"--freeze-trunks needs a model made of trunks (fusion); {cfg.model!r} has none")
        for trunk in parts.values():
            trunk.requires_grad_(False)
    return model


def _init_from(model: nn.Module, path: str, vocab: Vocabulary) -> None:
    """Fine-tuning: copy every trunk weight; the head is copied only if the vocabulary is the same."""
    ck = read_checkpoint(path)
    state = dict(ck["state_dict"])
    if list(ck["vocab"]) != vocab.names:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        state.update({k: v for k, v in model.state_dict().items() if k.startswith("fc.")})
    load_state_checked(model, state, source=path, expected=repr(ck["model"]["name"]))


def _modalities(model: nn.Module) -> tuple[bool, bool]:
    """(needs video, needs audio): what the model reads from a batch (`ModelBase.inputs`)."""
    inputs = getattr(model, "module", model).inputs
    return "video" in inputs, "audio" in inputs


def make_loader(ds: ClipDataset, batch_size: int, workers: int, train: bool, seed: int) -> DataLoader:
    """DataLoader over a (distributed) sampler; undecodable clips are dropped by the collate."""
    rank, world, _ = _dist_info()
    sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=train, seed=seed, drop_last=train)
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      collate_fn=collate_clips, drop_last=train, pin_memory=torch.cuda.is_available(),
                      persistent_workers=False, prefetch_factor=4 if workers > 0 else None)


def _to(batch: dict, device: torch.device, channels_last: bool = False) -> dict:
    out = {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
    if channels_last and "video" in out and out["video"].dim() == 5:
        out["video"] = out["video"].contiguous(memory_format=torch.channels_last_3d)
    return out


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, device: torch.device, amp: bool = False,
            progress: bool = False, channels_last: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Sigmoid scores, targets and dataset indices over a loader (+ the number of skipped clips);
    `channels_last` feeds NDHWC video (for a model whose Conv3d weights are NDHWC)."""
    from tqdm import tqdm

    model.eval()
    scores, targets, index, skipped = [], [], [], 0
    for batch in tqdm(loader, desc="eval", leave=False, disable=not progress):
        skipped += batch["n_skipped"]
        if "target" not in batch:
            continue
        b = _to(batch, device, channels_last)
        with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
            logits = forward_batch(model, b)
        scores.append(torch.sigmoid(logits.float()).cpu().numpy())
        targets.append(batch["target"].numpy())
        index.append(batch["index"].numpy())
    if not scores:
        raise RuntimeError("no clip of the evaluation set could be decoded")
    return np.concatenate(scores), np.concatenate(targets), np.concatenate(index), skipped


def evaluate_model(model: nn.Module, ann: AnnotationSet, transform: ClipTransform,
                   batch_size: int = 16, workers: int = 2, device: torch.device | str = "cpu",
                   progress: bool = False) -> dict:
    """Full metrics (hit@1/5, map_sample, map_class, map_micro, per-class AP) on an annotation set."""
    video, audio = _modalities(model)
    ds = ClipDataset(ann, transform, train=False, video=video, audio=audio)
    loader = DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=collate_clips)
    device = torch.device(device)
    s, y, _, skipped = predict(model.to(device), loader, device, progress=progress)
    m = evaluate(s, y)
    m["n_skipped"] = skipped
    return m


def _rng_state(device: torch.device) -> dict:
    st = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        st["cuda"] = torch.cuda.get_rng_state(device)
    return st


def _set_rng_state(st: dict, device: torch.device) -> None:
    torch.set_rng_state(st["torch"])
    if device.type == "cuda" and "cuda" in st:
        torch.cuda.set_rng_state(st["cuda"], device)


def train(cfg: TrainConfig, resume: bool = False) -> TrainResult:
    """Train `cfg` into the run dir `cfg.out` (evaluating every epoch); `resume` continues a run."""
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    device = pick_device(cfg.device)
    distributed = _init_distributed(device.type)
    rank, world, _ = _dist_info()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    out = Path(cfg.out)
    ckpt_last = out / "checkpoints" / "last.pt"
    if cfg.loss not in LOSSES:
        raise ValueError(f"unknown loss {cfg.loss!r}; choose from {sorted(LOSSES)}")
    if resume and not ckpt_last.is_file():
        raise FileNotFoundError(f"--resume: {ckpt_last} does not exist")
    if not resume and ckpt_last.is_file():
        raise FileExistsError(f"{out} already holds a run; pass --resume to continue it or choose another --out")

    torch.manual_seed(cfg.seed + rank)
    vocab, train_ann, val_ann = load_splits(cfg)
    transform = ClipTransform(frames=cfg.frames, size=cfg.size)
    weights = compute_class_weights(train_ann.targets(), cfg.resolved_weights()).float()
    model = set_conv3d_format(build(cfg, vocab).to(device), cfg.channels_last)
    want_video, want_audio = _modalities(model)
    cache = ClipCache(cfg.clip_cache) if cfg.clip_cache else None
    train_ds = ClipDataset(train_ann, transform, train=True, video=want_video, audio=want_audio,
                           strict=cfg.strict, seed=cfg.seed, cache=cache)
    val_ds = ClipDataset(val_ann, transform, train=False, video=want_video, audio=want_audio, strict=cfg.strict,
                         cache=cache)
    train_loader = make_loader(train_ds, cfg.batch_size, cfg.workers, True, cfg.seed)
    val_loader = DataLoader(val_ds, batch_size=cfg.batch_size, num_workers=cfg.workers, collate_fn=collate_clips)
    if len(train_loader) == 0:
        raise ValueError(f"{len(train_ds)} training clips give no full batch of {cfg.batch_size} per process")

    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay, nesterov=True)
    elif cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r} (sgd, adamw)")
    total = cfg.epochs * len(train_loader)
    warm = int(cfg.warmup_epochs * len(train_loader))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, warm, cfg.schedule))
    use_amp = cfg.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    start_epoch, best, best_epoch = 0, -1.0, 0
    if resume:
        ck = read_checkpoint(ckpt_last)
        load_state_checked(model, ck["state_dict"], source=str(ckpt_last), expected=repr(ck["model"]["name"]))
        ts = ck["train_state"]
        opt.load_state_dict(ts["optimizer"])
        sched.load_state_dict(ts["scheduler"])
        scaler.load_state_dict(ts["scaler"])
        start_epoch, best = int(ts["epoch"]), float(ts["best"])
        best_epoch = int(ts.get("best_epoch", 0))
        _set_rng_state(ts["rng"][rank] if rank < len(ts["rng"]) else ts["rng"][0], device)
    net: nn.Module = model
    last_block = model.trunk().blocks()[-1][0] if cfg.map_separation else ""  # its output is the map the head reads
    if distributed:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    writer = None
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "config.json", {**asdict(cfg), "class_weights_resolved": cfg.resolved_weights(),
                                                "world_size": world})
        vocab.to_file(out / "moments_categories.txt")
        atomic_write_json(out / "class_weights.json", {"scheme": cfg.resolved_weights(),
                                                       "weights": weights.tolist(),
                                                       "train_counts": train_ann.class_counts().tolist()})
        if resume:
            _truncate_metrics(out / "metrics.jsonl", start_epoch)
        writer = SummaryWriter(str(out / "tb"), purge_step=start_epoch * len(train_loader) if resume else None)
        if start_epoch == 0:
            base = label_prior_baseline(train_ann.targets(), val_ann.targets())
            atomic_write_json(out / "baseline.json", {k: v for k, v in base.items() if k != "per_class_ap"})
        log.info("train %d clips, val %d clips, %d classes, model %s, loss %s (class weights: %s), %d process(es), %s",
                 len(train_ann), len(val_ann), len(vocab), cfg.model, cfg.loss, cfg.resolved_weights(), world, device)

    loss_fn = LOSSES[cfg.loss]
    w_dev = weights.to(device)
    metrics: dict = {}
    best_metrics: dict = {}
    epoch = start_epoch
    for epoch in range(start_epoch, cfg.epochs):
        net.train()
        if cfg.freeze_trunks:
            for trunk in model.parts().values():
                trunk.eval()
        train_ds.set_epoch(epoch)
        train_loader.sampler.set_epoch(epoch)
        t0 = time.perf_counter()
        wait = 0.0
        seen = skipped = 0
        loss_sum = torch.zeros((), device=device)
        overlap_sum = torch.zeros((), device=device)
        n_steps = 0
        bar = tqdm(total=len(train_loader), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=rank != 0 or not cfg.progress,
                   dynamic_ncols=True)
        it = iter(train_loader)
        while True:
            tw = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                break
            wait += time.perf_counter() - tw
            skipped += batch["n_skipped"]
            if "target" not in batch:
                bar.update(1)
                continue
            b = _to(batch, device, cfg.channels_last)
            taps = capture_activations(model, [last_block], detach=False) if cfg.map_separation else nullcontext({})
            with taps as acts, torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                logits = forward_batch(net, b)
            loss = loss_fn(logits.float(), b["target"], w_dev)
            if cfg.map_separation:
                maps = torch.einsum("nkp,ck->ncp", acts[last_block].float().flatten(2), model.fc.weight.float())
                overlap = map_overlap(maps, b["target"], model.head_r)
                overlap_sum += overlap.detach()
                loss = loss + cfg.map_separation * overlap
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            loss_sum += loss.detach()
            n_steps += 1
            seen += len(batch["target"])
            if rank == 0:
                el = time.perf_counter() - t0
                bar.set_postfix(loss=f"{loss.item():.4f}", clips_s=f"{seen * world / el:.1f}",
                                wait=f"{100 * wait / el:.0f}%")
                writer.add_scalar("train/loss", loss.item(), epoch * len(train_loader) + n_steps)
                writer.add_scalar("train/lr", sched.get_last_lr()[0], epoch * len(train_loader) + n_steps)
            bar.update(1)
        bar.close()
        elapsed = time.perf_counter() - t0
        epoch_stats = torch.tensor([loss_sum.item(), n_steps, seen, skipped, wait, overlap_sum.item()],
                                   dtype=torch.float64)
        if distributed:
            dist.all_reduce(epoch_stats)
            _average_buffers(model, world)
        train_loss = float(epoch_stats[0] / max(1, epoch_stats[1]))
        if rank == 0:
            s, y, _, vskip = predict(model, val_loader, device, use_amp, cfg.progress, cfg.channels_last)
            metrics = evaluate(s, y)
            record = {"epoch": epoch + 1, "train_loss": train_loss, "lr": sched.get_last_lr()[0],
                      "clips_per_s": float(epoch_stats[2]) / elapsed, "data_wait_share": float(epoch_stats[4]) / world / elapsed,
                      "epoch_seconds": elapsed, "skipped_train": int(epoch_stats[3]), "skipped_val": vskip,
                      **{k: v for k, v in metrics.items() if k != "per_class_ap"}}
            if cfg.map_separation:
                record["map_overlap"] = float(epoch_stats[5] / max(1, epoch_stats[1]))
                writer.add_scalar("train/map_overlap", record["map_overlap"], epoch + 1)
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            for k in ("hit@1", "hit@5", "map_sample", "map_class", "map_micro"):
                writer.add_scalar(f"val/{k}", metrics[k], epoch + 1)
            writer.add_scalar("train/epoch_loss", train_loss, epoch + 1)
            if skipped or vskip:
                log.warning("epoch %d: skipped %d training and %d validation clips that could not be decoded",
                            epoch + 1, int(epoch_stats[3]), vskip)
            log.info("epoch %d/%d  loss %.4f  hit@1 %.3f  hit@5 %.3f  map_sample %.3f  map_class %.3f  "
                     "map_micro %.3f  (%.1f clips/s, data wait %.0f%%)", epoch + 1, cfg.epochs, train_loss,
                     metrics["hit@1"], metrics["hit@5"], metrics["map_sample"], metrics["map_class"],
                     metrics["map_micro"], record["clips_per_s"], 100 * record["data_wait_share"])
            is_best = metrics["map_sample"] > best
            if is_best:
                best, best_epoch, best_metrics = metrics["map_sample"], epoch + 1, metrics
            _save(cfg, model, vocab, transform, weights, metrics, out, epoch + 1, best, best_epoch, opt, sched,
                  scaler, device, world, is_best)
        elif distributed:
            _gather_rng(device, world)
        if distributed:
            dist.barrier()
    epochs_run = cfg.epochs - start_epoch
    if rank == 0:
        if not best_metrics:  # the best epoch was before this resume: evaluate best.pt again
            best_metrics = _evaluate_checkpoint(out / "checkpoints" / "best.pt", val_loader, device, use_amp, cfg)
        metrics = best_metrics
        atomic_write_json(out / "eval.json", {"split": "val", "checkpoint": "best.pt", "epoch": best_epoch,
                                              "selected_by": "map_sample", **metrics})
        writer.close()
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return TrainResult(metrics, set_conv3d_format(model, False), out, epochs_run)


def _average_buffers(model: nn.Module, world: int) -> None:
    """Average BatchNorm running statistics over ranks (each saw only its shard's batches)."""
    for b in model.buffers():
        if b.is_floating_point():
            dist.all_reduce(b)
            b.div_(world)


def _gather_rng(device: torch.device, world: int) -> list:
    """Every rank's RNG state, gathered on rank 0 for the checkpoint (collective: all ranks call)."""
    states = [None] * world
    dist.all_gather_object(states, _rng_state(device))
    return states


def _evaluate_checkpoint(path: Path, loader: DataLoader, device: torch.device, use_amp: bool,
                         cfg: TrainConfig) -> dict:
    """Metrics of a saved checkpoint on `loader` (a resumed run whose best epoch came earlier)."""
    model, _ = load_model(path, device, channels_last=cfg.channels_last)
    return evaluate(*predict(model, loader, device, use_amp, cfg.progress, cfg.channels_last)[:2])


def _save(cfg: TrainConfig, model: nn.Module, vocab: Vocabulary, transform: ClipTransform, weights: torch.Tensor,
          metrics: dict, out: Path, epoch: int, best: float, best_epoch: int, opt, sched, scaler,
          device: torch.device, world: int, is_best: bool) -> None:
    rngs = _gather_rng(device, world) if world > 1 else [_rng_state(device)]
    state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
             "epoch": epoch, "best": best, "best_epoch": best_epoch, "rng": rngs}
    kw = dict(model_name=cfg.model, model_kwargs=cfg.model_kwargs, vocab=vocab, transforms=transform.to_dict(),
              class_weights=weights, config=asdict(cfg),
              metrics={k: v for k, v in metrics.items() if k != "per_class_ap"})
    save_checkpoint(out / "checkpoints" / "last.pt", model, train_state=state, **kw)
    if is_best:
        save_checkpoint(out / "checkpoints" / "best.pt", model, train_state=None, **kw)


def _truncate_metrics(path: Path, epochs_done: int) -> None:
    """Drop metric lines of epochs after the checkpoint we resume from (they will be redone)."""
    if not path.is_file():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["epoch"] <= epochs_done]
    path.write_text("".join(ln + "\n" for ln in keep))


def evaluate_run(run_dir: str | Path, data: str | None = None, split: str = "val", batch_size: int = 16,
                 workers: int = 2, device: str = "auto", progress: bool = True) -> dict:
    """Evaluate a run dir's best checkpoint on a split of its data set (or another M-MiT folder)."""
    from mmit_interp.checkpoint import load_model, run_data

    run_dir = Path(run_dir)
    model, meta = load_model(run_dir)
    data = data or run_data(run_dir, meta)
    if not data:
        raise ValueError(f"{run_dir}: the run names no data set; pass data=")
    ann = read_mmit(data, split, vocab=meta["vocab"])
    m = evaluate_model(model, ann, ClipTransform.from_dict(meta["transforms"]),
                       batch_size, workers, pick_device(device), progress)
    atomic_write_json(run_dir / f"eval_{split}.json", {"split": split, "data": str(data), **m})
    return m


def summarize(m: dict[str, Any]) -> str:
    """One line with every named metric (never a bare 'mAP')."""
    return (f"hit@1 {m['hit@1']:.4f}  hit@5 {m['hit@5']:.4f}  map_sample {m['map_sample']:.4f}  "
            f"map_class {m['map_class']:.4f} ({m.get('map_class_skipped', 0)} classes without positives skipped)  "
            f"map_micro {m['map_micro']:.4f}")
