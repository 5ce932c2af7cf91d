"""Clip datasets for training and evaluation: decoded frames (N,C,T,H,W) + audio + targets.

A clip that cannot be decoded is dropped from its batch and counted (`n_skipped` in the batch),
or raises in strict mode; a clip without a sound track gets zero audio and `has_audio=False`.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from .annotations import AnnotationSet
from .clip_cache import ClipCache
from .video import AUDIO_RATE, ClipDecodeError, decode_audio, decode_frames

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ClipTransform:
    """How a clip becomes model input (stored in every checkpoint as `transforms`)."""

    frames: int = 16
    size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    audio_rate: int = AUDIO_RATE
    audio_seconds: float = 3.0

    def to_dict(self) -> dict:
        """Plain dict for checkpoints."""
        return {"frames": self.frames, "size": self.size, "mean": list(self.mean), "std": list(self.std),
                "audio_rate": self.audio_rate, "audio_seconds": self.audio_seconds}

    @classmethod
    def from_dict(cls, d: dict) -> "ClipTransform":
        """Inverse of `to_dict`."""
        return cls(int(d["frames"]), int(d["size"]), tuple(d["mean"]), tuple(d["std"]),
                   int(d.get("audio_rate", AUDIO_RATE)), float(d.get("audio_seconds", 3.0)))

    def normalise(self, frames_uint8: np.ndarray) -> torch.Tensor:
        """`(T, H, W, 3) uint8` -> `(3, T, H, W) float32`, normalised by this transform's mean and std."""
        return normalise(frames_uint8, self.mean, self.std)


def normalise(frames_uint8: np.ndarray, mean: Sequence[float] = IMAGENET_MEAN,
              std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """`(T, H, W, 3) uint8` -> `(3, T, H, W) float32`, `(x / 255 - mean) / std`: the one normalisation of
    model input, for clips (`ClipTransform`) and concept images (`BrodenDataset`) alike."""
    x = torch.from_numpy(frames_uint8.astype(np.float32)).div_(255.0)
    x = (x - torch.tensor(mean, dtype=torch.float32)) / torch.tensor(std, dtype=torch.float32)
    return x.permute(3, 0, 1, 2).contiguous()


def load_clip(path, transform: ClipTransform, rng: np.random.Generator | None = None,
              want_audio: bool = True, want_video: bool = True, cache: ClipCache | None = None) -> dict:
    """Decode one clip into model inputs: `video (3,T,H,W)`, `audio (1,L)`, `has_audio`, `frames`
    (the sampled RGB frames) and `frame_indices`; a modality not wanted is left empty. With a `cache`
    the decoded clip is read from (or written to) it, with the same result."""
    if want_video:
        frames, idx = (cache.frames(path, transform.frames, transform.size, rng) if cache is not None
                       else decode_frames(path, transform.frames, transform.size, rng))
    else:
        frames, idx = np.zeros((0, transform.size, transform.size, 3), np.uint8), np.zeros(0, np.int64)
    if not want_audio:
        wav = None
    elif cache is not None:
        wav = cache.audio(path, transform.audio_rate, transform.audio_seconds)
    else:
        wav = decode_audio(path, transform.audio_rate, transform.audio_seconds)
    n_audio = int(round(transform.audio_rate * transform.audio_seconds))
    return {
        "video": transform.normalise(frames) if want_video else torch.zeros(0),
        "audio": torch.from_numpy(wav).view(1, -1) if wav is not None else torch.zeros(1, n_audio),
        "has_audio": wav is not None,
        "frames": frames,
        "frame_indices": idx,
    }


def clip_batch(clip: dict) -> dict[str, torch.Tensor]:
    """A batch of one `load_clip` result, `{video (1,3,T,H,W), audio (1,1,L), has_audio (1,) float}`: the
    dataset batch layout every model's `features` and `forward_batch` read, so callers need not know which."""
    return {"video": clip["video"][None], "audio": clip["audio"][None],
            "has_audio": torch.tensor([float(clip["has_audio"])])}


class ClipDataset(Dataset):
    """Clips of an `AnnotationSet` as dict samples; `train=True` jitters the sampled frames; a `cache`
    decodes each clip once for every epoch and every dataset sharing it."""

    def __init__(self, annotations: AnnotationSet, transform: ClipTransform, *, train: bool = False,
                 audio: bool = True, video: bool = True, strict: bool = False, seed: int = 0,
                 cache: ClipCache | None = None):
        self.ann = annotations
        self.transform = transform
        self.train = train
        self.audio = audio
        self.video = video
        self.strict = strict
        self.seed = seed
        self.cache = cache
        self.epoch = 0
        self.num_classes = len(annotations.vocab)

    def set_epoch(self, epoch: int) -> None:
        """Training jitter depends on (seed, epoch, index): resumable and worker-independent."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.ann)

    def __getitem__(self, i: int) -> dict | None:
        a = self.ann.items[i]
        rng = np.random.default_rng([self.seed, self.epoch, i]) if self.train else None
        try:
            s = load_clip(a.path, self.transform, rng, want_audio=self.audio, want_video=self.video, cache=self.cache)
        except ClipDecodeError as e:
            if self.strict:
                raise
            log.warning("skipping clip (line %d of %s): %s", a.line, self.ann.source, e)
            return None
        target = torch.zeros(self.num_classes)
        target[list(a.labels)] = 1.0
        s.pop("frames")
        s.pop("frame_indices")
        s.update(target=target, index=i, path=str(a.path))
        return s


def collate_clips(samples: list[dict | None]) -> dict:
    """Stack samples, dropping undecodable ones (`n_skipped` counts them)."""
    ok = [s for s in samples if s is not None]
    out: dict = {"n_skipped": len(samples) - len(ok)}
    if not ok:
        return out
    for k in ("video", "audio", "target"):
        out[k] = torch.stack([s[k] for s in ok])
    out["has_audio"] = torch.tensor([s["has_audio"] for s in ok])
    out["index"] = torch.tensor([s["index"] for s in ok])
    out["path"] = [s["path"] for s in ok]
    return out
