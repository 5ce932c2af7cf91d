"""Layer discovery for ``--list-layers``; capture itself is ``mmit_interp.hooks.capture_activations``."""

from __future__ import annotations

import torch
from torch import nn


def list_layers(model: nn.Module, example: torch.Tensor | tuple) -> list[tuple[str, str, tuple[int, ...] | None]]:
    """Run one forward pass and return ``(module path, type name, output shape)`` for every module."""
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    for name, mod in model.named_modules():
        if not name:
            continue

        def hook(_m, _i, out, name=name):
            if torch.is_tensor(out):
                shapes[name] = tuple(out.shape)

        handles.append(mod.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(*example) if isinstance(example, tuple) else model(example)
    finally:
        for h in handles:
            h.remove()
    return [(n, type(m).__name__, shapes.get(n)) for n, m in model.named_modules() if n]
