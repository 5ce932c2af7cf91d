"""Decoded clips kept on disk, so a pipeline that trains and evaluates several models on one data set
decodes each clip once instead of once per epoch and per model.

An entry holds all of a clip's frames at the model's frame size (uint8) or its sound track at one
rate and length, keyed by the file (resolved path, size, modification time) and by those decode
settings: a changed file or setting is a new entry. Sampling then happens on the cached frames
(`video.pick_frames`), so a cached clip gives exactly the frames and indices that decoding it gives
for the same random state: training with or without the cache yields the same weights. Entries
are written atomically (`atomic.atomic_write_bytes`), so concurrent data-loader workers never read
half a file. Clips that fail to decode are not cached; the same `ClipDecodeError` is raised each time.
"""
from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from .atomic import atomic_write_bytes
from .video import decode_all_frames, decode_audio, pick_frames


class ClipCache:
    """Decoded frames and sound tracks under `root` (one `.npz` per clip and setting)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def _entry(self, path: str | os.PathLike, *setting) -> Path:
        p = Path(path).resolve()
        st = p.stat()
        key = json.dumps([str(p), st.st_size, st.st_mtime_ns, *setting])
        h = hashlib.sha256(key.encode()).hexdigest()[:32]
        return self.root / h[:2] / f"{h}.npz"

    def _load_or_make(self, entry: Path, make) -> dict[str, np.ndarray]:
        try:
            with np.load(entry, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):  # absent, or left broken (e.g. a full disk)
            pass
        arrays = make()
        atomic_write_bytes(entry, lambda f: np.savez(f, **arrays))
        return arrays

    def frames(self, path: str | os.PathLike, n_samples: int, size: int | None,
               rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """`decode_frames(path, n_samples, size, rng)`, served from the cached frames of the clip."""
        def make() -> dict[str, np.ndarray]:
            every, reported = decode_all_frames(path, size)
            return {"frames": every, "reported": np.asarray(reported, np.int64)}

        z = self._load_or_make(self._entry(path, "video", size), make)
        return pick_frames(z["frames"], int(z["reported"]), n_samples, rng, path)

    def audio(self, path: str | os.PathLike, rate: int, seconds: float | None) -> np.ndarray | None:
        """`decode_audio(path, rate, seconds)`, served from the cache (`None` for a silent clip)."""
        def make() -> dict[str, np.ndarray]:
            wav = decode_audio(path, rate, seconds)
            return {"wav": np.zeros(0, np.float32) if wav is None else wav, "present": np.asarray(wav is not None)}

        z = self._load_or_make(self._entry(path, "audio", rate, seconds), make)
        return z["wav"] if bool(z["present"]) else None
