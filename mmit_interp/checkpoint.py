"""Checkpoints and run directories.

A checkpoint is a plain dict of tensors and JSON-like values that `torch.load(weights_only=True)`
reads, so a run dir from a stranger never executes code. It carries its model recipe, vocabulary,
class weights and input transforms: a run dir is self-describing (docs/CONTRACTS.md).
"""
from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import torch
from torch import nn

from .atomic import atomic_write_bytes
from .models import build_model, set_conv3d_format
from .vocab import Vocabulary

FORMAT = "mmit-interp/1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used as asked; the message names file and model."""


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / torch.compile wrappers."""
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    return getattr(model, "_orig_mod", model)


def save_checkpoint(path: str | Path, model: nn.Module, *, model_name: str, model_kwargs: dict,
                    vocab: Vocabulary, transforms: dict, class_weights: torch.Tensor | None = None,
                    config: dict | None = None, metrics: dict | None = None,
                    train_state: dict | None = None) -> None:
    """Save a self-describing checkpoint atomically."""
    state = {k: v.detach().cpu().contiguous() for k, v in unwrap(model).state_dict().items()}
    ckpt = {
        "format": FORMAT,
        "model": {"name": model_name, "kwargs": dict(model_kwargs)},
        "state_dict": state,
        "vocab": list(vocab.names),
        "class_weights": None if class_weights is None else class_weights.detach().cpu().float(),
        "transforms": dict(transforms),
        "config": dict(config or {}),
        "metrics": dict(metrics or {}),
        "train_state": train_state,
    }
    atomic_write_bytes(Path(path), lambda f: torch.save(ckpt, f))


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run dir's `checkpoints/best.pt` (else `last.pt`)."""
    p = Path(path)
    if p.is_dir():
        for name in ("best.pt", "last.pt"):
            if (p / "checkpoints" / name).is_file():
                return p / "checkpoints" / name
        raise CheckpointError(f"{p}: run dir has no checkpoints/best.pt or last.pt")
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint not found")
    return p


def run_data(path: str | Path, meta: dict) -> str | None:
    """The data set a run reads: its run dir's `config.json` `data` (what the run says now: a shipped or
    moved checkpoint is re-pointed there), else the training config saved in the checkpoint (`meta`)."""
    cfg = Path(path) / "config.json"
    if cfg.is_file():
        data = json.loads(cfg.read_text()).get("data")
        if data:
            return str(data)
    return meta.get("config", {}).get("data")


def read_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint dict safely (`weights_only=True`) and check its format."""
    p = resolve_checkpoint(path)
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{p}: not a readable weights-only checkpoint ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{p}: not an mmit-interp checkpoint (format {ckpt.get('format') if isinstance(ckpt, dict) else type(ckpt).__name__!r}); "
                              "for the authors' released weights use load_authors_state_dict")
    return ckpt


def load_state_checked(model: nn.Module, state: dict[str, torch.Tensor], *, source: str, expected: str) -> None:
    """`load_state_dict(strict=True)` whose error names the checkpoint's model and the target."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    shape = [k for k in set(own) & set(state) if own[k].shape != state[k].shape]
    if missing or extra or shape:
        detail = []
        if missing:
            detail.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if extra:
            detail.append(f"{len(extra)} unexpected keys (e.g. {extra[0]})")
        if shape:
            k = sorted(shape)[0]
            detail.append(f"{len(shape)} shape mismatches (e.g. {k}: checkpoint {tuple(state[k].shape)} "
                          f"vs model {tuple(own[k].shape)})")
        raise CheckpointError(f"{source} holds weights for {expected}, which do not fit the model "
                              f"{type(model).__name__}: {'; '.join(detail)}")
    model.load_state_dict(state, strict=True)


def load_model(path: str | Path, device: str | torch.device = "cpu", expect: str | None = None,
               channels_last: bool = True) -> tuple[nn.Module, dict]:
    """Rebuild the model a checkpoint (or run dir) describes; returns `(model.eval(), meta)`.

    `expect` names the model the caller wants; a checkpoint of another model is an error naming both.
    `channels_last` puts Conv3d weights in NDHWC (`set_conv3d_format`): every analysis runs ~20 % faster.
    """
    ckpt = read_checkpoint(path)
    name, kwargs = ckpt["model"]["name"], ckpt["model"]["kwargs"]
    if expect is not None and expect != name:
        raise CheckpointError(f"{resolve_checkpoint(path)} is a {name!r} checkpoint, not {expect!r}")
    vocab = Vocabulary(ckpt["vocab"])
    model = build_model(name, len(vocab), **kwargs)
    load_state_checked(model, ckpt["state_dict"], source=str(resolve_checkpoint(path)), expected=repr(name))
    meta = {k: v for k, v in ckpt.items() if k not in ("state_dict", "train_state")}
    meta["vocab"] = vocab
    meta["path"] = str(resolve_checkpoint(path))
    meta["sha256"] = file_sha256(resolve_checkpoint(path))
    return set_conv3d_format(model.to(device), channels_last).eval(), meta


_CACHE: dict[tuple, tuple[nn.Module, dict]] = {}
_LOCK = threading.Lock()


def cached_model(run: str | Path) -> tuple[nn.Module, dict]:
    """`load_model(run)` memoised by checkpoint path, size and modification time (one copy per process for
    the dashboard and the analyses, reloaded when the checkpoint changes)."""
    ck = resolve_checkpoint(run)
    st = ck.stat()
    key = (str(ck.resolve()), st.st_size, st.st_mtime_ns)
    with _LOCK:
        if key not in _CACHE:
            for k in [k for k in _CACHE if k[0] == key[0]]:
                del _CACHE[k]
            _CACHE[key] = load_model(ck)
        return _CACHE[key]


def read_state_dict(path: str | Path) -> dict:
    """A state_dict from a local file, read with `weights_only=True`; a `{"state_dict": ...}` or
    `{"model": ...}` wrapper and a DataParallel `module.` prefix are taken off."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: weights file not found")
    try:
        raw = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{p}: not a weights-only state_dict ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    for key in ("state_dict", "model"):
        if isinstance(raw, dict) and isinstance(raw.get(key), dict):
            raw = raw[key]
    if not isinstance(raw, dict) or not raw or not all(torch.is_tensor(v) for v in raw.values()):
        raise CheckpointError(f"{p}: not a state_dict (a dict of tensors)")
    if all(k.startswith("module.") for k in raw):
        raw = {k[len("module."):]: v for k, v in raw.items()}
    return raw


def load_authors_state_dict(model: nn.Module, path: str | Path) -> None:
    """Load the M-MiT authors' released `resnet3d50` weights (`module.` prefix, `last_linear`)."""
    state = {("fc." + k[len("last_linear."):] if k.startswith("last_linear.") else k): v
             for k, v in read_state_dict(path).items()}
    load_state_checked(model, state, source=str(path), expected="the authors' resnet3d50")


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Content hash of a file (cache keys: a retrained checkpoint gets a new key)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
