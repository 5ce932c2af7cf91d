"""Inflate 2-D ResNet weights (a local torchvision state_dict file) into a 3-D ResNet.

Each 2-D kernel `(O, I, kh, kw)` is repeated over the target's temporal size `kt` and divided by
`kt`, so a static clip gives the 2-D network's activations (Carreira & Zisserman 2017).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def inflate_state_dict(model: nn.Module, state_2d: dict[str, torch.Tensor], skip_head: bool = True) -> list[str]:
    """Copy `state_2d` into `model`, inflating conv kernels; returns the 3-D keys left untouched."""
    target = model.state_dict()
    used, out = set(), {}
    for k, v in state_2d.items():
        if skip_head and k.startswith("fc."):
            continue
        if k not in target:
            raise KeyError(f"2-D weight {k!r} has no counterpart in {type(model).__name__}")
        t = target[k]
        if v.dim() == 4 and t.dim() == 5:
            kt = t.shape[2]
            v = v.unsqueeze(2).repeat(1, 1, kt, 1, 1) / kt
        if v.shape != t.shape:
            raise ValueError(f"{k}: 2-D shape {tuple(v.shape)} cannot inflate to {tuple(t.shape)}")
        out[k] = v.to(t.dtype)
        used.add(k)
    model.load_state_dict(out, strict=False)
    return sorted(set(target) - used)


def inflate_from_file(model: nn.Module, path: str | Path) -> list[str]:
    """Inflate from a torchvision ResNet state_dict saved with `torch.save` (read safely)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: 2-D weights file not found (no downloads at run time; "
                                "save torchvision's resnet50 state_dict there first)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    return inflate_state_dict(model, state)
