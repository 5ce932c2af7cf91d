"""Clip decoding: frames with OpenCV (sequential decode, keep the sampled frames), audio with PyAV.

PERF-NOTES: seeking is 2-7x slower than decoding straight through on real clips, so frames are
read in order and only the sampled ones are kept.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

AUDIO_RATE = 22050
SOUNDNET_SCALE = 256.0  # SoundNet takes raw waveforms with amplitudes in [-256, 256]


class ClipDecodeError(RuntimeError):
    """A clip that cannot be decoded (corrupt, truncated, not a video)."""


@dataclass(frozen=True)
class ClipInfo:
    """What a container says about a clip."""

    n_frames: int
    fps: float
    width: int
    height: int
    has_audio: bool
    duration: float


def sample_indices(n_frames: int, n_samples: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """`n_samples` indices evenly spread over `n_frames`: segment centres, or a random frame of
    each segment when `rng` is given (training jitter)."""
    if n_frames <= 0:
        raise ValueError("clip has no frames")
    edges = np.linspace(0, n_frames, n_samples + 1)
    if rng is None:
        idx = (edges[:-1] + edges[1:]) / 2
    else:
        idx = edges[:-1] + rng.random(n_samples) * (edges[1:] - edges[:-1])
    return np.clip(np.floor(idx).astype(np.int64), 0, n_frames - 1)


def probe(path: str | Path) -> ClipInfo:
    """Frame count, fps, size and whether an audio stream exists (PyAV reads the container)."""
    import av

    try:
        with av.open(str(path)) as c:
            vs = [s for s in c.streams if s.type == "video"]
            has_audio = any(s.type == "audio" for s in c.streams)
            if not vs:
                raise ClipDecodeError(f"{path}: no video stream")
            v = vs[0]
            fps = float(v.average_rate or v.guessed_rate or 0) or 25.0
            dur = float(c.duration / 1e6) if c.duration else (float(v.duration * v.time_base) if v.duration else 0.0)
            n = v.frames or int(round(dur * fps))
            return ClipInfo(int(n), fps, v.codec_context.width, v.codec_context.height, has_audio, dur)
    except ClipDecodeError:
        raise
    except Exception as e:  # PyAV raises many error types for broken files
        raise ClipDecodeError(f"{path}: cannot open ({type(e).__name__}: {e})") from None


def decode_frames(path: str | Path, n_samples: int, size: int | tuple[int, int] | None = None,
                  rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Decode `n_samples` evenly spread RGB frames `(T, H, W, 3) uint8`, resized to `size`
    (no crop) when given; returns the frames and the frame indices they came from."""
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise ClipDecodeError(f"{path}: OpenCV cannot open it")
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        frames: list[np.ndarray] = []
        if n > 0:
            want = sample_indices(n, n_samples, rng)
            frames, n_read = _read_wanted(cap, want)
            if len(frames) < n_samples and n_read > 0:  # container over-reported its length
                cap.release()
                cap = cv2.VideoCapture(str(path))
                want = sample_indices(n_read, n_samples, rng)
                frames, _ = _read_wanted(cap, want)
        else:
            every = _read_all(cap)
            if every:
                want = sample_indices(len(every), n_samples, rng)
                frames = [every[i] for i in want]
        if len(frames) < n_samples:
            raise ClipDecodeError(f"{path}: no decodable frames")
    finally:
        cap.release()
    out = np.stack([_prep(f, size) for f in frames])
    return out, want


def decode_all_frames(path: str | Path, size: int | tuple[int, int] | None = None) -> tuple[np.ndarray, int]:
    """Every decodable RGB frame `(F, H, W, 3) uint8` (resized as `decode_frames` does) and the frame
    count the container reports: what `pick_frames` needs to give `decode_frames`' samples later."""
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise ClipDecodeError(f"{path}: OpenCV cannot open it")
        reported = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        frames = [_prep(f, size) for f in _read_all(cap)]
    finally:
        cap.release()
    if not frames:
        raise ClipDecodeError(f"{path}: no decodable frames")
    return np.stack(frames), reported


def pick_frames(every: np.ndarray, reported: int, n_samples: int, rng: np.random.Generator | None = None,
                path: str | Path = "") -> tuple[np.ndarray, np.ndarray]:
    """From all of a clip's frames (`decode_all_frames`), the `n_samples` frames and indices that
    `decode_frames` returns for the same `rng` state (same draws, same fallback when the container
    over-reports its length)."""
    n = len(every)
    want = sample_indices(reported if reported > 0 else n, n_samples, rng)
    if reported > 0 and want.max() >= n:  # container over-reported its length: resample what exists
        want = sample_indices(n, n_samples, rng)
    if want.max() >= n:
        raise ClipDecodeError(f"{path}: no decodable frames")
    return every[want], want


def frame_times(path: str | Path) -> Iterator[float]:
    """Decode every frame with the analysis decoder (`decode_frames`'s OpenCV), yielding each frame's
    time in seconds; upload validation walks it so a clip it accepts is one analysis can read."""
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise ClipDecodeError(f"{path}: OpenCV cannot open it")
        while cap.grab():
            yield cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
    finally:
        cap.release()


def _read_all(cap: "cv2.VideoCapture") -> list[np.ndarray]:
    """Every frame left in the capture, BGR, in order."""
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            return frames
        frames.append(f)


def _read_wanted(cap: "cv2.VideoCapture", want: np.ndarray) -> tuple[list[np.ndarray], int]:
    frames, i, last = [], 0, int(want.max())
    counts = np.bincount(want, minlength=last + 1)
    while i <= last:
        ok, f = cap.read()
        if not ok:
            break
        frames.extend([f] * int(counts[i]))
        i += 1
    return frames, i


def _prep(frame_bgr: np.ndarray, size: int | tuple[int, int] | None) -> np.ndarray:
    rgb = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
    return rgb if size is None else resize_frame(rgb, size)


def resize_frame(rgb: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """A frame `(H0, W0, 3)` resized to `size` as decoding does: area averaging down, linear up, untouched
    when it already fits (also what the synthetic probes use, so a probe equals its decoded clip)."""
    h, w = (size, size) if isinstance(size, int) else size
    if rgb.shape[:2] == (h, w):
        return rgb
    interp = cv2.INTER_AREA if rgb.shape[0] > h else cv2.INTER_LINEAR
    return cv2.resize(rgb, (w, h), interpolation=interp)


def decode_audio(path: str | Path, rate: int = AUDIO_RATE, seconds: float | None = None) -> np.ndarray | None:
    """The clip's sound track as mono float32 at `rate`, scaled to SoundNet's [-256, 256];
    padded/trimmed to `seconds` when given. `None` when the clip has no audio stream."""
    import av

    try:
        with av.open(str(path)) as c:
            streams = [s for s in c.streams if s.type == "audio"]
            if not streams:
                return None
            res = av.AudioResampler(format="flt", layout="mono", rate=rate)
            chunks = []
            for frame in c.decode(streams[0]):
                for rf in res.resample(frame):
                    chunks.append(rf.to_ndarray().reshape(-1))
            for rf in res.resample(None):
                chunks.append(rf.to_ndarray().reshape(-1))
    except Exception as e:
        raise ClipDecodeError(f"{path}: audio cannot be decoded ({type(e).__name__}: {e})") from None
    wav = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if seconds is not None:
        n = int(round(seconds * rate))
        wav = wav[:n] if len(wav) >= n else np.pad(wav, (0, n - len(wav)))
    return np.clip(wav, -1.0, 1.0) * SOUNDNET_SCALE
